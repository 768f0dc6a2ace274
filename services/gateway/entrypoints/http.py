"""The HTTP API (SPEC.md "HTTP API"): Litestar controllers, auth guards, error handlers, OpenAPI.

Handlers stay thin: authenticate and authorize in a guard, turn the HTTP request into a
``contracts.rpc`` message, call the owning service, and return its reply. Every error,
whether raised here, replied by a service, or raised by Litestar itself, leaves as
``{"error", "code", "details"}`` (see :mod:`services.gateway.domain.errors`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
    Tag,
)
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap, Guard
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts.models import EnvironmentClass, EnvironmentRequestView
from contracts.rpc import CreateRequest, DeleteRequest, ExtendRequest, GetRequest, ListRequests
from libs.errors import PlatformError, json_type
from libs.ops_server import ReadinessCheck, run_checks
from libs.telemetry import REGISTRY
from services.gateway.adapters.services import Services
from services.gateway.adapters.tokens import Authenticator
from services.gateway.domain.claims import Principal
from services.gateway.domain.errors import (
    GENERIC_INTERNAL_MESSAGE,
    BadRequest,
    HttpError,
    PermissionDenied,
    from_framework_status,
    from_service_error,
)
from services.gateway.domain.resources import (
    ClassList,
    ErrorBody,
    Health,
    Readiness,
    RequestPage,
    Timeline,
    WhoAmI,
)
from services.gateway.domain.roles import ACTION_PHRASES, Action, allowed_roles, is_allowed, lacks_team_scope
from services.gateway.entrypoints.api_reference import SelfHostedSwaggerRenderPlugin
from services.gateway.service_layer.health import GatewayHealth
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

SECURITY_SCHEME = "BearerAuth"
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
IDEMPOTENCY_KEY_MAX_LENGTH = 200
SCHEMA_PATH = "/schema"


# -- runtime -----------------------------------------------------------------------------------


@dataclass
class GatewayRuntime:
    """What the handlers need; ``services`` is attached once NATS is connected (app start-up)."""

    settings: GatewaySettings
    authenticator: Authenticator
    health: GatewayHealth
    services: Services | None = None

    def require_services(self) -> Services:
        if self.services is None:
            # Only reachable between process start and the lifespan connecting NATS.
            raise HttpError(503, "unavailable", "the gateway is starting", headers={"Retry-After": "1"})
        return self.services

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        """This process can do its own job: its NATS connection, nothing else. The backends
        and the identity provider are reported by ``GET /v1/status`` instead: one of them
        down must not take every gateway replica out of its Service (reads, creates and
        approvals keep working while, say, the git remote is unreachable)."""
        services = self.services

        async def not_connected() -> None:
            raise ConnectionError("not connected")

        return {"nats": services.check_nats if services else not_connected}


def runtime_of(connection: ASGIConnection[Any, Any, Any, Any]) -> GatewayRuntime:
    return cast(GatewayRuntime, connection.app.state.runtime)


# -- auth --------------------------------------------------------------------------------------


def requires(action: Action, *, team_scoped: bool = False) -> Guard:
    """Guard: a valid bearer token whose role may perform ``action``; stores the caller.

    ``team_scoped`` routes (everything about environment requests) also refuse non-admin
    tokens without a teams claim when team scoping is enforced. The owning service then
    limits the caller to the teams in its token.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        runtime = runtime_of(connection)
        principal = await runtime.authenticator.authenticate(connection.headers.get("authorization"))
        if not is_allowed(principal.role, action):
            allowed = [role.value for role in allowed_roles(action)]
            raise PermissionDenied(
                f"the {principal.role.value} role cannot {ACTION_PHRASES[action]} "
                f"(allowed: {', '.join(allowed)})",
                details={"role": principal.role.value, "allowed_roles": allowed},
            )
        if team_scoped and lacks_team_scope(
            principal.role, principal.teams, enforced=runtime.settings.team_scope_enforced
        ):
            claim_name = runtime.settings.teams_claim
            raise PermissionDenied(
                f"team scoping is enforced and the token has no {claim_name!r} claim",
                details={"claim": claim_name},
            )
        connection.state.principal = principal

    return guard


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    principal = request.state.get("principal")
    if not isinstance(principal, Principal):
        # A route that injects the caller without a guard is a programming error; fail closed.
        raise HttpError(500, "internal", GENERIC_INTERNAL_MESSAGE)
    return principal


async def provide_services(request: Request[Any, Any, Any]) -> Services:
    return runtime_of(request).require_services()


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    descriptions = {
        400: "Malformed request: unparsable or non-object body, invalid parameter",
        401: "Missing, malformed, expired or unverifiable bearer token",
        403: "The caller's role or teams do not allow this",
        404: "No such resource (or not visible to the caller's teams)",
        409: "Conflicting state (e.g. an Idempotency-Key reused with a different body)",
        422: "Well-formed but invalid; details name every failing field",
        503: "A service is not answering; retry after Retry-After seconds",
    }
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=descriptions[status], generate_examples=False
        )
        for status in statuses
    }


# -- operations --------------------------------------------------------------------------------


@get(
    "/healthz",
    tags=["operations"],
    summary="Liveness",
    sync_to_thread=False,
    responses={503: ResponseSpec(data_container=Health, description="Wedged", generate_examples=False)},
)
def healthz(request: Request[Any, Any, Any]) -> Response[Health]:
    """The process is not wedged: its event loop turns, its NATS client has not given up for
    good, its dependency checks run. Nothing outside the process is checked (a NATS outage
    or a backend down never restarts the gateway); 503 names each failing part."""
    failing = runtime_of(request).health.liveness_problems()
    if failing:
        return Response(Health(status="unhealthy", failing=failing), status_code=503)
    return Response(Health(status="ok"))


@get(
    "/readyz",
    tags=["operations"],
    summary="Readiness",
    responses={503: ResponseSpec(data_container=Readiness, description="Not ready", generate_examples=False)},
)
async def readyz(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """NATS is connected and answers. Nothing else: the backends and the identity provider
    are reported by ``GET /v1/status``. No side effects; the text names each check, never
    hosts or addresses."""
    runtime = runtime_of(request)
    ready, checks = await run_checks(
        runtime.readiness_checks(), timeout=runtime.settings.readiness_timeout_seconds
    )
    return Response(
        Readiness(status="ready" if ready else "not_ready", checks=checks), status_code=200 if ready else 503
    )


@get("/metrics", tags=["operations"], summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics() -> Response[bytes]:
    """Prometheus text exposition of this process's registry."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


# -- API ---------------------------------------------------------------------------------------


@get(
    "/v1/whoami",
    tags=["identity"],
    summary="The caller as resolved by the server",
    guards=[requires(Action.READ)],
    security=SECURITY,
    responses=error_responses(401, 403),
)
async def whoami(principal: NamedDependency[Principal]) -> WhoAmI:
    """The actor, role, teams and subject the server derived from the bearer token."""
    return WhoAmI(
        actor=principal.actor, role=principal.role.value, teams=principal.teams, subject=principal.subject
    )


class EnvironmentClassesController(Controller):
    path = "/v1/environment-classes"
    tags = ["environment classes"]
    security = SECURITY
    guards = [requires(Action.READ)]

    @get("/", summary="List environment classes", responses=error_responses(401, 403, 503))
    async def list_classes(self, services: NamedDependency[Services]) -> ClassList:
        """Every class, sorted by name."""
        return await services.list_classes()

    @get("/{name:str}", summary="Get an environment class", responses=error_responses(401, 403, 404, 503))
    async def get_class(self, services: NamedDependency[Services], name: FromPath[str]) -> EnvironmentClass:
        return await services.get_class(name)


@dataclass
class CreateRequestOperation(Operation):
    """Documents the JSON body the create handler reads itself (it parses the body by hand to
    name the exact problem of a malformed one)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=request_input_schema())},
            required=True,
            description="The environment request. Unknown fields are refused.",
        )


@dataclass
class ExtendRequestOperation(Operation):
    """Documents the PATCH body (read by hand, like the create body)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            content={
                "application/json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        title="EnvironmentRequestExtension",
                        required=["ttl_hours"],
                        additional_properties=False,
                        properties={
                            "ttl_hours": Schema(
                                type=OpenAPIType.INTEGER,
                                minimum=1,
                                description="New TTL: 1 to the class's max_ttl_hours, counted from now",
                            )
                        },
                        examples=[{"ttl_hours": 48}],
                    )
                )
            },
            required=True,
        )


def request_input_schema() -> Schema:
    dns_label = "DNS-1123 label: lowercase alphanumerics and '-', at most 40 characters"
    return Schema(
        type=OpenAPIType.OBJECT,
        title="EnvironmentRequestInput",
        required=["app", "team", "class", "region", "ttl_hours", "owner", "repository"],
        additional_properties=False,
        properties={
            "app": Schema(type=OpenAPIType.STRING, max_length=40, description=dns_label),
            "team": Schema(type=OpenAPIType.STRING, max_length=40, description=dns_label),
            "class": Schema(type=OpenAPIType.STRING, description="An environment class name"),
            "region": Schema(type=OpenAPIType.STRING, description="One of the class's allowed regions"),
            "ttl_hours": Schema(
                type=OpenAPIType.INTEGER, minimum=1, description="1 to the class's max_ttl_hours"
            ),
            "owner": Schema(type=OpenAPIType.STRING, description="Who is responsible for the environment"),
            "repository": Schema(type=OpenAPIType.STRING, description="An https:// or ssh git URL"),
            "revision": Schema(
                type=OpenAPIType.STRING, default="main", description="A git branch, tag or commit"
            ),
            "labels": Schema(
                type=OpenAPIType.OBJECT,
                additional_properties=Schema(type=OpenAPIType.STRING),
                description="Kubernetes labels (key/value syntax, bounded count and size)",
            ),
        },
        examples=[
            {
                "app": "payments-api",
                "team": "payments",
                "class": "preview",
                "region": "us-east-1",
                "ttl_hours": 24,
                "owner": "alice@example.com",
                "repository": "https://github.com/example/payments-api.git",
                "revision": "pr-42",
                "labels": {"pr": "42"},
            }
        ],
    )


async def read_json_object(request: Request[Any, Any, Any], settings: GatewaySettings) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong with it."""
    try:
        # uvicorn has no body read deadline; a client trickling bytes would hold the handler.
        async with asyncio.timeout(settings.http_read_timeout_seconds):
            raw = await request.body()
    except RequestEntityTooLarge:
        raise BadRequest(
            f"the request body is larger than {settings.max_body_bytes} bytes",
            details=[{"field": "body", "message": f"must be at most {settings.max_body_bytes} bytes"}],
        ) from None
    except TimeoutError:
        raise HttpError(408, "timeout", "the request body was not received in time") from None
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object", details=_body_problem("is empty"))
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        # Thousands of nested brackets fit in a small body; msgspec gives up on the depth.
        raise BadRequest(
            "the request body is nested too deeply", details=_body_problem("is nested too deeply")
        ) from None
    except ValueError as exc:  # msgspec.DecodeError/ValidationError (e.g. 1e400), invalid UTF-8
        raise BadRequest(
            f"the request body is not valid JSON ({exc})", details=_body_problem("is not valid JSON")
        ) from None
    if not isinstance(value, dict):
        problem = f"must be a JSON object, not {json_type(value)}"
        raise BadRequest(f"the request body {problem}", details=_body_problem(problem))
    return value


def _body_problem(message: str) -> list[dict[str, str]]:
    return [{"field": "body", "message": message}]


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: "3"`` (or ``3``, ``W/"3"``) -> 3: the version the caller last read."""
    if value is None or not value.strip():
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise BadRequest(
            'If-Match must be the request\'s version (e.g. "3")',
            details=[{"field": "If-Match", "message": "must be a request version number"}],
        )
    return int(text)


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Apply only if the request's `version` is still this one (else 409)",
        max_length=32,
    ),
]


class EnvironmentRequestsController(Controller):
    path = "/v1/environment-requests"
    tags = ["environment requests"]
    security = SECURITY

    @post(
        "/",
        summary="Create an environment request",
        guards=[requires(Action.CREATE_REQUEST, team_scoped=True)],
        status_code=201,
        operation_class=CreateRequestOperation,
        responses={
            201: ResponseSpec(
                data_container=EnvironmentRequestView, description="Created", generate_examples=False
            ),
            200: ResponseSpec(
                data_container=EnvironmentRequestView,
                description=(
                    "Idempotent replay (header `Idempotent-Replayed: true`): the request first created "
                    "with this Idempotency-Key; or, with `dry_run=true`, the plan (nothing stored)"
                ),
                generate_examples=False,
            ),
            **error_responses(400, 401, 403, 409, 422, 503),
        },
    )
    async def create_request(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        dry_run: Annotated[
            bool,
            QueryParameter(description="Return the plan (decision, quota, packs, cost) and store nothing"),
        ] = False,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
                description="Retries with the same key (and body) return the first request, not a new one",
            ),
        ] = None,
    ) -> Response[Any]:
        """Validate and store a new request; its status then moves on asynchronously."""
        settings = runtime_of(request).settings
        body = await read_json_object(request, settings)
        command = CreateRequest(
            body=body, actor=principal.to_actor(), idempotency_key=idempotency_key or None, dry_run=dry_run
        )
        if dry_run:
            return Response(await services.create_request_dry_run(command), status_code=200)
        outcome = await services.create_request(command)
        if outcome.created:
            return Response(
                outcome.request,
                status_code=201,
                headers={"Location": f"{self.path}/{outcome.request.id}"},
            )
        return Response(outcome.request, status_code=200, headers={"Idempotent-Replayed": "true"})

    @get(
        "/",
        summary="List environment requests",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def list_requests(
        self,
        *,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        team: Annotated[str | None, QueryParameter(description="Only this team's requests")] = None,
        status: Annotated[str | None, QueryParameter(description="Only requests in this status")] = None,
        class_name: Annotated[str | None, QueryParameter(name="class", description="Only this class")] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
        limit: Annotated[int, QueryParameter(description="Page size (1-200)")] = 50,
    ) -> RequestPage:
        """Newest first, one page at a time; callers with a teams claim see only their teams."""
        return await services.list_requests(
            ListRequests(
                actor=principal.to_actor(),
                team=team,
                status=status,
                class_name=class_name,
                cursor=cursor,
                limit=limit,
            )
        )

    @get(
        "/{request_id:str}",
        summary="Get an environment request",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(401, 403, 404, 503),
    )
    async def get_request(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
    ) -> EnvironmentRequestView:
        return await services.get_request(GetRequest(id=request_id, actor=principal.to_actor()))

    @get(
        "/{request_id:str}/events",
        summary="The request's timeline",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(401, 403, 404, 503),
    )
    async def list_events(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
    ) -> Timeline:
        """Every event about the request in order, including late or duplicate ones that did not
        change its status (``applied: false``). Attestation signatures are shown to approvers
        and admins only."""
        return await services.list_events(GetRequest(id=request_id, actor=principal.to_actor()))

    # PATCH and DELETE live here, beside GET on the same path: Litestar wants one controller
    # per path. Approve, reject and reconcile are in http_lifecycle.

    @patch(
        "/{request_id:str}",
        summary="Extend an environment request (change ttl_hours)",
        guards=[requires(Action.EXTEND_REQUEST, team_scoped=True)],
        operation_class=ExtendRequestOperation,
        responses=error_responses(400, 401, 403, 404, 409, 422, 503),
    )
    async def extend_request(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> EnvironmentRequestView:
        """Body `{"ttl_hours": N}` with 1 <= N <= the class's max_ttl_hours. Once the environment
        exists, `expires_at` becomes now + N hours. Requesters: own teams only."""
        body = await read_json_object(request, runtime_of(request).settings)
        return await services.extend(
            ExtendRequest(
                id=request_id,
                actor=principal.to_actor(),
                body=body,
                expected_version=parse_if_match(if_match),
            )
        )

    @delete(
        "/{request_id:str}",
        summary="Delete an environment request (tear it down)",
        guards=[requires(Action.DELETE_REQUEST, team_scoped=True)],
        status_code=202,
        responses={
            202: ResponseSpec(
                data_container=EnvironmentRequestView,
                description="Teardown requested: status `deleting`, then `deleted`",
                generate_examples=False,
            ),
            **error_responses(400, 401, 403, 404, 409, 503),
        },
    )
    async def delete_request(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[EnvironmentRequestView]:
        """Moves the request to `deleting` and asks for the teardown (manifests removed from the
        GitOps repository, namespace deleted); it ends `deleted`. 409 when already being torn
        down. Requesters: own teams only."""
        view = await services.delete(
            DeleteRequest(
                id=request_id, actor=principal.to_actor(), expected_version=parse_if_match(if_match)
            )
        )
        return Response(view, status_code=202)


def route_handlers(settings: GatewaySettings) -> list[ControllerRouterHandler]:
    # Imported here: those modules build on the guards and helpers of this one.
    from services.gateway.entrypoints.http_catalog import CATALOG_ROUTES
    from services.gateway.entrypoints.http_lifecycle import RequestActionsController
    from services.gateway.entrypoints.http_operations import DeadLettersController, EventsController, status

    handlers: list[ControllerRouterHandler] = [
        healthz,
        readyz,
        whoami,
        status,
        EnvironmentRequestsController,
        RequestActionsController,
        EventsController,
        DeadLettersController,
        *CATALOG_ROUTES,
    ]
    if settings.prometheus_enabled:
        handlers.append(metrics)
    return handlers


DEPENDENCIES = {"principal": Provide(provide_principal), "services": Provide(provide_services)}


def initial_state(runtime: GatewayRuntime) -> State:
    return State({"runtime": runtime})


# -- errors ------------------------------------------------------------------------------------


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


async def reject_control_characters(request: Request[Any, Any, Any]) -> None:
    """No path or query value may carry control characters (a NUL cannot even be stored).

    Checked once here, for every route, so each parameter's own validation can assume
    printable text; the failing parameter is named like any other validation error.
    """
    failing = [
        {"field": name, "message": "must not contain control characters"}
        for name, value in [*request.path_params.items(), *request.query_params.multi_items()]
        if isinstance(value, str) and _CONTROL_CHARACTERS.search(value)
    ]
    if failing:
        raise HttpError(
            400, "validation", "invalid parameters: " + ", ".join(f["field"] for f in failing), failing
        )


def error_response(error: HttpError) -> Response[ErrorBody]:
    return Response(
        ErrorBody(error=error.message, code=error.code, details=error.details),
        status_code=error.status,
        headers=error.headers or None,
    )


def handle_http_error(_: Request[Any, Any, Any], exc: HttpError) -> Response[ErrorBody]:
    return error_response(exc)


def handle_service_error(request: Request[Any, Any, Any], exc: PlatformError) -> Response[ErrorBody]:
    # RpcError carries the service's code on the instance, libs.errors classes on the class.
    error = from_service_error(exc.code, exc.message, exc.details)
    if error.status == 500:
        log.error(
            "a service reported an internal error",
            extra={"fields": {"route": request.scope.get("path_template"), "error_type": type(exc).__name__}},
        )
    return error_response(error)


def _wire_name(request: Request[Any, Any, Any], key: Any) -> Any:
    """The parameter's name as the client sent it (``Idempotency-Key``, ``class``), not the
    handler argument's (``idempotency_key``, ``class_name``)."""
    try:
        parameter = request.route_handler.parsed_fn_signature.parameters.get(key)
    except Exception:  # no route matched: nothing to translate
        return key
    alias = getattr(getattr(parameter, "kwarg_definition", None), "name", None)
    return alias if isinstance(alias, str) and alias else key


def handle_framework_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    details: Any = None
    message = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        details = [
            {
                "field": _wire_name(request, item.get("key")),
                "message": item.get("message"),
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
    return error_response(error)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    # The type only: messages and tracebacks of arbitrary exceptions may quote hosts or DSNs.
    log.error(
        "unhandled error",
        extra={"fields": {"route": request.scope.get("path_template"), "error_type": type(exc).__name__}},
    )
    return error_response(HttpError(500, "internal", GENERIC_INTERNAL_MESSAGE))


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HttpError: handle_http_error,
    PlatformError: handle_service_error,
    HTTPException: handle_framework_error,
    Exception: handle_unexpected,
}


# -- OpenAPI -----------------------------------------------------------------------------------


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="platform-control-plane API",
        version="1.0.0",
        description=(
            "Environment requests (create, list, follow, approve, reject, reconcile, extend, delete), "
            "classes, the event feed, dead letters and the caller's identity. Every `/v1` route needs "
            "`Authorization: Bearer <JWT>`; errors are `{error, code, details}` with 400/422 validation "
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
