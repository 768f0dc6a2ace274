"""The pure rules of the gateway: who may do what, how token claims become a caller, error statuses."""
