"""platformctl: the command-line client of the platform HTTP API."""
