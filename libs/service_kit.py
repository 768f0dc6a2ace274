"""What every service is built from: pool, bus, outbox relay, consumers, RPC, readiness.

A service's ``bootstrap.py`` opens a :class:`ServiceKit`, registers its consumers, RPC
verbs, readiness checks and background loops on it, and returns it. The process runner
and the tests start and stop the same object, so tests exercise the real wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.rpc import ListDeadLetters, Ping, ReplayDeadLetter
from libs.bus import Subjects, connect_nats, ensure_stream
from libs.database import Pool, open_pool
from libs.dead_letters import DeadLetters
from libs.inbox import EventConsumer, GiveUpHook, Handler, RetryPolicy, fail_request
from libs.migrations import discover, migrate
from libs.ops_server import ReadinessCheck, run_checks
from libs.outbox import Outbox, OutboxRelay
from libs.rpc import RpcHandler, RpcServer
from libs.settings import PlatformSettings

log = logging.getLogger(__name__)

BackgroundLoop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class ServiceKit:
    """The running parts of one service process."""

    def __init__(
        self,
        *,
        service: str,
        schema: str,
        settings: PlatformSettings,
        pool: Pool,
        nc: NatsClient,
        js: JetStreamContext,
    ) -> None:
        self.service = service
        self.schema = schema
        self.settings = settings
        self.pool = pool
        self.nc = nc
        self.js = js
        self.subjects = Subjects.from_settings(settings)
        self.outbox = Outbox(schema, service, self.subjects)
        self.relay = OutboxRelay(
            pool,
            js,
            dsn=settings.require_dsn(),
            schema=schema,
            stream=settings.stream_name,
            poll_seconds=settings.outbox_poll_seconds,
        )
        self.rpc = RpcServer(nc, service=service, prefix=settings.rpc_prefix)
        self.retry = RetryPolicy(
            max_attempts=settings.consumer_max_attempts,
            backoff_seconds=settings.consumer_backoff_seconds,
            max_backoff_seconds=settings.consumer_max_backoff_seconds,
            ack_wait_seconds=settings.consumer_ack_wait_seconds,
        )
        self.consumers: list[EventConsumer] = []
        self.readiness: dict[str, ReadinessCheck] = {
            "database": self._check_database,
            "nats": self._check_nats,
        }
        self._background: list[BackgroundLoop] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._background_tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.rpc.route("ping", Ping, self._ping)
        # Operators list and replay dead letters of every service the same way (platformctl events dlq).
        self.dead_letters = DeadLetters(pool, self.outbox.channel)
        self.rpc.route("list_dead_letters", ListDeadLetters, self.dead_letters.list)
        self.rpc.route("replay_dead_letter", ReplayDeadLetter, self.dead_letters.replay)

    @classmethod
    async def open(cls, *, service: str, schema: str, settings: PlatformSettings, package: str) -> ServiceKit:
        """Connect to Postgres and NATS (migrating first when ``PLATFORM_AUTO_MIGRATE`` is on)."""
        dsn = settings.require_dsn()
        if settings.auto_migrate:
            await migrate(dsn, schema, discover(package))
        pool = await open_pool(dsn, schema, f"platform-{service}", settings.postgres_pool_max)
        try:
            nc = await connect_nats(settings, f"platform-{service}")
        except BaseException:
            await pool.close()
            raise
        js = nc.jetstream()
        await ensure_stream(js, settings)
        return cls(service=service, schema=schema, settings=settings, pool=pool, nc=nc, js=js)

    def consume(
        self,
        name: str,
        event_filter: str,
        handlers: dict[str, Handler],
        *,
        on_give_up: GiveUpHook = fail_request,
        concurrency: int | None = None,
        ordered_by_subject: bool = False,
    ) -> EventConsumer:
        """Register a durable consumer ``<service>-<name>`` for events matching ``event_filter``."""
        consumer = EventConsumer(
            name=f"{self.service.replace('_', '-')}-{name}",
            event_filter=event_filter,
            handlers=handlers,
            pool=self.pool,
            js=self.js,
            outbox=self.outbox,
            subjects=self.subjects,
            stream=self.settings.stream_name,
            retry=self.retry,
            concurrency=concurrency or self.settings.consumer_concurrency,
            on_give_up=on_give_up,
            ordered_by_subject=ordered_by_subject,
        )
        self.consumers.append(consumer)
        return consumer

    def route(self, verb: str, message_type: type[Any], handler: RpcHandler) -> None:
        self.rpc.route(verb, message_type, handler)

    def background(self, loop: BackgroundLoop) -> None:
        """Run ``loop(stopping)`` for the life of the service (sweepers, scanners)."""
        self._background.append(loop)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Release a service-specific resource (API clients, repositories) after draining."""
        self._on_stop.append(callback)

    async def start(self) -> None:
        await self.relay.start()
        for consumer in self.consumers:
            await consumer.start()
        await self.rpc.start()
        self._background_tasks = [asyncio.create_task(loop(self._stopping)) for loop in self._background]
        log.info("service started", extra={"fields": {"consumers": [c.name for c in self.consumers]}})

    async def stop(self) -> None:
        """Drain in order: stop taking requests, finish in-flight events, flush the outbox."""
        timeout = self.settings.shutdown_timeout_seconds
        self._stopping.set()
        await self.rpc.stop(timeout)
        await asyncio.gather(*(consumer.stop(timeout) for consumer in self.consumers))
        for task in self._background_tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout)
        await self.relay.stop()
        for callback in self._on_stop:
            with contextlib.suppress(Exception):
                await callback()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.pool.close()
        log.info("service stopped")

    async def _check_database(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def _check_nats(self) -> None:
        if not self.nc.is_connected:
            raise ConnectionError("not connected")
        await self.js.account_info()

    async def _ping(self, _: Ping) -> dict[str, Any]:
        ready, checks = await run_checks(self.readiness)
        return {"service": self.service, "ready": ready, "checks": checks}
