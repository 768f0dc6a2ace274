"""Errors whose message is safe to show to users and to put into events.

Anything else (driver errors, git output, HTTP client errors) may carry hosts, DSNs or
credentials, so it is reported by type only (:func:`public_message`).

Validation names every failing field at once: :class:`FieldError` is one item of a
:class:`ValidationFailed`'s details, :func:`json_type` the wording for a value of the wrong type.
Public inputs are pydantic models (:mod:`contracts.inputs`): :func:`field_errors_from` turns a
``pydantic.ValidationError`` into those details (wire names, messages for people) and
:func:`validation_failed` into the error itself; the gateway and the services use the same
two functions, so a body gets the same answer on either side of the bus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic_core import ErrorDetails

from contracts.inputs import UNION_MEMBER_TAGS


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


def validation_failed(exc: pydantic.ValidationError) -> ValidationFailed:
    """``exc`` as the API's validation error: ``invalid <what>: <fields>`` with every field
    in ``details`` (``what`` is the model's title, e.g. "environment request")."""
    errors = field_errors_from(exc)
    fields = ", ".join(dict.fromkeys(error.field for error in errors))
    return ValidationFailed(f"invalid {exc.title}: {fields}", details=[e.as_dict() for e in errors])


def field_errors_from(exc: pydantic.ValidationError) -> list[FieldError]:
    """One :class:`FieldError` per failure pydantic found, in its order.

    Field paths use wire names (pydantic reports aliases) joined the way the API always
    named them: ``labels.tier``, ``rules[0].hours``, ``limit_range.max.cpu``. A failing dict
    key is reported at the entry it names, and a tagged union member's field without the tag
    pydantic puts before it (``rules[0].max_ttl_hours.hours`` is ``rules[0].hours``).
    """
    return [FieldError(_field_path(error), _message(error)) for error in exc.errors(include_url=False)]


def _field_path(error: ErrorDetails) -> str:
    path = ""
    after_index = False
    for part in error["loc"]:
        if part == "[key]" or (after_index and part in UNION_MEMBER_TAGS):
            continue
        after_index = isinstance(part, int)
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        path = f"{path}.{discriminator}" if path else discriminator
    return path or "body"


ECHO_MAX_LENGTH = 64


def echoed(value: Any) -> str:
    """A client's value quoted in a message, cut to :data:`ECHO_MAX_LENGTH` characters: enough
    to recognise it, never a megabyte of it back in the answer and the logs."""
    text = repr(str(value))
    return text if len(text) <= ECHO_MAX_LENGTH else f"{text[: ECHO_MAX_LENGTH - 4]}...'"


def _ctx(error: ErrorDetails, name: str) -> Any:
    return error.get("ctx", {}).get(name)


def _number(bound: Any) -> str:
    """A bound as people write it: 0 rather than 0.0, 1,000,000,000 rather than 1000000000.0."""
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    return f"{bound:,}" if isinstance(bound, int) and abs(bound) >= 10_000 else str(bound)


def _tags(error: ErrorDetails) -> str:
    """pydantic's ``"'a', 'b'"`` as people list names: ``a, b``."""
    return ", ".join(tag.strip().strip("'") for tag in str(_ctx(error, "expected_tags")).split(","))


def _items(count: Any) -> str:
    return "1 item" if count == 1 else f"{count} items"


# pydantic's error type -> what a person reads; the rest keep pydantic's own message.
_MESSAGES: Mapping[str, Callable[[ErrorDetails], str]] = {
    "missing": lambda e: "is required",
    "extra_forbidden": lambda e: "unknown field",
    "string_type": lambda e: f"must be a string, not {json_type(e['input'])}",
    "int_type": lambda e: (
        "must be a whole number"
        if isinstance(e["input"], float)
        else f"must be a whole number, not {json_type(e['input'])}"
    ),
    "float_type": lambda e: "must be a number",
    "finite_number": lambda e: "must be a finite number",
    "bool_type": lambda e: f"must be true or false, not {json_type(e['input'])}",
    "dict_type": lambda e: f"must be an object, not {json_type(e['input'])}",
    "model_type": lambda e: f"must be an object, not {json_type(e['input'])}",
    "model_attributes_type": lambda e: f"must be an object, not {json_type(e['input'])}",
    "list_type": lambda e: f"must be an array, not {json_type(e['input'])}",
    "greater_than_equal": lambda e: f"must be at least {_number(_ctx(e, 'ge'))}",
    "less_than_equal": lambda e: f"must be at most {_number(_ctx(e, 'le'))}",
    "greater_than": lambda e: f"must be greater than {_number(_ctx(e, 'gt'))}",
    "less_than": lambda e: f"must be less than {_number(_ctx(e, 'lt'))}",
    "string_too_short": lambda e: (
        "must not be empty"
        if _ctx(e, "min_length") == 1
        else f"must be at least {_ctx(e, 'min_length')} characters"
    ),
    "string_too_long": lambda e: f"must be at most {_ctx(e, 'max_length')} characters",
    "too_short": lambda e: (
        "must not be empty"
        if _ctx(e, "min_length") == 1
        else f"must have at least {_items(_ctx(e, 'min_length'))}"
    ),
    "too_long": lambda e: f"must have at most {_items(_ctx(e, 'max_length'))}",
    "literal_error": lambda e: f"must be {_ctx(e, 'expected')}",
    "union_tag_invalid": lambda e: f"unknown type {echoed(_ctx(e, 'tag'))} (known: {_tags(e)})",
    "union_tag_not_found": lambda e: "is required",
    "string_pattern_mismatch": lambda e: "has an invalid format",
    # Raised by the models' own validators: the message is already the rule, for people.
    "value_error": lambda e: str(_ctx(e, "error")),
}


def _message(error: ErrorDetails) -> str:
    explain = _MESSAGES.get(error["type"])
    return explain(error) if explain is not None else error["msg"]


class NotFound(PlatformError):
    code = "not_found"


class Conflict(PlatformError):
    code = "conflict"


class ConcurrentChange(Conflict):
    """Someone else changed the record between our read and our write (optimistic concurrency).

    A caller sees a conflict to retry; a consumer retries it like an outage, since the next
    attempt reads the new version: with several replicas projecting one request's events this
    is routine, and must not use up the attempts meant for errors retrying cannot fix.
    """

    transient = True


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
# server shutting down) and PoolTimeout, nats-py's timeouts and connection errors.
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

# Postgres says what went wrong in its SQLSTATE, which decides before the error's class does:
# psycopg files a statement the server can never run (54xxx: too many columns or arguments)
# and a wrong password (28xxx) under OperationalError, like a lost connection. Retrying these
# for an hour only delays the dead letter. Classes: 22 data exception, 23 integrity
# violation, 28 invalid authorization, 2F SQL routine exception, 38 external routine
# exception, 39 external routine invocation exception, 42 syntax error or undefined object,
# 54 program limit exceeded.
_PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "28", "2F", "38", "39", "42", "54"})
# What a later attempt can get past: 08 connection exception, 53 insufficient resources (disk
# full, too many connections), 40001 serialization failure and 40P01 deadlock (the other
# transaction won; running again succeeds), 57P01-57P03 (the server is shutting down,
# restarting after a crash, or not accepting connections yet).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53"})
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})
# Of those, the ones that say the database itself is away (not merely busy or contended).
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def _sqlstate(exc: BaseException) -> str | None:
    """The Postgres SQLSTATE a psycopg error carries (None for a connection that failed client-side)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) and len(sqlstate) == 5 else None


def _sqlstate_transient(sqlstate: str) -> bool | None:
    """What ``sqlstate`` says about retrying: True, False, or None (the error's class decides)."""
    if sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
        return True
    if sqlstate[:2] in _PERMANENT_SQLSTATE_CLASSES:
        return False
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying later can fix ``exc``: an explicit ``transient`` attribute decides,
    then a Postgres error's SQLSTATE (see above), else network errors (``OSError``, which
    includes ``ConnectionError``), timeouts and the drivers' connection errors count as
    transient, and everything else does not."""
    explicit = getattr(exc, "transient", None)
    if isinstance(explicit, bool):
        return explicit
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        verdict = _sqlstate_transient(sqlstate)
        if verdict is not None:
            return verdict
    if isinstance(exc, OSError | TimeoutError):
        return True
    return any(cls.__name__ in _TRANSIENT_TYPE_NAMES for cls in type(exc).__mro__)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the service's Postgres is away:
    no connection could be had from the pool, a connection failed or was lost (no SQLSTATE,
    or class 08), or the server is shutting down or starting (57P01-57P03).

    A consumer stops fetching while this is so: every delivery it took would only fail too.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names = {cls.__name__ for cls in type(error).__mro__}
        if "PoolTimeout" in names:
            return True
        if "OperationalError" in names:
            sqlstate = _sqlstate(error)
            if sqlstate is None or sqlstate[:2] == "08" or sqlstate in _UNAVAILABLE_SQLSTATES:
                return True
        error = error.__cause__ or error.__context__
    return False
