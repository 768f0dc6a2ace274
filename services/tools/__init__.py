"""Tools that compose the services: ``platformd`` runs them, ``platformctl`` talks to them.

They are not services: they own no schema and consume no events, and they may import
any service (the boundary test allows it here only)."""
