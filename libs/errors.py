"""Errors whose message is safe to show to users and to put into events.

Anything else (driver errors, git output, HTTP client errors) may carry hosts, DSNs or
credentials, so it is reported by type only (:func:`public_message`).
"""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    """An expected failure with a message written for the user.

    ``code`` follows the RPC convention (validation, not_found, conflict, forbidden,
    unauthorized, unavailable) and maps to an HTTP status at the gateway.
    """

    code = "internal"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(PlatformError):
    code = "validation"


class NotFound(PlatformError):
    code = "not_found"


class Conflict(PlatformError):
    code = "conflict"


class Forbidden(PlatformError):
    code = "forbidden"


class Unauthorized(PlatformError):
    code = "unauthorized"


class Unavailable(PlatformError):
    code = "unavailable"


def public_message(exc: BaseException) -> str:
    """A description of ``exc`` that never leaks infrastructure details."""
    if isinstance(exc, PlatformError):
        return exc.message
    return f"internal error ({type(exc).__name__})"
