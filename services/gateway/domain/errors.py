"""HTTP errors of the gateway and how service error codes map onto statuses.

Every error leaves the gateway as an RFC 9457 problem (``application/problem+json``) that
also carries the members clients read before problems existed:
``{"error": <message>, "code": <code>, "details": ..., "type", "title", "status",
"detail", "instance"}``. A problem's ``type`` names its ``code`` (:data:`PROBLEM_TYPES`),
so ``type`` and ``title`` stay the same whenever that code occurs, whatever the status.
Messages of ``internal`` errors are replaced by a generic one: whatever went wrong inside
a service may mention hosts, DSNs or file paths, and none of that belongs in a response.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

# How many seconds a client should wait before retrying when a service is not answering.
RETRY_AFTER_SECONDS = 5

GENERIC_INTERNAL_MESSAGE = "internal error"

# RPC error codes (contracts.rpc.ErrorCode) -> HTTP status.
STATUS_BY_CODE: dict[str, int] = {
    "validation": 422,
    "not_found": 404,
    "conflict": 409,
    "forbidden": 403,
    "unauthorized": 401,
    "unavailable": 503,
    "internal": 500,
    # The service answered, but its answer cannot cross the bus: the upstream's reply is
    # unusable (502), not a service that is down (503) nor a bug to hide (500). Retrying the
    # same call gets the same answer; a smaller page does not.
    "reply_too_large": 502,
}

# A problem's ``type``: this prefix and its code, a URI reference relative to the API's
# base URL. It identifies the problem; the codes are described in the API documentation.
PROBLEM_TYPES = "/problems/"

# A short summary of each code for people (the problem's ``title``).
TITLE_BY_CODE: dict[str, str] = {
    "validation": "Invalid request",
    "not_found": "Not found",
    "conflict": "Conflict with the current state",
    "forbidden": "Not allowed",
    "unauthorized": "Not authenticated",
    "unavailable": "Temporarily unavailable",
    "internal": "Internal error",
    "reply_too_large": "Reply too large to send",
    "method_not_allowed": "Method not allowed",
    "timeout": "Request body not received in time",
    "payload_too_large": "Request body too large",
    "unsupported_media_type": "Unsupported media type",
    "rate_limited": "Too many requests",
}

# HTTP status -> code, for errors raised by the web framework itself (routing, parameters).
CODE_BY_STATUS: dict[int, str] = {
    400: "validation",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation",
    429: "rate_limited",
    503: "unavailable",
}


class HttpError(Exception):
    """An error response: status, machine-readable code, user-facing message, details, headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPES + self.code

    @property
    def title(self) -> str:
        return TITLE_BY_CODE.get(self.code) or HTTPStatus(self.status).phrase


class BadRequest(HttpError):
    """The request itself is malformed (unparsable body, wrong shape): 400 ``validation``."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(400, "validation", message, details)


class Unauthenticated(HttpError):
    """No usable credentials: 401 with a ``WWW-Authenticate`` challenge (RFC 6750)."""

    def __init__(self, message: str, *, token_presented: bool) -> None:
        # Only a presented-but-bad token gets error="invalid_token"; a missing one gets the
        # bare challenge, as RFC 6750 section 3.1 asks.
        challenge = 'Bearer error="invalid_token"' if token_presented else "Bearer"
        super().__init__(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})

    @classmethod
    def no_credentials(cls) -> Unauthenticated:
        return cls("missing bearer token (send 'Authorization: Bearer <token>')", token_presented=False)


class PermissionDenied(HttpError):
    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(403, "forbidden", message, details)


def from_service_error(code: str, message: str, details: Any = None) -> HttpError:
    """Translate a service's error reply; unknown codes are treated as internal errors."""
    status = STATUS_BY_CODE.get(code, 500)
    if status == 500:
        return HttpError(500, "internal", GENERIC_INTERNAL_MESSAGE)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    return HttpError(status, code, message, details, headers)


def from_framework_status(status: int, message: str, details: Any = None) -> HttpError:
    """Translate an error raised by the web framework (unknown route, bad parameter)."""
    if status >= 500 and status != 503:
        return HttpError(500, "internal", GENERIC_INTERNAL_MESSAGE)
    code = CODE_BY_STATUS.get(status, "bad_request")
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return HttpError(status, code, message, details, headers)


class RateLimited(HttpError):
    """Over a rate limit: 429 with ``Retry-After`` (whole seconds, rounded up) and the limit
    in ``details``, so a client knows both when to retry and how fast it may go."""

    def __init__(self, message: str, *, limit: str, per_minute: int, retry_after_seconds: float) -> None:
        retry_after = max(1, math.ceil(retry_after_seconds))
        super().__init__(
            429,
            "rate_limited",
            f"{message}; retry in {retry_after} s",
            details={"limit": limit, "per_minute": per_minute, "retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
