"""The served OpenAPI document (``/schema``): every status an operation answers, with its real body.

Each route lists its error statuses through :func:`error_responses`, which always adds the
ones every API route can answer (400 for a bad parameter, 401, 403, 503), all with the
problem body (``application/problem+json``: ``error``, ``code``, ``details`` and the RFC 9457
members); Litestar's own default error schema never appears. Headers that come with a status wherever it occurs (``Retry-After`` on
503, ``WWW-Authenticate`` on 401) are added to the built document by
:func:`document_error_headers`, once for all operations; likewise the ``ETag`` of the
tagged reads (:mod:`.conditional`) by :func:`document_etags`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard, cast

from litestar import get
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
    Tag,
)

from services.gateway.domain.resources import ErrorBody
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.api_reference import SelfHostedSwaggerRenderPlugin
from services.gateway.entrypoints.authentication import CHANGING_METHODS, SECURITY, SECURITY_SCHEME, requires
from services.gateway.entrypoints.errors import PROBLEM_JSON

SCHEMA_PATH = "/schema"

ERROR_DESCRIPTIONS = {
    400: "Malformed request: unparsable or non-object body, invalid parameter; details name each one",
    401: "Missing, malformed, expired or unverifiable bearer token",
    403: "The caller's role or teams do not allow this",
    404: "No such resource (or not visible to the caller's teams)",
    408: "The request body was not received in time",
    409: "Conflicting state (an illegal transition, a stale If-Match, a reused Idempotency-Key)",
    422: "Well-formed but invalid; details name every failing field",
    429: "Over the caller's (or, on a create, the team's) rate limit; retry after Retry-After seconds",
    502: "The service's answer was too large to send over the bus; ask for a smaller page",
    503: "A service or the identity provider is not answering; retry after Retry-After seconds",
}
# What any /v1 route may answer: a bad parameter (any route: control characters), the
# token refused or not allowed, a service or the deadline giving up.
API_ERRORS = (400, 401, 403, 503)
# Statuses of every route that reads a JSON body, besides API_ERRORS.
BODY_ERRORS = (408, 422)

_TEXT = Schema(type=OpenAPIType.STRING)
ERROR_HEADERS: dict[str, dict[str, OpenAPIHeader]] = {
    "401": {
        "WWW-Authenticate": OpenAPIHeader(
            schema=_TEXT, required=True, description='`Bearer`, or `Bearer error="invalid_token"`'
        )
    },
    "503": {
        "Retry-After": OpenAPIHeader(
            schema=Schema(type=OpenAPIType.INTEGER), required=True, description="Seconds to wait"
        )
    },
}
ERROR_HEADERS["429"] = ERROR_HEADERS["503"]
CHANGING_OPERATIONS = sorted(method.lower() for method in CHANGING_METHODS)


ETAG_HEADER = OpenAPIHeader(
    schema=_TEXT,
    required=True,
    description="Strong entity tag of the representation; send it back in `If-None-Match`",
)
NOT_MODIFIED = ResponseSpec(
    data_container=None, description="The representation `If-None-Match` names is current: no body"
)


def error_spec(status: int) -> ResponseSpec:
    """The problem answered with ``status``."""
    return ResponseSpec(
        data_container=ErrorBody,
        description=ERROR_DESCRIPTIONS[status],
        generate_examples=False,
        media_type=PROBLEM_JSON,
    )


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The error responses of an API route: :data:`API_ERRORS` plus ``statuses``."""
    return {status: error_spec(status) for status in sorted({*API_ERRORS, *statuses})}


def answers(status: int, body: Any, description: str, *errors: int) -> dict[int, ResponseSpec]:
    """A route's responses: its success ``status`` with ``body``, then :func:`error_responses`."""
    return {
        status: ResponseSpec(data_container=body, description=description, generate_examples=False),
        **error_responses(*errors),
    }


def tagged_answers(body: Any, description: str, *errors: int) -> dict[int, ResponseSpec]:
    """A tagged read's responses (:mod:`.conditional`): ``200`` with ``body``, ``304``, the errors."""
    return {**answers(200, body, description, *errors), 304: NOT_MODIFIED}


def any_role_get(path: str, *, tag: str, summary: str) -> get:
    """A ``GET`` outside any controller that every role may call: bearer scheme documented
    (hence required), the read guard, the API errors."""
    return get(
        path,
        tags=[tag],
        summary=summary,
        guards=[requires(Action.READ)],
        security=SECURITY,
        responses=error_responses(),
    )


def documented(
    *, body: RequestBody | None = None, headers: dict[str, dict[str, str]] | None = None
) -> type[Operation]:
    """An operation class documenting what Litestar cannot infer: the JSON ``body`` a handler
    reads itself, and response ``headers`` as ``{status: {name: description}}`` (Litestar's
    ``response_headers`` reach the default status only)."""

    @dataclass
    class DocumentedOperation(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = body
            for status, named in (headers or {}).items():
                response = cast(OpenAPIResponse, (self.responses or {})[status])
                response.headers = {
                    **(response.headers or {}),
                    **{name: OpenAPIHeader(schema=_TEXT, description=text) for name, text in named.items()},
                }

    return DocumentedOperation


def document_error_headers(document: OpenAPI) -> None:
    """Add :data:`ERROR_HEADERS` to every error response of that status (not to a 503 of
    ``/readyz``, say, whose body is the readiness report and which carries no Retry-After)."""
    for path_item in (document.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation: Operation | None = getattr(path_item, method)
            for status, response in ((operation.responses or {}) if operation else {}).items():
                if status in ERROR_HEADERS and _is_error_body(response):
                    response.headers = {**(response.headers or {}), **ERROR_HEADERS[status]}


def document_rate_limits(document: OpenAPI) -> None:
    """A ``429`` on every authenticated operation that changes something: each counts against
    the caller's rate limit. Added to the built document (like the other shared headers)
    rather than to each route, so a new route cannot forget it."""
    for path_item in (document.paths or {}).values():
        for method in CHANGING_OPERATIONS:
            operation: Operation | None = getattr(path_item, method)
            responses = (operation.responses or {}) if operation else {}
            refused = responses.get("401")
            if _is_error_body(refused):
                responses["429"] = OpenAPIResponse(
                    description=ERROR_DESCRIPTIONS[429],
                    content=refused.content,
                    headers={**ERROR_HEADERS["429"]},
                )


def document_etags(document: OpenAPI) -> None:
    """``ETag`` on the ``200`` and ``304`` of every ``GET`` that answers ``304`` (the tagged reads)."""
    for path_item in (document.paths or {}).values():
        responses = (path_item.get.responses or {}) if path_item.get else {}
        if "304" in responses:
            for status in ("200", "304"):
                response = responses[status]
                if isinstance(response, OpenAPIResponse):
                    response.headers = {**(response.headers or {}), "ETag": ETAG_HEADER}


def _is_error_body(response: object) -> TypeGuard[OpenAPIResponse]:
    if not isinstance(response, OpenAPIResponse) or not response.content:
        return False
    media = response.content.get(PROBLEM_JSON)
    schema = media.schema if media else None
    return isinstance(schema, Reference) and schema.ref.endswith(f"/{ErrorBody.__name__}")


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="platform-control-plane API",
        version="1.0.0",
        description=(
            "Environment requests (create, list, follow, approve, reject, reconcile, extend, delete), "
            "classes, the event feed, dead letters and the caller's identity. Every `/v1` route but "
            "`GET /v1/auth/config` (how to sign in) needs `Authorization: Bearer <JWT>`; errors are "
            "RFC 9457 problems (`application/problem+json`: `type`, `title`, `status`, `detail`, "
            "`instance`) that also carry `{error, code, details}`, with 400/422 validation "
            "(details name every failing field), 401 unauthenticated or bad approval signature, 403 "
            "wrong role or team, 404 unknown (or another team's request), 409 illegal transition, "
            "503 a service not answering (with Retry-After)."
        ),
        path=SCHEMA_PATH,
        # Swagger UI's assets come from the gateway itself, never from a CDN (air-gapped clusters).
        render_plugins=[SelfHostedSwaggerRenderPlugin(SCHEMA_PATH), YamlRenderPlugin()],
        use_handler_docstrings=True,
        components=Components(
            security_schemes={
                SECURITY_SCHEME: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description=(
                        "A JWT: from the OIDC provider (PLATFORM_OIDC_ISSUER_URL; RS/ES/PS algorithms it "
                        "advertises, `aud` = PLATFORM_OIDC_AUDIENCE) or, in development, HS256/384/512 with "
                        "PLATFORM_JWT_HS256_SECRET. `exp` is required. Claims (names configurable): role "
                        "(string or list; the most privileged valid one wins), email (actor, falling back "
                        "to sub), teams (list; scopes the caller to those teams)."
                    ),
                )
            }
        ),
        tags=[
            Tag(name="environment requests", description="Ask for, list and follow environments"),
            Tag(name="environment classes", description="The golden-path classes"),
            Tag(name="identity", description="Who the server thinks you are"),
            Tag(name="events", description="The timelines of all visible requests, as a feed"),
            Tag(
                name="operations",
                description="Health, readiness and metrics (no auth); the platform's status (any role)",
            ),
        ],
    )
