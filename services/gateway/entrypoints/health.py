"""Liveness, readiness and metrics (no token), and the platform's status (any role).

``/healthz`` and ``/readyz`` look at this process only (a backend down never restarts or
unreadies a gateway replica); ``GET /v1/status`` reports every dependency instead
(:mod:`services.gateway.service_layer.health`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.openapi import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from libs.ops_server import run_checks
from libs.telemetry import REGISTRY
from services.gateway.domain.resources import Health, PlatformStatus, Readiness
from services.gateway.entrypoints.dependencies import runtime_of
from services.gateway.entrypoints.openapi import any_role_get, error_spec

# A public route has no caller to refuse; a query value with control characters is still a 400.
PUBLIC_ERRORS = {400: error_spec(400)}


@get(
    "/healthz",
    tags=["operations"],
    summary="Liveness",
    sync_to_thread=False,
    responses={
        503: ResponseSpec(data_container=Health, description="Wedged", generate_examples=False),
        **PUBLIC_ERRORS,
    },
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
    responses={
        503: ResponseSpec(data_container=Readiness, description="Not ready", generate_examples=False),
        **PUBLIC_ERRORS,
    },
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


@get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    media_type=CONTENT_TYPE_LATEST,
    responses=PUBLIC_ERRORS,
)
async def metrics() -> Response[bytes]:
    """Prometheus text exposition of this process's registry."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@any_role_get("/v1/status", tag="operations", summary="The platform's dependencies and their state")
async def status(request: Request[Any, Any, Any]) -> PlatformStatus:
    """Every dependency with its state (`up`, `down`, `unknown`), last error and since when:
    the identity provider and each backend as the gateway sees them (`reported_by:
    gateway`), then what each backend checks itself (the git remote, cluster regions).
    `degraded` is a report, not an outage: requests are still taken, and work that needs a
    dependency that is down waits for it. Errors never name hosts, URLs or secrets."""
    runtime = runtime_of(request)
    runtime.require_services()
    return await runtime.health.status()
