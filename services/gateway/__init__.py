"""The HTTP front door: authenticates callers, authorizes them by role, forwards to the services over NATS."""
