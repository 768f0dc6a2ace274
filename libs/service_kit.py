"""What every service is built from: pool, bus, outbox relay, consumers, RPC, health.

A service's ``bootstrap.py`` opens a :class:`ServiceKit`, registers its consumers, RPC
verbs, dependencies and background loops on it, and returns it. The process runner
and the tests start and stop the same object, so tests exercise the real wiring.

Health (:mod:`libs.health`): ``readiness`` is the service's own database and NATS
connection; ``dependencies`` (a git remote, cluster regions) are checked in the
background and reported (``ping``, ``/status``, metrics), never gating readiness;
:meth:`ServiceKit.liveness_problems` names what is wedged (the event loop, a consumer,
the outbox relay, a background loop, the NATS client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.rpc import LIST_DEAD_LETTERS, PING, REPLAY_DEAD_LETTER, REPLAY_EVENTS, Ping, PingReply, RpcVerb
from libs import certificates
from libs.bus import Subjects, connect_nats, durable_name, ensure_stream, stream_config
from libs.database import DatabaseTimeouts, Pool, open_pool
from libs.dead_letters import DeadLetters
from libs.health import DependencyCheck, DependencyMonitor, LoopHeartbeat, nats_client_problem, task_problem
from libs.inbox import (
    EventConsumer,
    GiveUpHook,
    Handler,
    Preload,
    ReplayPolicy,
    RetryHook,
    RetryPolicy,
    StartFrom,
    fail_request,
    report_retry,
)
from libs.migrations import discover, migrate
from libs.ops_server import ReadinessCheck, run_checks
from libs.outbox import Outbox, OutboxRelay
from libs.replay import StreamReplay
from libs.retention import Retention, kit_rules
from libs.rpc import MoreProblems, ReplyT, RequestT, RpcHandler, RpcServer
from libs.settings import PlatformSettings
from libs.telemetry import refresh_every
from libs.topology import ServiceTopology

log = logging.getLogger(__name__)

BackgroundLoop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
LivenessCheck = Callable[[], str | None]

# A consumer that has room for more messages pulls at least twice a second; this long
# without a pull means its loop is stuck.
CONSUMER_STALE_SECONDS = 30.0


class _StampedPulls:
    """A consumer's pull subscription that stamps every fetch: the consumer loop's heartbeat."""

    def __init__(self, subscription: Any, consumer: WatchedConsumer) -> None:
        self._subscription = subscription
        self._consumer = consumer

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        self._consumer.last_pull = time.monotonic()
        try:
            return await self._subscription.fetch(*args, **kwargs)
        finally:
            self._consumer.last_pull = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._subscription, name)


class WatchedConsumer(EventConsumer):
    """An :class:`EventConsumer` that can tell ``/healthz`` whether its fetch loop still runs.

    Dead: its loop task ended (cancelled, crashed, returned) while the service is not
    stopping. Stuck: no pull for ``CONSUMER_STALE_SECONDS`` although it has room for more
    messages (waiting for its in-flight handlers at full concurrency is busy, not stuck:
    long handlers keep their leases alive themselves). Pulls are stamped by wrapping the
    subscription whenever it is (re)assigned; until the first stamp nothing is judged.
    """

    last_pull: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_subscription" and value is not None and not isinstance(value, _StampedPulls):
            value = _StampedPulls(value, self)
        super().__setattr__(name, value)

    def problem(self, stale_after: float = CONSUMER_STALE_SECONDS) -> str | None:
        task = self._task
        ended = task_problem(task, "its fetch loop")
        if ended is not None or task is None or self.last_pull is None:
            return ended
        idle = time.monotonic() - self.last_pull
        # Not pulling while the database is away is on purpose (it saves the messages'
        # deliveries); a restart would not bring the database back.
        if self.waiting_for_database:
            return None
        if idle > stale_after and len(self._inflight) < self.concurrency:
            return f"its fetch loop has not pulled for {idle:.0f}s"
        return None


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
        self.outbox = Outbox(
            schema,
            service,
            self.subjects,
            schema_base=settings.events_schema_base_url,
            wire_form=settings.events_wire_form,
        )
        self.relay = OutboxRelay(
            pool,
            js,
            dsn=settings.require_dsn(),
            schema=schema,
            stream=settings.stream_name,
            poll_seconds=settings.outbox_poll_seconds,
            quarantine_after=settings.outbox_quarantine_after,
        )
        # One RPC in flight per pool connection: more would only queue for the pool, and the
        # deadline (below the gateway's timeout) answers "unavailable" before the caller gives up.
        self.rpc = RpcServer(
            nc,
            service=service,
            prefix=settings.rpc_prefix,
            max_concurrency=settings.postgres_pool_max,
            deadline=settings.rpc_handler_timeout_seconds,
        )
        self.retry = RetryPolicy.from_settings(settings)
        self.consumers: list[WatchedConsumer] = []
        # Readiness is this process's own job: its database and NATS. External systems go
        # in ``dependencies``: reported, never gating readiness (a region or a git remote
        # down must not take every replica out of its Service).
        self.readiness: dict[str, ReadinessCheck] = {
            "database": self._check_database,
            "nats": self._check_nats,
        }
        self.dependencies: dict[str, DependencyCheck] = {}
        self.dependency_monitor = DependencyMonitor(self.dependencies)
        # Service-specific liveness checks beside the kit's own: name -> problem or None.
        self.liveness: dict[str, LivenessCheck] = {}
        self.heartbeat = LoopHeartbeat()
        self._background: list[tuple[str, BackgroundLoop]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._background_tasks: dict[str, asyncio.Task[None]] = {}
        self._monitor_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = asyncio.Event()
        self.rpc.route(PING, self._ping)
        # Operators list and replay dead letters of every service the same way (platformctl events dlq).
        self.dead_letters = DeadLetters(pool, self.outbox.channel, self.subjects)
        self.rpc.route(LIST_DEAD_LETTERS, self.dead_letters.list)
        self.rpc.route(REPLAY_DEAD_LETTER, self.dead_letters.replay)
        # ... and replay the stream to a service's own consumers (platformctl events replay --consumer).
        self.stream_replay = StreamReplay(
            service=service,
            consumers=self.consumers,  # the list the registrations below fill
            pool=pool,
            js=js,
            nc=nc,
            subjects=self.subjects,
            stream=settings.stream_name,
            outbox_channel=self.outbox.channel,
            # A page must be answered well within the RPC deadline, its commit included.
            budget_seconds=settings.rpc_handler_timeout_seconds / 2,
        )
        self.rpc.route(REPLAY_EVENTS, self.stream_replay.replay)
        # Old rows of the kit's tables, and of service tables registered with retention.add.
        self.retention = Retention(
            pool,
            kit_rules(settings),
            interval_seconds=settings.retention_interval_seconds,
            batch_size=settings.retention_batch_size,
        )
        if settings.retention_interval_seconds > 0:
            self.background(self.retention.run, name="retention")
        self.background(
            refresh_every(certificates.refresher(settings), certificates.REFRESH_SECONDS), name="certificates"
        )

    @classmethod
    async def open(cls, *, service: str, schema: str, settings: PlatformSettings, package: str) -> ServiceKit:
        """Connect to Postgres and NATS (migrating first when ``PLATFORM_AUTO_MIGRATE`` is on)."""
        dsn = settings.require_dsn()
        if settings.auto_migrate:
            await migrate(dsn, schema, discover(package))
        pool = await open_pool(
            dsn,
            schema,
            f"platform-{service}",
            settings.postgres_pool_max,
            DatabaseTimeouts.from_settings(settings),
        )
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
        on_retry: RetryHook | None = report_retry,
        concurrency: int | None = None,
        ordered_by_subject: bool = False,
        start_from: StartFrom = "new",
        replay_policies: Mapping[str, ReplayPolicy] | None = None,
        batched: bool = False,
        preload: Preload | None = None,
    ) -> EventConsumer:
        """Register a durable consumer ``<service>-<name>`` for the event types in ``handlers``.

        Services declare theirs in a :class:`~libs.topology.ServiceTopology` and register them
        with :meth:`subscribe`; this is the step beneath, for consumers made up on the spot.

        ``event_filter`` names the consumer's interest (every handler must match it); the
        server delivers only the handlers' types. A new durable starts with new events
        (``start_from="all"``: the whole retained history); an existing one keeps its place.
        ``replay_policies``: what ``platformctl events replay --consumer`` does with each type
        (undeclared: skipped).
        """
        consumer = WatchedConsumer(
            name=durable_name(self.service, name),
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
            on_retry=on_retry,
            ordered_by_subject=ordered_by_subject,
            start_from=start_from,
            start_lookback_seconds=self.settings.consumer_start_lookback_seconds,
            stream_config=stream_config(self.settings),
            startup_timeout=self.settings.jetstream_startup_timeout_seconds,
            nc=self.nc,
            replay_policies=replay_policies,
            batched=batched,
            preload=preload,
        )
        self.consumers.append(consumer)
        return consumer

    def subscribe(
        self, topology: ServiceTopology, owner: object, *, concurrency: Mapping[str, int] | None = None
    ) -> None:
        """Register the durable consumers ``topology`` declares, their handlers bound to ``owner``.

        ``concurrency`` sets it for consumers by name (from a service setting); the others
        take ``PLATFORM_CONSUMER_CONCURRENCY``.
        """
        if topology.name != self.service:
            raise ValueError(f"the {topology.name} topology registered on the {self.service} kit")
        for consumer in topology.consumers:
            self.consume(
                consumer.name,
                consumer.event_filter,
                consumer.bound_handlers(owner),
                on_give_up=consumer.on_give_up,
                on_retry=consumer.on_retry,
                concurrency=(concurrency or {}).get(consumer.name),
                ordered_by_subject=consumer.ordered_by_subject,
                start_from=consumer.start_from,
                replay_policies=consumer.replay_policies,
                batched=consumer.batched,
                preload=consumer.bound_preload(owner),
            )

    def route(
        self,
        verb: RpcVerb[RequestT, ReplyT],
        handler: RpcHandler[RequestT, ReplyT],
        *,
        more_problems: MoreProblems | None = None,
    ) -> None:
        """Serve ``verb`` (from :data:`contracts.rpc.RPC_VERBS`) with ``handler``."""
        self.rpc.route(verb, handler, more_problems=more_problems)

    def background(self, loop: BackgroundLoop, name: str | None = None) -> None:
        """Run ``loop(stopping)`` for the life of the service (sweepers, scanners).

        The loop must run until ``stopping`` is set: one that ends earlier is reported by
        ``/healthz`` as ``background/<name>`` (default: the function's qualified name).
        """
        label = name or getattr(loop, "__qualname__", "loop").replace("<locals>.", "")
        self._background.append((label, loop))

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Release a service-specific resource (API clients, repositories) after draining."""
        self._on_stop.append(callback)

    async def start(self) -> None:
        self.heartbeat.start()
        await self.relay.start()
        for consumer in self.consumers:
            await consumer.start()
        await self.rpc.start()
        self._background_tasks = {
            name: asyncio.create_task(loop(self._stopping), name=f"background-{name}")
            for name, loop in self._background
        }
        self._monitor_task = asyncio.create_task(
            self.dependency_monitor.run(self._stopping), name="dependency-monitor"
        )
        self._started = True
        log.info("service started", extra={"fields": {"consumers": [c.name for c in self.consumers]}})

    async def stop(self) -> None:
        """Drain in order: stop taking requests, finish in-flight events, flush the outbox."""
        timeout = self.settings.shutdown_timeout_seconds
        self._stopping.set()
        await self.rpc.stop(timeout)
        await asyncio.gather(*(consumer.stop(timeout) for consumer in self.consumers))
        for task in self._background_tasks.values():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout)
        if self._monitor_task is not None:
            # A check in flight (a slow remote) is not worth waiting for.
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor_task
        await self.heartbeat.stop()
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

    def liveness_problems(self) -> dict[str, str]:
        """What is wedged in this process, by part (empty: alive). Checks nothing outside it.

        Parts that end while the service stops are expected to end, so only the event loop
        is judged then.
        """
        problems: dict[str, str | None] = {"event_loop": self.heartbeat.problem()}
        if self._started and not self._stopping.is_set():
            problems["nats"] = nats_client_problem(self.nc)
            for consumer in self.consumers:
                problems[f"consumer/{consumer.name}"] = consumer.problem()
            relay_tasks: list[asyncio.Task[Any]] = list(getattr(self.relay, "_tasks", []))
            problems["outbox_relay"] = next(
                (p for p in (task_problem(t, "a relay loop") for t in relay_tasks) if p), None
            )
            for name, task in self._background_tasks.items():
                problems[f"background/{name}"] = task_problem(task, "the loop")
            problems["dependency_checks"] = task_problem(self._monitor_task, "the dependency checks")
            for name, check in self.liveness.items():
                problems[name] = check()
        return {part: problem for part, problem in problems.items() if problem}

    async def status(self) -> PingReply:
        """Readiness (own database and NATS) and the dependencies as last checked.

        The dependency part is the background monitor's memory: answering never waits for
        a remote, so a slow git server or cluster cannot make ``ping`` time out.
        """
        ready, checks = await run_checks(self.readiness)
        return PingReply(
            service=self.service, ready=ready, checks=checks, dependencies=self.dependency_monitor.report()
        )

    async def _ping(self, _: Ping) -> PingReply:
        return await self.status()
