"""Run one service as a process: ops port, signals, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

from libs.ops_server import OpsServer
from libs.service_kit import ServiceKit
from libs.settings import PlatformSettings, split_address
from libs.telemetry import configure_logging, configure_telemetry, shutdown_telemetry

log = logging.getLogger(__name__)

S = TypeVar("S", bound=PlatformSettings)


async def serve(settings: S, bootstrap: Callable[[S], Awaitable[ServiceKit]]) -> None:
    """Start the service built by ``bootstrap`` and run it until SIGTERM or SIGINT.

    On a signal the service stops taking work, finishes what is in flight (bounded by
    ``PLATFORM_SHUTDOWN_TIMEOUT_SECONDS``), publishes what its outbox still holds, and
    exits. Work cut off by a harder kill is redelivered: nothing is acked before commit.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # A signal during start-up (e.g. still waiting for NATS or Postgres) aborts the start
    # instead of being ignored until it finishes.
    starting = asyncio.ensure_future(bootstrap(settings))
    interrupted = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        log.info("start-up interrupted")
        return
    interrupted.cancel()
    kit = starting.result()
    host, port = split_address(settings.health_address, "PLATFORM_HEALTH_ADDRESS")
    ops = OpsServer(host, port, kit, metrics_enabled=settings.prometheus_enabled)
    await ops.start()
    await kit.start()
    log.info("serving", extra={"fields": {"ops_port": ops.port}})
    await stopping.wait()
    log.info("shutting down")
    await kit.stop()
    await ops.stop()


def run(service: str, settings: S, bootstrap: Callable[[S], Awaitable[ServiceKit]]) -> None:
    configure_logging(service, settings.log_level)
    # The same name as its RPC service in `nats micro ls`: platform-git-publisher.
    configure_telemetry(f"platform-{service.replace('_', '-')}", settings)
    try:
        asyncio.run(serve(settings, bootstrap))
    finally:
        shutdown_telemetry()
