"""ASGI middleware of the HTTP API: one trace span and metrics per request, and a response deadline.

Both run around the route's own exception handling and around authentication
(:mod:`.authentication`), so they see the final status of error responses too. Requests
that match no route (404/405 from the router) are answered before any route middleware
runs and are therefore not counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import cast

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from libs.telemetry import REGISTRY, Stopwatch, extract_context, tracer
from services.gateway.domain.errors import RETRY_AFTER_SECONDS, HttpError
from services.gateway.entrypoints.errors import send_error

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "platform_http_requests_total",
    "HTTP requests served by the gateway, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "platform_http_request_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    registry=REGISTRY,
)


def _headers(scope: Scope) -> Mapping[str, str]:
    return {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}


class TelemetryMiddleware(ASGIMiddleware):
    """A server span per request (continuing a client's ``traceparent``) and HTTP metrics.

    The span is current while the handler runs, so :class:`libs.rpc.RpcClient` puts it
    into the NATS headers and the service's work joins the same trace.
    """

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        method = cast("HTTPScope", scope)["method"]
        # The template, never the concrete path: request ids would explode the label set.
        route = scope.get("path_template") or "unmatched"
        status = 500
        watch = Stopwatch()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracer().start_as_current_span(
            f"{method} {route}",
            context=extract_context(_headers(scope)),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route, "url.path": scope["path"]},
        ) as span:
            try:
                await next_app(scope, receive, capture)
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_SECONDS.labels(method, route).observe(watch.elapsed())


class ResponseDeadlineMiddleware(ASGIMiddleware):
    """Answers 503 when a response is not ready within ``PLATFORM_HTTP_WRITE_TIMEOUT_SECONDS``.

    uvicorn has no per-request write deadline; without this a hung call would hold the
    connection and the client until the client gives up.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = False

        async def track(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_seconds):
                await next_app(scope, receive, track)
        except TimeoutError:
            log.warning(
                "response deadline exceeded",
                extra={
                    "fields": {"route": scope.get("path_template"), "timeout_seconds": self.timeout_seconds}
                },
            )
            if started:
                # Part of the response is out; all that is left is to drop the connection.
                raise
            await send_error(
                scope,
                send,
                HttpError(
                    503,
                    "unavailable",
                    "the request took too long to answer; retry later",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ),
            )
