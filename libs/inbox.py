"""Idempotent event consumers: the inbox side of exactly-once effects.

Each delivery is handled in one Postgres transaction:

1. insert the event id into the inbox (``ON CONFLICT DO NOTHING``); already there means
   the work was done before, so the delivery is acknowledged and nothing else happens;
2. the handler changes the service's rows and stages outgoing events in the outbox;
3. commit, and only then acknowledge the message.

A handler error rolls the transaction back and NAKs the message with exponential
backoff, so it is redelivered. When the last allowed attempt fails, the event goes to
the ``dead_letters`` table and ``request.failed`` is staged (one transaction), then the
message is terminated. A message is never acknowledged without either its effect or its
dead letter being committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg import AsyncConnection

from contracts.envelope import ContractError, Envelope, decode_envelope
from contracts.events import EventData, RequestFailed
from libs.bus import Subjects
from libs.database import Pool
from libs.errors import public_message
from libs.outbox import Outbox
from libs.telemetry import (
    CONSUMER_PENDING,
    EVENTS_HANDLED,
    HANDLER_SECONDS,
    Stopwatch,
    bind_request,
    span_from_headers,
)

log = logging.getLogger(__name__)


@dataclass
class Tx:
    """The open transaction a handler works in, and where it stages its events."""

    conn: AsyncConnection[Any]
    outbox: Outbox
    attempt: int = 1

    async def emit(self, subject: str, data: EventData) -> Envelope:
        return await self.outbox.add(self.conn, subject, data)


class SideEffect(Protocol):
    """A handler whose work outside Postgres (git push, cluster apply) runs before its transaction.

    ``prepare`` performs the side effect with no database transaction held open, so a slow
    push or apply does not pin a connection; it must be idempotent, because a crash before
    the commit repeats it on redelivery. ``apply`` then records the outcome and stages the
    resulting events in the usual inbox transaction.
    """

    async def prepare(self, envelope: Envelope, data: Any) -> Any: ...

    async def apply(self, envelope: Envelope, data: Any, tx: Tx, prepared: Any) -> None: ...


Handler = Callable[[Envelope, Any, Tx], Awaitable[None]] | SideEffect
GiveUpHook = Callable[[Envelope, Any, Tx, BaseException, int], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    ack_wait_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, attempt - 1)))


async def fail_request(envelope: Envelope, data: Any, tx: Tx, error: BaseException, attempts: int) -> None:
    """Default give-up hook: report ``request.failed`` for the request the event is about."""
    request_id = getattr(data, "request_id", None)
    if request_id is None:
        return
    await tx.emit(
        request_id,
        RequestFailed(
            request_id=request_id,
            generation=int(getattr(data, "generation", 0)),
            stage=tx.outbox.source,
            error=public_message(error),
            attempts=attempts,
        ),
    )


class KeyedLocks:
    """One FIFO lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class EventConsumer:
    """A durable JetStream pull consumer whose handlers run in inbox transactions."""

    def __init__(
        self,
        *,
        name: str,
        event_filter: str,
        handlers: dict[str, Handler],
        pool: Pool,
        js: JetStreamContext,
        outbox: Outbox,
        subjects: Subjects,
        stream: str,
        retry: RetryPolicy,
        concurrency: int = 8,
        on_give_up: GiveUpHook = fail_request,
        ordered_by_subject: bool = False,
    ) -> None:
        self.name = name
        # Handlers of events about the same subject run one at a time, in stream order
        # (asyncio locks are FIFO and tasks start in fetch order), so a later fact about a
        # request never overtakes an earlier one inside this process.
        self._subject_locks: KeyedLocks | None = KeyedLocks() if ordered_by_subject else None
        self.filter_subject = subjects.event(event_filter)
        self.handlers = handlers
        self.pool = pool
        self.js = js
        self.outbox = outbox
        self.stream = stream
        self.retry = retry
        self.concurrency = concurrency
        self.on_give_up = on_give_up
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._subscription: Any = None

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.name,
            filter_subject=self.filter_subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.retry.ack_wait_seconds,
            # Unlimited server-side deliveries: the consumer itself dead-letters after
            # max_attempts, transactionally. A server-side limit would silently stop
            # redelivering a message whose last attempt died with the process.
            max_deliver=-1,
            max_ack_pending=max(self.concurrency * 4, 64),
        )

    async def start(self) -> None:
        self._subscription = await self.js.pull_subscribe(
            self.filter_subject, durable=self.name, stream=self.stream, config=self.consumer_config()
        )
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.name}")

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop fetching, let in-flight handlers finish (up to ``timeout``), then return."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Handlers still running past the drain time are cancelled rather than left to
        # outlive the pool: their transactions roll back and the messages are redelivered.
        stragglers = list(self._inflight)
        for task in stragglers:
            task.cancel()
        if stragglers:
            await asyncio.gather(*stragglers, return_exceptions=True)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _run(self) -> None:
        last_lag_check = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            capacity = self.concurrency - len(self._inflight)
            if capacity <= 0:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                # A short pull keeps shutdown prompt; an idle consumer costs the server a
                # couple of cheap pull requests per second.
                messages = await self._subscription.fetch(capacity, timeout=0.5)
            except TimeoutError:  # asyncio's and nats-py's: nothing arrived in this pull
                messages = []
            except Exception as exc:
                log.warning(
                    "fetch failed",
                    extra={"fields": {"consumer": self.name, "error_type": type(exc).__name__}},
                )
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                task = asyncio.create_task(self._process(message))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if loop.time() - last_lag_check > 10:
                last_lag_check = loop.time()
                await self._record_lag()
        if self._inflight:
            await asyncio.wait(self._inflight)

    async def _record_lag(self) -> None:
        with contextlib.suppress(Exception):
            info = await self._subscription.consumer_info()
            CONSUMER_PENDING.labels(self.name).set(info.num_pending or 0)

    async def _keep_alive(self, message: Msg) -> None:
        """Extend the lease while a long handler (git push, cluster apply) works."""
        interval = max(1.0, self.retry.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await message.in_progress()

    async def _process(self, message: Msg) -> None:
        attempt = message.metadata.num_delivered or 1
        try:
            envelope = decode_envelope(message.data)
            data = envelope.decode_data()
        except ContractError as exc:
            await self._dead_letter_undecodable(message, str(exc), attempt)
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            # The filter is broader than this consumer's interest (e.g. ``request.>``).
            await message.ack()
            return
        token = bind_request(envelope.subject)
        watch = Stopwatch()
        keep_alive = asyncio.create_task(self._keep_alive(message))
        try:
            with span_from_headers(
                f"{self.name} {envelope.type}",
                message.headers,
                **{"messaging.system": "nats", "platform.event_id": envelope.id, "platform.attempt": attempt},
            ):
                outcome = await self._handle(message, envelope, data, handler, attempt)
        finally:
            keep_alive.cancel()
            bind_request(None)
            del token
        EVENTS_HANDLED.labels(self.name, envelope.type, outcome).inc()
        HANDLER_SECONDS.labels(self.name, envelope.type).observe(watch.elapsed())

    async def _handle(
        self, message: Msg, envelope: Envelope, data: Any, handler: Handler, attempt: int
    ) -> str:
        if self._subject_locks is None:
            return await self._handle_unordered(message, envelope, data, handler, attempt)
        async with self._subject_locks.hold(envelope.subject):
            return await self._handle_unordered(message, envelope, data, handler, attempt)

    async def _seen(self, event_id: str) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM inbox WHERE consumer = %s AND event_id = %s", [self.name, event_id]
            )
            return await cursor.fetchone() is not None

    async def _handle_unordered(
        self, message: Msg, envelope: Envelope, data: Any, handler: Handler, attempt: int
    ) -> str:
        prepared: Any = None
        try:
            if not callable(handler):
                # Skip the side effect for a known duplicate; a duplicate that slips past this
                # read (a concurrent delivery) repeats an idempotent side effect, nothing more.
                if await self._seen(envelope.id):
                    await self._ack(message)
                    return "duplicate"
                prepared = await handler.prepare(envelope, data)
            async with self.pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    "INSERT INTO inbox (consumer, event_id, event_type) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING RETURNING 1",
                    [self.name, envelope.id, envelope.type],
                )
                fresh = await cursor.fetchone() is not None
                if fresh:
                    tx = Tx(conn, self.outbox, attempt)
                    if callable(handler):
                        await handler(envelope, data, tx)
                    else:
                        await handler.apply(envelope, data, tx, prepared)
        except Exception as exc:
            return await self._on_error(message, envelope, data, exc, attempt)
        # Acknowledge only after the commit: a crash before this line means redelivery,
        # which the inbox row turns into a no-op.
        await self._ack(message)
        return "ok" if fresh else "duplicate"

    async def _on_error(
        self, message: Msg, envelope: Envelope, data: Any, exc: Exception, attempt: int
    ) -> str:
        fields = {
            "consumer": self.name,
            "event_type": envelope.type,
            "event_id": envelope.id,
            "attempt": attempt,
            "error_type": type(exc).__name__,
            "error": public_message(exc),
        }
        if attempt < self.retry.max_attempts:
            delay = self.retry.delay(attempt)
            log.warning("handler failed; will retry", extra={"fields": {**fields, "retry_in_s": delay}})
            with contextlib.suppress(Exception):
                await message.nak(delay=delay)
            return "retry"
        log.error("handler failed for the last time; dead-lettering", extra={"fields": fields})
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    "INSERT INTO inbox (consumer, event_id, event_type) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING RETURNING 1",
                    [self.name, envelope.id, envelope.type],
                )
                if await cursor.fetchone() is not None:
                    await self._insert_dead_letter(conn, message, envelope.id, envelope.type, exc, attempt)
                    await self.on_give_up(envelope, data, Tx(conn, self.outbox, attempt), exc, attempt)
        except Exception as give_up_error:
            # Could not even record the failure (database down?): keep the message alive.
            log.error(
                "could not dead-letter; will retry",
                extra={"fields": {**fields, "give_up_error": type(give_up_error).__name__}},
            )
            with contextlib.suppress(Exception):
                await message.nak(delay=self.retry.max_backoff_seconds)
            return "retry"
        with contextlib.suppress(Exception):
            await message.term()
        return "dead_letter"

    async def _insert_dead_letter(
        self,
        conn: AsyncConnection[Any],
        message: Msg,
        event_id: str | None,
        event_type: str | None,
        error: BaseException | str,
        attempt: int,
    ) -> None:
        await conn.execute(
            "INSERT INTO dead_letters (consumer, event_id, event_type, subject, stream_seq, payload, headers,"
            " error, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                self.name,
                event_id,
                event_type,
                message.subject,
                message.metadata.sequence.stream,
                message.data,
                json.dumps(dict(message.headers or {})),
                error if isinstance(error, str) else public_message(error),
                attempt,
            ],
        )

    async def _dead_letter_undecodable(self, message: Msg, error: str, attempt: int) -> None:
        """A message that does not match its contract can never succeed: dead-letter it now."""
        log.error(
            "undecodable event; dead-lettering", extra={"fields": {"consumer": self.name, "error": error}}
        )
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await self._insert_dead_letter(conn, message, None, None, error, attempt)
        except Exception:
            with contextlib.suppress(Exception):
                await message.nak(delay=self.retry.max_backoff_seconds)
            return
        EVENTS_HANDLED.labels(self.name, "unknown", "dead_letter").inc()
        with contextlib.suppress(Exception):
            await message.term()

    async def _ack(self, message: Msg) -> None:
        # A lost ack is harmless (the redelivery hits the inbox), so it is not retried here.
        with contextlib.suppress(Exception):
            await message.ack()
