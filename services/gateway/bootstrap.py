"""Composition root of the gateway: the Litestar app (for tests and ``run``) and the process.

The gateway owns no data: it needs the token verifier, a NATS connection for
request/reply, and nothing else. ``platformd gateway`` calls :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from litestar import Litestar
from litestar.types import ControllerRouterHandler
from nats.aio.client import Client as NatsClient

from libs import certificates
from libs.bus import connect_nats
from libs.telemetry import configure_logging, configure_telemetry, refresh_every, shutdown_telemetry
from services.gateway.adapters.services import Services
from services.gateway.adapters.tokens import authenticator_from_settings
from services.gateway.domain.rate_limits import RateLimits
from services.gateway.entrypoints.approvals import ApprovalsController
from services.gateway.entrypoints.auth_config import AuthConfigController
from services.gateway.entrypoints.authentication import AuthenticationMiddleware
from services.gateway.entrypoints.consumers import ConsumersController
from services.gateway.entrypoints.dead_letters import DeadLettersController
from services.gateway.entrypoints.dependencies import DEPENDENCIES, GatewayRuntime, initial_state
from services.gateway.entrypoints.environment_classes import EnvironmentClassesController
from services.gateway.entrypoints.environment_requests import EnvironmentRequestsController
from services.gateway.entrypoints.errors import EXCEPTION_HANDLERS, reject_control_characters
from services.gateway.entrypoints.events import EventsController
from services.gateway.entrypoints.health import healthz, metrics, readyz, status
from services.gateway.entrypoints.http_headers import SingleValuedHeadersMiddleware, add_security_headers
from services.gateway.entrypoints.http_server import protocol_class
from services.gateway.entrypoints.identity import whoami
from services.gateway.entrypoints.middleware import ResponseDeadlineMiddleware, TelemetryMiddleware
from services.gateway.entrypoints.openapi import (
    document_error_headers,
    document_etags,
    document_rate_limits,
    openapi_config,
)
from services.gateway.entrypoints.policy_packs import PolicyPacksController
from services.gateway.entrypoints.quota_profiles import QuotaProfilesController
from services.gateway.entrypoints.teams import TeamsController
from services.gateway.service_layer.health import GatewayHealth
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings, nc: NatsClient | None = None) -> Litestar:
    """Build the HTTP API.

    Without ``nc`` the app connects to NATS on start-up and drains the connection on
    shutdown; with ``nc`` (tests) it uses that connection and leaves closing it to the caller.
    """
    authenticator = authenticator_from_settings(settings)
    runtime = GatewayRuntime(
        settings=settings,
        authenticator=authenticator,
        health=GatewayHealth(authenticator.oidc, settings.readiness_timeout_seconds),
        rate_limits=RateLimits.per_minute(
            subject=settings.rate_limit_subject_per_minute,
            generations=settings.rate_limit_subject_generations_per_minute,
            team=settings.rate_limit_team_per_minute,
        ),
    )

    @contextlib.asynccontextmanager
    async def certificate_expiries(_: Litestar) -> AsyncIterator[None]:
        """Report when the TLS files the gateway is given expire (libs.certificates)."""
        stopping = asyncio.Event()
        loop = asyncio.create_task(
            refresh_every(certificates.refresher(settings), certificates.REFRESH_SECONDS)(stopping)
        )
        try:
            yield
        finally:
            stopping.set()
            await loop

    @contextlib.asynccontextmanager
    async def nats_connection(_: Litestar) -> AsyncIterator[None]:
        client = nc if nc is not None else await connect_nats(settings, "platform-gateway")
        runtime.services = Services(client, settings.rpc_prefix, settings.rpc_timeout_seconds)
        runtime.health.start(runtime.services)
        log.info("gateway connected to nats")
        try:
            yield
        finally:
            await runtime.health.stop()
            runtime.services = None
            await runtime.authenticator.close()
            if nc is None:
                # Drain: replies to calls still in flight are delivered before the close.
                with contextlib.suppress(Exception):
                    await client.drain()

    app = Litestar(
        route_handlers=route_handlers(settings),
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=reject_control_characters,
        # Outermost first: the span covers the deadline's 503 and the refused tokens too;
        # the deadline covers a stalling identity provider. A repeated credential header is
        # refused before anyone reads one of them.
        middleware=[
            TelemetryMiddleware(),
            ResponseDeadlineMiddleware(settings.http_write_timeout_seconds),
            SingleValuedHeadersMiddleware(),
            AuthenticationMiddleware(authenticator, runtime.rate_limits),
        ],
        # On every response, the router's 404s included.
        before_send=[add_security_headers],
        lifespan=[certificate_expiries, nats_connection],
        state=initial_state(runtime),
        openapi_config=openapi_config(),
        request_max_body_size=settings.max_body_bytes,
        # Litestar's logging config would replace the process's JSON logging and log
        # tracebacks; errors are logged by the exception handlers instead.
        logging_config=None,
        debug=False,
    )
    # Built now rather than on the first /schema request: a document that cannot be built
    # fails the start, and the headers every error status (and every tagged read) carries
    # are added once.
    document_error_headers(app.openapi_schema)
    document_etags(app.openapi_schema)
    document_rate_limits(app.openapi_schema)
    return app


def route_handlers(settings: GatewaySettings) -> list[ControllerRouterHandler]:
    """Every route of the API: one controller per resource, plus the operations endpoints."""
    handlers: list[ControllerRouterHandler] = [
        healthz,
        readyz,
        whoami,
        AuthConfigController,
        status,
        EnvironmentRequestsController,
        ApprovalsController,
        EventsController,
        DeadLettersController,
        ConsumersController,
        EnvironmentClassesController,
        QuotaProfilesController,
        PolicyPacksController,
        TeamsController,
    ]
    if settings.prometheus_enabled:
        handlers.append(metrics)
    return handlers


def uvicorn_config(settings: GatewaySettings, app: Litestar) -> uvicorn.Config:
    host, port = settings.listen_address()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        # Keep the process's JSON logging; no per-request access lines (metrics count them).
        log_config=None,
        access_log=False,
        server_header=False,
        # h11 with a header deadline, a connection cap and strict framing (http_server.py).
        http=protocol_class(settings.http_read_header_timeout_seconds, settings.http_max_connections),
        timeout_keep_alive=max(1, round(settings.http_read_timeout_seconds)),
        # On SIGTERM uvicorn stops accepting, lets requests in flight finish for this long,
        # then runs the lifespan shutdown (NATS drain).
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_seconds)),
    )


def _without_listen_address(record: logging.LogRecord) -> bool:
    # uvicorn announces "Uvicorn running on http://<host>:<port>"; log lines carry no host
    # names, so run() logs the port alone instead.
    return not record.getMessage().startswith("Uvicorn running on")


def run(settings: GatewaySettings) -> None:
    """Serve the API until SIGTERM/SIGINT (uvicorn's signal handling drains gracefully)."""
    configure_logging("gateway", settings.log_level)
    configure_telemetry("platform-gateway", settings)
    logging.getLogger("uvicorn.error").addFilter(_without_listen_address)
    log.info("serving the HTTP API", extra={"fields": {"port": settings.listen_address()[1]}})
    try:
        uvicorn.Server(uvicorn_config(settings, create_app(settings))).run()
    finally:
        shutdown_telemetry()
