"""Errors whose message is safe to show to users and to put into events.

Anything else (driver errors, git output, HTTP client errors) may carry hosts, DSNs or
credentials, so it is reported by type only (:func:`public_message`).

Validation names every failing field at once: :class:`FieldError` is one item of a
:class:`ValidationFailed`'s details, :func:`json_type` the wording for a value of the wrong type.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class FieldError:
    """One failing field of a :class:`ValidationFailed`; its ``details`` are a list of
    :meth:`as_dict`, so a client sees every problem of a body in one answer."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def json_type(value: Any) -> str:
    """What a decoded JSON value is, for messages such as "must be a string, not a number"."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


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


# -- what retrying can fix -------------------------------------------------------------------
# A consumer retries a failed event for a long time (PLATFORM_RECONCILE_RETRY_FOR_SECONDS)
# only when the failure says a dependency was unreachable; anything else fails after the
# usual few quick attempts, so a bad manifest does not sit in retries for an hour.


class TransientError(Unavailable):
    """A dependency could not be reached or asked to try later; the same call may succeed then.

    Adapters raise it (or set ``transient = True`` on their own error class) for network
    errors, timeouts, 5xx answers and the like, never for a refusal that retrying cannot change.
    """

    transient = True


# Driver errors that mean "the other side is not there right now", recognised by type name so
# that this module stays free of driver imports: psycopg's OperationalError (connection lost,
# server shutting down, serialization failures) and PoolTimeout, nats-py's timeouts and
# connection errors.
_TRANSIENT_TYPE_NAMES = frozenset(
    {
        "OperationalError",
        "PoolTimeout",
        "NoServersError",
        "ConnectionClosedError",
        "StaleConnectionError",
        "NoRespondersError",
        "ServiceUnavailableError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later can fix ``exc``: an explicit ``transient`` attribute decides,
    else network errors (``OSError``, which includes ``ConnectionError``), timeouts and the
    drivers' connection errors count as transient, and everything else does not."""
    explicit = getattr(exc, "transient", None)
    if isinstance(explicit, bool):
        return explicit
    if isinstance(exc, OSError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSIENT_TYPE_NAMES for cls in type(exc).__mro__)
