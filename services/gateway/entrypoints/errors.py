"""Every error leaves the gateway as an RFC 9457 problem that keeps ``{"error", "code",
"details"}``, whoever raised it.

The exception handlers cover what a handler, a guard, a service reply or Litestar itself
raises; :func:`send_error` covers the middleware that answers before any handler runs
(authentication, the response deadline). Both build the body with :func:`error_body`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap, Scope, Send

from libs.errors import PlatformError
from services.gateway.domain.errors import (
    GENERIC_INTERNAL_MESSAGE,
    HttpError,
    from_framework_status,
    from_service_error,
)
from services.gateway.domain.resources import ErrorBody
from services.gateway.domain.text import has_control_characters

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


# Problems one answer lists at most: a body of 5,000 unknown keys is refused just as well
# by naming 20 of them, and its answer stays a few kilobytes instead of hundreds.
MAX_LISTED_PROBLEMS = 20
# Longest field name repeated back (a key of 60,000 characters is named by its start).
MAX_FIELD_NAME_LENGTH = 64


def _short(name: Any) -> Any:
    if isinstance(name, str) and len(name) > MAX_FIELD_NAME_LENGTH:
        return name[: MAX_FIELD_NAME_LENGTH - 3] + "..."
    return name


def listed(message: str, details: Any) -> tuple[str, Any]:
    """``message`` and ``details`` with at most :data:`MAX_LISTED_PROBLEMS` problems and every
    field name cut to :data:`MAX_FIELD_NAME_LENGTH`; the message ("invalid <what>: <fields>")
    then names the listed fields and says how many more there are."""
    if not isinstance(details, list) or not all(isinstance(item, dict) for item in details):
        return message, details
    shown = [{**item, "field": _short(item["field"])} if "field" in item else item for item in details]
    hidden = len(shown) - MAX_LISTED_PROBLEMS
    if hidden <= 0 and shown == details:
        return message, details
    shown = shown[:MAX_LISTED_PROBLEMS]
    what, colon, listing = message.partition(": ")
    if colon and listing.startswith(str(details[0].get("field"))):  # "invalid <what>: <fields>"
        message = f"{what}: " + ", ".join(dict.fromkeys(str(item.get("field")) for item in shown))
    if hidden > 0:
        message += f" and {hidden} more (the first {MAX_LISTED_PROBLEMS} problems are listed)"
    return message, shown


def error_body(error: HttpError, scope: Scope) -> ErrorBody:
    """``error`` as a problem about the request of ``scope`` (its path is the ``instance``)."""
    message, details = listed(error.message, error.details)
    return ErrorBody(
        error=message,
        code=error.code,
        details=details,
        type=error.problem_type,
        title=error.title,
        status=error.status,
        detail=message,
        # Percent-encoded again: the ASGI path is decoded, ``instance`` is a URI reference.
        instance=quote(scope.get("root_path", "") + scope["path"], safe="/:@!$&'()*+,;="),
    )


def error_response(error: HttpError, request: Request[Any, Any, Any]) -> Response[ErrorBody]:
    return Response(
        error_body(error, request.scope),
        status_code=error.status,
        headers=error.headers or None,
        media_type=PROBLEM_JSON,
    )


async def send_error(scope: Scope, send: Send, error: HttpError) -> None:
    """Answer with ``error`` straight on the ASGI channel (middleware, before any handler)."""
    body = msgspec.json.encode(error_body(error, scope))
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def reject_control_characters(request: Request[Any, Any, Any]) -> None:
    """No path or query value may carry control characters (``domain.text``).

    Checked once here, for every route, so each parameter's own validation can assume
    printable text; the failing parameter is named like any other validation error.
    """
    failing = [
        {"field": name, "message": "must not contain control characters"}
        for name, value in [*request.path_params.items(), *request.query_params.multi_items()]
        if isinstance(value, str) and has_control_characters(value)
    ]
    if failing:
        raise HttpError(
            400, "validation", "invalid parameters: " + ", ".join(f["field"] for f in failing), failing
        )


def handle_http_error(request: Request[Any, Any, Any], exc: HttpError) -> Response[ErrorBody]:
    return error_response(exc, request)


def handle_service_error(request: Request[Any, Any, Any], exc: PlatformError) -> Response[ErrorBody]:
    # RpcError carries the service's code on the instance, libs.errors classes on the class.
    error = from_service_error(exc.code, exc.message, exc.details)
    if error.status == 500:
        log.error(
            "a service reported an internal error",
            extra={"fields": {"route": request.scope.get("path_template"), "error_type": type(exc).__name__}},
        )
    return error_response(error, request)


def _wire_name(request: Request[Any, Any, Any], key: Any) -> Any:
    """The parameter's name as the client sent it (``Idempotency-Key``, ``class``), not the
    handler argument's (``idempotency_key``, ``class_name``)."""
    try:
        parameter = request.route_handler.parsed_fn_signature.parameters.get(key)
    except Exception:  # no route matched: nothing to translate
        return key
    alias = getattr(getattr(parameter, "kwarg_definition", None), "name", None)
    return alias if isinstance(alias, str) and alias else key


# What Litestar (msgspec) says of a parameter it cannot convert -> what a person reads.
_TYPE_WORDS = {
    "int": "must be a whole number",
    "float": "must be a number",
    "bool": "must be true or false",
    "str": "must be text",
}
_PARAMETER_MESSAGES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"Expected `(\w+)`, got `\w+`"), lambda m: _TYPE_WORDS.get(m[1], f"must be of type {m[1]}")),
    (re.compile(r"Expected `\w+` >= (\S+)"), lambda m: f"must be at least {m[1]}"),
    (re.compile(r"Expected `\w+` <= (\S+)"), lambda m: f"must be at most {m[1]}"),
    (re.compile(r"Expected `\w+` > (\S+)"), lambda m: f"must be greater than {m[1]}"),
    (re.compile(r"Expected `\w+` < (\S+)"), lambda m: f"must be less than {m[1]}"),
    (re.compile(r"Expected `str` of length >= (\d+)"), lambda m: f"must be at least {m[1]} characters"),
    (re.compile(r"Expected `str` of length <= (\d+)"), lambda m: f"must be at most {m[1]} characters"),
    (re.compile(r"Invalid enum value (.*)"), lambda m: f"unknown value {m[1]}"),
    # The pattern itself is in the API reference; "after", the one such parameter, says what it takes.
    (re.compile(r"Expected `str` matching regex"), lambda m: "is not in the form this parameter takes"),
    (re.compile(r"Missing required"), lambda m: "is required"),
]


def parameter_message(message: Any) -> Any:
    """Litestar's wording for a path, query or header value it refused (``Expected `int`,
    got `str```), as the API words the same problems in a body (``must be a whole number``)."""
    if not isinstance(message, str):
        return message
    for pattern, explain in _PARAMETER_MESSAGES:
        match = pattern.match(message)
        if match:
            return explain(match)
    return message


def handle_framework_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    details: Any = None
    message = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        details = [
            {
                "field": _wire_name(request, item.get("key")),
                "message": parameter_message(item.get("message")),
                "source": item.get("source"),
            }
            for item in exc.extra
            if isinstance(item, dict)
        ]
        fields = ", ".join(str(item["field"]) for item in details if item["field"])
        message = f"invalid request parameters: {fields}" if fields else "invalid request"
    elif exc.status_code == 404:
        message = "not found"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed here"
    error = from_framework_status(exc.status_code, message, details)
    if error.status == 500:
        log.error("request failed", extra={"fields": {"error_type": type(exc).__name__}})
    else:
        # Keep framework headers such as Allow on a 405.
        error.headers = {**(exc.headers or {}), **error.headers}
    return error_response(error, request)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    # The type only: messages and tracebacks of arbitrary exceptions may quote hosts or DSNs.
    log.error(
        "unhandled error",
        extra={"fields": {"route": request.scope.get("path_template"), "error_type": type(exc).__name__}},
    )
    return error_response(HttpError(500, "internal", GENERIC_INTERNAL_MESSAGE), request)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HttpError: handle_http_error,
    PlatformError: handle_service_error,
    HTTPException: handle_framework_error,
    Exception: handle_unexpected,
}
