"""What the handlers receive: the process's runtime and, per request, the caller (as resolved,
and as the ``Actor`` every RPC message carries), the request a lifecycle route changes, and the
services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromPath

from contracts.etags import if_match_value
from contracts.models import Actor
from libs.ops_server import ReadinessCheck
from services.gateway.adapters.services import Services
from services.gateway.adapters.tokens import Authenticator
from services.gateway.domain.claims import Principal
from services.gateway.domain.errors import BadRequest, HttpError, Unauthenticated
from services.gateway.domain.rate_limits import RateLimits
from services.gateway.entrypoints.conditional import CatalogIfMatch
from services.gateway.entrypoints.request_inputs import IfMatch, parse_if_match
from services.gateway.service_layer.health import GatewayHealth
from services.gateway.service_layer.lifecycle import RequestChange
from services.gateway.settings import GatewaySettings


@dataclass
class GatewayRuntime:
    """What the handlers need; ``services`` is attached once NATS is connected (app start-up)."""

    settings: GatewaySettings
    authenticator: Authenticator
    health: GatewayHealth
    rate_limits: RateLimits
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


def initial_state(runtime: GatewayRuntime) -> State:
    return State({"runtime": runtime})


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller the authentication middleware established.

    Only routes that document the bearer scheme have one; a guard or handler reached
    without it (a route declared without ``security``, Litestar's automatic OPTIONS
    handler under a controller-level guard) fails closed with a 401, never a crash.
    """
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise Unauthenticated.no_credentials()
    return principal


async def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return caller_of(request)


async def provide_actor(request: Request[Any, Any, Any]) -> Actor:
    """The caller as the services see it (what every RPC message carries)."""
    return caller_of(request).to_actor()


async def provide_change(
    request: Request[Any, Any, Any], request_id: FromPath[str], if_match: IfMatch = None
) -> RequestChange:
    """The ``change`` of a route that changes the request at ``{request_id}`` on behalf of
    the caller, conditional on ``If-Match`` when sent."""
    return RequestChange(
        actor=caller_of(request).to_actor(), request_id=request_id, expected_version=parse_if_match(if_match)
    )


async def provide_catalog_if_match(
    request: Request[Any, Any, Any], if_match: CatalogIfMatch = None
) -> str | None:
    """The ``If-Match`` of a catalog or budget ``PUT``: every line of the header as one list
    (RFC 9110 §5.3), ``*`` alone or entity tags; a 400 naming the header otherwise."""
    if if_match is None:
        return None
    try:
        return if_match_value(request.headers.getall("if-match"))
    except ValueError as exc:
        raise BadRequest(
            f"invalid If-Match header: {exc}", details=[{"field": "If-Match", "message": str(exc)}]
        ) from None


async def provide_services(request: Request[Any, Any, Any]) -> Services:
    return runtime_of(request).require_services()


async def provide_settings(request: Request[Any, Any, Any]) -> GatewaySettings:
    return runtime_of(request).settings


async def provide_rate_limits(request: Request[Any, Any, Any]) -> RateLimits:
    return runtime_of(request).rate_limits


DEPENDENCIES = {
    "actor": Provide(provide_actor),
    "catalog_if_match": Provide(provide_catalog_if_match),
    "change": Provide(provide_change),
    "principal": Provide(provide_principal),
    "rate_limits": Provide(provide_rate_limits),
    "services": Provide(provide_services),
    "settings": Provide(provide_settings),
}
