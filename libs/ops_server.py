"""The operations port of a service: ``/healthz``, ``/readyz``, ``/status`` and ``/metrics``.

- ``/healthz`` (liveness): 200 ``{"status": "ok"}``, or 503 naming each wedged part in
  ``failing`` (see :meth:`libs.service_kit.ServiceKit.liveness_problems`).
- ``/readyz`` (readiness): the service's own checks (its database and NATS), 200 or 503.
- ``/status``: readiness plus the dependencies the service reports (always 200: a report).

A deliberately tiny HTTP/1.1 server on asyncio streams: four GET routes do not justify
a framework in every worker process, and it leaves signal handling to the service runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from libs.telemetry import REGISTRY

ReadinessCheck = Callable[[], Awaitable[None]]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


async def run_checks(checks: dict[str, ReadinessCheck], timeout: float = 2.0) -> tuple[bool, dict[str, str]]:
    """Run every readiness check; the text says which failed, never why in infrastructure terms."""

    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            return "timeout"
        except Exception as exc:
            # The exception type names the failure without quoting hosts or DSNs.
            return f"failing ({type(exc).__name__})"
        return "ok"

    results = await asyncio.gather(*(one(check) for check in checks.values()))
    status = dict(zip(checks, results, strict=True))
    return all(result == "ok" for result in results), status


class Probes(Protocol):
    """What the ops port asks the process (:class:`libs.service_kit.ServiceKit` answers)."""

    readiness: dict[str, ReadinessCheck]

    def liveness_problems(self) -> dict[str, str]: ...

    async def status(self) -> Any: ...


class OpsServer:
    def __init__(self, host: str, port: int, probes: Probes, metrics_enabled: bool = True) -> None:
        self.host = host
        self.port = port
        self.probes = probes
        self.metrics_enabled = metrics_enabled
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets: tuple[Any, ...] = tuple(self._server.sockets or ())
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            status, content_type, body = await self._route(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/healthz":
            failing = self.probes.liveness_problems()
            if failing:
                body = json.dumps({"status": "unhealthy", "failing": failing}).encode() + b"\n"
                return 503, "application/json", body
            return 200, "application/json", b'{"status":"ok"}\n'
        if path == "/readyz":
            ready, checks = await run_checks(self.probes.readiness)
            body = (
                json.dumps({"status": "ready" if ready else "not_ready", "checks": checks}).encode() + b"\n"
            )
            return (200 if ready else 503), "application/json", body
        if path == "/status":
            return 200, "application/json", msgspec.json.encode(await self.probes.status()) + b"\n"
        if path == "/metrics" and self.metrics_enabled:
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        return 404, "text/plain", b"not found\n"
