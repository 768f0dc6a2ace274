"""Idempotent event consumers: the inbox side of exactly-once effects.

Each delivery is handled in one Postgres transaction:

1. insert the event id into the inbox (``ON CONFLICT DO NOTHING``); already there means
   the work was done before, so the delivery is acknowledged and nothing else happens;
2. the handler changes the service's rows and stages outgoing events in the outbox;
3. commit, and only then acknowledge the message.

A handler error rolls the transaction back and NAKs the message with exponential
backoff, so it is redelivered. An error that says a dependency was unreachable
(:func:`libs.errors.is_transient`) is retried with backoff capped at
``max_backoff_seconds`` for ``retry_for_seconds`` of backoff (an hour by default) and is
reported on the request (``request.stage_retrying``) from its second failed attempt on;
any other error gets ``max_attempts`` quick attempts. When the last allowed attempt fails,
the event goes to the ``dead_letters`` table and ``request.failed`` is staged (one
transaction), then the message is terminated. A message is never acknowledged without
either its effect or its dead letter being committed.

Around that: the durable consumer's configuration on the server is derived from the code
(its filter subjects are the handlers' event types and its own redrives, so nothing else is
delivered) and brought in line at every start; a consumer or stream lost on the server is recreated; the
server's own give-up (``max_deliver``, reached only when the process dies on the message
every time) is recorded as a dead letter from its advisory; an event of a newer
``data_version`` than this code reads is parked as a dead letter, not failed.

While the service's database is away the consumer fetches nothing (see
:meth:`EventConsumer._wait_for_database`): an outage longer than the retry budget costs
time, never an event.

Batches (``batched=True``, for handlers that only touch Postgres): the messages of one
fetch whose subjects nobody else is handling are handled in one transaction, in fetch
order: one inbox insert claims them all, each handler runs as it would alone, one commit,
then each is acknowledged. Per message that saves the transaction's own round trips
(``BEGIN``, the claim, ``COMMIT``), most of a consumer's statements when its handlers are
small. Anything out of the ordinary goes the one-by-one way above, with all its
guarantees: a redelivery, a replay, an event that does not decode, and every message of a
batch in which any handler failed (the batch rolls back as a whole, then each is tried
alone, in order). A batched consumer may also declare a *preload*: one read, in the batch's
transaction before its handlers run, of what they would each read (intake locks all the
batch's requests with one ``SELECT … FOR UPDATE``), shared through :attr:`Tx.loaded`; a
handler finds there what the handlers before it in the batch made of it, and on the
one-by-one way ``loaded`` is empty and each handler reads for itself.

Replay (:mod:`libs.replay`, ``platformctl events replay --consumer``): a copy of a stored
event redriven to this durable with the :data:`REPLAY_HEADER` is not dropped as a duplicate.
Each handler's registration declares what a replay does with it (:class:`ReplayPolicy`):
a handler whose effects are idempotent (the same bundle, no new commit for an unchanged
tree, an apply that changes nothing) runs again, with :func:`replaying` true so it can pass
over its own "done already" shortcuts, and the events it stages are dropped (they were
published when it ran first; a replay repairs effects, it does not move any request). Any
other handler is skipped and counted. An event the durable never handled (no inbox row) is
handled as a first delivery, events included.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamConfig
from nats.js.errors import APIError, NotFoundError
from opentelemetry.trace import Span, SpanKind
from psycopg import AsyncConnection

from contracts.catalog import subject_matches
from contracts.envelope import ContractError, Envelope, decode_envelope, new_event
from contracts.events import EVENT_TYPE_OF, LATEST_VERSIONS, EventData, RequestFailed, RequestStageRetrying
from libs.bus import Subjects, retry_jetstream
from libs.database import Pool, without_transaction
from libs.errors import is_database_unavailable, is_transient, public_message
from libs.outbox import Outbox
from libs.settings import ConsumerSettings
from libs.telemetry import (
    CONSUMER_PENDING,
    CONSUMER_RECREATED,
    EVENTS_HANDLED,
    EVENTS_REDELIVERED,
    EVENTS_REPLAYED,
    HANDLER_SECONDS,
    REPLAY_EVENTS_DROPPED,
    Stopwatch,
    bind_request,
    span_from_headers,
)

log = logging.getLogger(__name__)


# Set while a replayed copy of an event this durable handled before is being re-executed.
_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar("replaying", default=False)


def replaying() -> bool:
    """Whether the handler running now re-executes a replayed event it handled before.

    A handler declared :data:`REEXECUTE` reads it to pass over its "already done" shortcut
    (a generation already published or applied) and redo its idempotent work; whatever it
    stages meanwhile is dropped (:meth:`Tx.emit`).
    """
    return _replaying.get()


@dataclass
class Tx:
    """The open transaction a handler works in, and where it stages its events."""

    conn: AsyncConnection[Any]
    outbox: Outbox
    attempt: int = 1
    # A replay's re-execution: the events were published when the handler ran first.
    replaying: bool = False
    # What the consumer's preload read for a whole batch, by subject (a locked record, say),
    # shared by the batch's handlers; empty outside a batch, where each handler reads its own.
    loaded: dict[str, Any] = dataclasses.field(default_factory=dict)

    async def emit(self, subject: str, data: EventData) -> Envelope:
        if self.replaying:
            # Not staged: downstream consumers had the original; a copy would move requests.
            REPLAY_EVENTS_DROPPED.labels(self.outbox.source, EVENT_TYPE_OF[type(data)]).inc()
            return new_event(EVENT_TYPE_OF[type(data)], self.outbox.source, subject, data)
        return await self.outbox.add(self.conn, subject, data)


@dataclass(frozen=True)
class ReplayPolicy:
    """What ``platformctl events replay --consumer`` does with one handler's events.

    ``reexecute``: the handler runs again (its effects are idempotent); otherwise the
    event is skipped and counted. ``reason`` says why, for the dry run and the docs.
    """

    reexecute: bool
    reason: str

    @property
    def action(self) -> str:
        return REEXECUTED if self.reexecute else SKIPPED


# The header a replayed copy carries (its value: who asked for the replay).
REPLAY_HEADER = "platform-replay"
# Replay outcomes (the ``outcome`` label of platform_events_replayed_total).
REEXECUTED, SKIPPED = "re_executed", "skipped"
UNDECLARED = ReplayPolicy(False, "its registration does not declare it idempotent")


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
# A batched consumer's read of what its handlers need, once for the whole batch (the
# envelopes the batch claimed), into :attr:`Tx.loaded`.
Preload = Callable[[list[Envelope], Tx], Awaitable[None]]
GiveUpHook = Callable[[Envelope, Any, Tx, BaseException, int], Awaitable[None]]
# (envelope, data, tx, error, attempt, next_attempt_at): stages the report of a pending retry.
RetryHook = Callable[[Envelope, Any, Tx, BaseException, int, datetime], Awaitable[None]]
StartFrom = Literal["new", "all"]

# A batched consumer fetches up to this many messages per free slot, and at most MAX_BATCH
# (within the durable's max_ack_pending): one transaction then claims and handles them.
BATCH_FETCH_FACTOR = 8
MAX_BATCH = 64
# The first failed attempt is not reported: most failures are gone at the next one.
REPORT_RETRY_FROM_ATTEMPT = 2
# Dead-letter kinds (the ``kind`` column): why the event is there and what replaying needs.
FAILED, UNDECODABLE, PARKED, MAX_DELIVERIES = "failed", "undecodable", "parked", "max_deliveries"
# Probing a database that is away, and retrying a give-up that could not be recorded: from
# the first delay, doubling, up to the last (short enough that recovery is prompt).
DATABASE_PROBE_DELAYS = (0.5, 5.0)


class HandlerTimedOut(TimeoutError):
    """The handler ran past its deadline and was cancelled (its transaction rolled back)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often, how fast and for how long a failing event is tried again."""

    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    ack_wait_seconds: float = 30.0
    # Transient failures (a dependency unreachable) keep being retried for this much backoff.
    retry_for_seconds: float = 0.0
    handler_timeout_seconds: float | None = None

    @classmethod
    def from_settings(cls, settings: ConsumerSettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.consumer_max_attempts,
            backoff_seconds=settings.consumer_backoff_seconds,
            max_backoff_seconds=settings.consumer_max_backoff_seconds,
            ack_wait_seconds=settings.consumer_ack_wait_seconds,
            retry_for_seconds=settings.consumer_retry_for_seconds,
            handler_timeout_seconds=settings.consumer_handler_timeout_seconds,
        )

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, attempt - 1)))

    def backoff_through(self, attempt: int) -> float:
        """The backoff of attempts 1..``attempt`` added up: the wait a retry after it completes."""
        total = 0.0
        for index in range(1, attempt + 1):
            delay = self.delay(index)
            if delay >= self.max_backoff_seconds:
                return total + delay * (attempt - index + 1)
            total += delay
        return total

    def retries(self, attempt: int, *, transient: bool) -> bool:
        """Whether a failure of ``attempt`` is tried again (else it is dead-lettered)."""
        if attempt < self.max_attempts:
            return True
        return transient and self.backoff_through(attempt) <= self.retry_for_seconds

    @property
    def last_attempt(self) -> int:
        """The highest attempt the consumer itself makes (a transient failure every time)."""
        if self.retry_for_seconds <= 0 or self.max_backoff_seconds <= 0:
            return self.max_attempts
        attempt = self.max_attempts
        while self.retries(attempt, transient=True) and attempt < self.max_attempts + 1_000_000:
            attempt += 1
        return attempt

    @property
    def server_max_deliver(self) -> int:
        """``max_deliver`` for the server: the consumer's own attempts plus headroom.

        The consumer dead-letters transactionally at :attr:`last_attempt`; the server gives
        up only on a message that never got that far (the process died on it every time),
        which :meth:`EventConsumer.record_max_deliveries` then records.
        """
        last = self.last_attempt
        return last + max(3, last // 10)

    @property
    def handler_timeout(self) -> float:
        return self.handler_timeout_seconds or 10 * self.ack_wait_seconds


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


async def report_retry(
    envelope: Envelope, data: Any, tx: Tx, error: BaseException, attempt: int, next_attempt_at: datetime
) -> None:
    """Default retry hook: ``request.stage_retrying`` for the request the event is about."""
    request_id = getattr(data, "request_id", None)
    if request_id is None:
        return
    await tx.emit(
        request_id,
        RequestStageRetrying(
            request_id=request_id,
            generation=int(getattr(data, "generation", 0)),
            stage=tx.outbox.source,
            error=public_message(error),
            attempt=attempt,
            next_attempt_at=next_attempt_at,
        ),
    )


async def record_only(envelope: Envelope, data: Any, tx: Tx, error: BaseException, attempts: int) -> None:
    """Give-up hook that reports nothing beyond the dead letter itself.

    For consumers of the events they would report with: intake projects ``request.failed``,
    so a failed projection reported as ``request.failed`` would fail again, and again.
    """


@dataclass
class _Lease:
    """When the in-progress acks of one delivery stop: once its handler is past its deadline."""

    deadline: float | None = None


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

    def free(self, key: str) -> bool:
        """Nobody holds the lock of ``key`` nor waits for it."""
        return key not in self._locks

    async def take_free(self, keys: Iterable[str]) -> None:
        """Hold the locks of ``keys``, every one :meth:`free`: an uncontended acquire never
        suspends, so nobody can queue in between (a later task waits behind the holder)."""
        for key in keys:
            lock = asyncio.Lock()
            self._locks[key] = (lock, 1)
            await lock.acquire()

    def release(self, keys: Iterable[str]) -> None:
        """Let go of locks taken with :meth:`take_free`."""
        for key in keys:
            lock, users = self._locks[key]
            lock.release()
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def supports_filter_subjects(nc: NatsClient) -> bool:
    """Whether the connected server takes several filters per consumer (NATS 2.10 and later)."""
    version = nc.connected_server_version
    return (version.major, version.minor) >= (2, 10)


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
        on_retry: RetryHook | None = report_retry,
        ordered_by_subject: bool = False,
        start_from: StartFrom = "new",
        start_lookback_seconds: float = 0.0,
        stream_config: StreamConfig | None = None,
        startup_timeout: float = 60.0,
        nc: NatsClient | None = None,
        replay_policies: Mapping[str, ReplayPolicy] | None = None,
        batched: bool = False,
        preload: Preload | None = None,
    ) -> None:
        self.name = name
        # Messages of one fetch handled in one transaction (see the module docstring), and
        # what is read for all of them at once before their handlers run.
        self.batched = batched
        self.preload = preload
        # Handlers of events about the same subject run one at a time, in stream order
        # (asyncio locks are FIFO and tasks start in fetch order), so inside this process a
        # later fact about a request is not handled before an earlier one that was delivered
        # first. Not across a failure: an event whose handler fails is nak'd and comes back
        # after its backoff, and a later event of its request may be handled meanwhile (or by
        # another replica). Holding the later one back would spend its deliveries, and the
        # server's max_deliver, on waiting. Handlers therefore tolerate an order a retry
        # changed: intake's projection moves a status forward only and raises OutOfOrder for
        # an event that needs an earlier one; git-publisher's fence is the branch's
        # generation markers.
        self._subject_locks: KeyedLocks | None = KeyedLocks() if ordered_by_subject else None
        outside = [event_type for event_type in handlers if not subject_matches(event_filter, event_type)]
        if outside:
            raise ValueError(f"consumer {name}: handlers for {outside} outside its filter {event_filter!r}")
        self.subjects = subjects
        # The server delivers only what there is a handler for (NATS 2.10 filter_subjects),
        # and the dead letters an operator redrives to this durable alone: the registrations
        # are the one fact, the durable's filters follow from them.
        self.filter_subjects = [
            *sorted(subjects.event(event_type) for event_type in handlers),
            subjects.replays(name),
        ]
        self.handlers = handlers
        # What a replay does with each handled type; undeclared types are skipped.
        self.replay_policies = {
            event_type: (replay_policies or {}).get(event_type, UNDECLARED) for event_type in handlers
        }
        # The give-up outcomes exist at 0 from the start: Prometheus's increase() needs a
        # sample before the first dead letter, or the first one of a type never alerts.
        for event_type in handlers:
            for outcome in ("dead_letter", "parked"):
                EVENTS_HANDLED.labels(name, event_type, outcome)
        self.pool = pool
        self.js = js
        self.nc: NatsClient = nc if nc is not None else js._nc
        self.outbox = outbox
        self.stream = stream
        self.retry = retry
        self.concurrency = concurrency
        self.on_give_up = on_give_up
        self.on_retry = on_retry
        self.start_from = start_from
        self.start_lookback_seconds = start_lookback_seconds
        self.stream_config = stream_config
        self.startup_timeout = startup_timeout
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._subscription: Any = None
        self._advisories: Any = None
        # The server's ack floor as last seen: where a consumer lost on the server resumes.
        self._ack_floor: int | None = None
        # Set when a delivery failed because the database is away: fetching stops until it answers.
        self._database_away = asyncio.Event()
        # Give-ups of the server still being recorded (retried while the database is away).
        self._recordings: set[asyncio.Task[None]] = set()

    # -- the durable consumer on the server ----------------------------------------------------

    def consumer_config(self) -> ConsumerConfig:
        """The configuration the code wants (where a new durable starts is chosen separately)."""
        return ConsumerConfig(
            durable_name=self.name,
            **self._filters(),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.retry.ack_wait_seconds,
            # Finite, with headroom over the consumer's own attempts, which dead-letter
            # transactionally first. Only a message the process dies on every time reaches
            # it; the server then stops redelivering and announces it in an advisory, which
            # record_max_deliveries turns into a dead letter.
            max_deliver=self.retry.server_max_deliver,
            max_ack_pending=max(self.concurrency * 4, 64),
        )

    def _filters(self) -> dict[str, Any]:
        """The durable's filters: one subject per handled type and its redrives (NATS 2.10+)."""
        if supports_filter_subjects(self.nc):
            return {"filter_subjects": self.filter_subjects}
        # A server before 2.10 ignores filter_subjects, so the durable would silently take the
        # whole stream; one filter covering the types and the redrives is the whole stream
        # anyway, and routing acknowledges without decoding what has no handler here (another
        # type, another durable's redrive).
        return {"filter_subject": self.subjects.all_events}

    def _new_consumer_config(self, *, stream_last_seq: int, stream_created: bool) -> ConsumerConfig:
        config = self.consumer_config()
        if stream_created:
            return config  # a new, empty stream: everything in it is new
        if self._ack_floor is not None and self._ack_floor <= stream_last_seq:
            # Recreating a consumer the server lost: resume after what it had acknowledged
            # (handled events before that point would be no-ops through the inbox anyway).
            return dataclasses.replace(
                config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._ack_floor + 1
            )
        if self.start_from == "all":
            return config
        if self.start_lookback_seconds > 0:
            # A new subscriber must not replay the retained history's side effects, but the
            # last minutes cover services that start together with the first events.
            since = datetime.now(UTC) - timedelta(seconds=self.start_lookback_seconds)
            return dataclasses.replace(
                config, deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since
            )
        return dataclasses.replace(config, deliver_policy=DeliverPolicy.NEW)

    async def _jetstream(self, call: Callable[[], Awaitable[Any]], what: str) -> Any:
        return await retry_jetstream(call, f"{what} {self.name}", self.startup_timeout)

    async def provision(self) -> None:
        """Create the durable consumer (and the stream) if missing, else bring its settings in line."""
        stream_created = False
        stream_last_seq = 0
        try:
            stream = await self._jetstream(lambda: self.js.stream_info(self.stream), "stream_info")
            stream_last_seq = stream.state.last_seq
        except NotFoundError:
            if self.stream_config is None:
                raise
            await self._jetstream(lambda: self.js.add_stream(self.stream_config), "add_stream")
            stream_created = True
            CONSUMER_RECREATED.labels(self.name, "stream").inc()
            log.warning("stream was missing; created it", extra={"fields": {"stream": self.stream}})
        try:
            info: ConsumerInfo = await self._jetstream(
                lambda: self.js.consumer_info(self.stream, self.name), "consumer_info"
            )
        except NotFoundError:
            config = self._new_consumer_config(stream_last_seq=stream_last_seq, stream_created=stream_created)
            try:
                await self._jetstream(lambda: self.js.add_consumer(self.stream, config), "add_consumer")
            except APIError:
                # Another replica created it between our lookup and our create (each computes
                # its own start time, so the server refuses ours as a changed start): use theirs.
                info = await self._jetstream(
                    lambda: self.js.consumer_info(self.stream, self.name), "consumer_info"
                )
            else:
                log.warning(
                    "created durable consumer",
                    extra={"fields": {"consumer": self.name, "deliver_policy": str(config.deliver_policy)}},
                )
                return
        self._remember(info)
        await self._reconfigure(info.config)

    def _remember(self, info: ConsumerInfo) -> None:
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else None
        if not info.num_ack_pending and info.delivered is not None and info.delivered.stream_seq:
            # Nothing awaits an ack, so everything delivered is done (a server before 2.10
            # reports a floor of 0 until the first ack, which would mean the whole stream).
            floor = max(floor or 0, info.delivered.stream_seq)
        if floor is not None:
            self._ack_floor = floor

    async def _reconfigure(self, current: ConsumerConfig) -> None:
        desired = self.consumer_config()
        changes = _config_changes(current, desired)
        if not changes:
            return
        if "filter_subjects" in changes and not supports_filter_subjects(self.nc):
            await self._recreate(changes)
            return
        # Where the durable stands is kept: its start settings cannot change, and must not.
        update = dataclasses.replace(
            desired,
            deliver_policy=current.deliver_policy,
            opt_start_seq=current.opt_start_seq,
            opt_start_time=current.opt_start_time,
        )
        try:
            await self._jetstream(lambda: self.js.add_consumer(self.stream, update), "update_consumer")
        except APIError as exc:
            log.error(
                "durable consumer configuration could not be updated; it keeps its old settings "
                "(delete the consumer to have it recreated from the code)",
                extra={"fields": {"consumer": self.name, "changes": changes, "error": exc.description}},
            )
            return
        log.warning(
            "updated durable consumer configuration",
            extra={"fields": {"consumer": self.name, "changes": changes}},
        )

    async def _recreate(self, changes: dict[str, Any]) -> None:
        """A new filter on a server before 2.10: one that takes an updated filter into its
        configuration but then delivers nothing. The durable is deleted and created again,
        resuming after what it had acknowledged (anything redelivered is a no-op through the
        inbox)."""
        # Another replica starting at the same time may have deleted or recreated it first.
        with contextlib.suppress(NotFoundError):
            await self._jetstream(lambda: self.js.delete_consumer(self.stream, self.name), "delete_consumer")
        stream = await self._jetstream(lambda: self.js.stream_info(self.stream), "stream_info")
        config = self._new_consumer_config(stream_last_seq=stream.state.last_seq, stream_created=False)
        with contextlib.suppress(APIError):
            await self._jetstream(lambda: self.js.add_consumer(self.stream, config), "add_consumer")
        log.warning(
            "recreated durable consumer with its new filter",
            extra={"fields": {"consumer": self.name, "changes": changes}},
        )

    async def watch_advisories(self) -> None:
        """Record the server's give-ups on this consumer (``max_deliver`` reached) as dead letters."""
        subject = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.name}"
        # A queue group: one replica records each advisory (and the inbox dedupes the rest).
        self._advisories = await self.nc.subscribe(subject, queue=self.name, cb=self._on_max_deliveries)

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        try:
            body = json.loads(advisory.data)
            stream_seq, deliveries = int(body["stream_seq"]), int(body.get("deliveries") or 0)
        except Exception as exc:
            log.error(
                "unreadable max-deliveries advisory",
                extra={"fields": {"consumer": self.name, "error_type": type(exc).__name__}},
            )
            return
        # Recorded in a task of its own: retrying through a database outage must not hold up
        # the subscription's other advisories.
        task = asyncio.create_task(self._record_until_done(stream_seq, deliveries))
        self._recordings.add(task)
        task.add_done_callback(self._recordings.discard)

    async def _record_until_done(self, stream_seq: int, deliveries: int) -> None:
        """Record the server's give-up, retrying with backoff until it is recorded or the service stops.

        The advisory is core NATS: nobody announces it again, and the server never redelivers
        the message. Dropping it on a failed write would lose the event without a trace, so
        the stream sequence is logged at ERROR first (the message stays in the stream: an
        operator can still find it after a crash) and the write is retried.
        """
        fields = {"consumer": self.name, "stream": self.stream, "stream_seq": stream_seq}
        delay, longest = DATABASE_PROBE_DELAYS
        failures = 0
        while True:
            try:
                await self.record_max_deliveries(stream_seq, deliveries)
                if failures:
                    log.warning("recorded the server's give-up after all", extra={"fields": fields})
                return
            except NotFoundError:
                log.error(
                    "the message the server gave up on is no longer in the stream; not recorded",
                    extra={"fields": fields},
                )
                return
            except Exception as exc:
                failures += 1
                level = logging.ERROR if failures == 1 else logging.WARNING
                log.log(
                    level,
                    "could not record a message the server gave up on; will retry",
                    extra={"fields": {**fields, "attempt": failures, "error_type": type(exc).__name__}},
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                log.error(
                    "stopping with a message the server gave up on not recorded; it is still in the stream",
                    extra={"fields": fields},
                )
                return
            delay = min(longest, delay * 2)

    async def record_max_deliveries(self, stream_seq: int, deliveries: int) -> None:
        """Dead-letter stream message ``stream_seq``, which the server stopped redelivering."""
        raw = await self.js.get_msg(self.stream, stream_seq)
        payload = raw.data or b""
        error = (
            f"the server stopped redelivering after {deliveries} deliveries "
            "(the handler crashed or hung on every one)"
        )
        letter = _Letter(raw.subject or "", stream_seq, payload, dict(raw.headers or {}))
        try:
            envelope = decode_envelope(payload)
        except ContractError:
            envelope = None
        log.error(
            "server gave up on a message; dead-lettering",
            extra={"fields": {"consumer": self.name, "stream_seq": stream_seq, "deliveries": deliveries}},
        )
        async with self.pool.connection() as conn, conn.transaction():
            if envelope is None:
                cursor = await conn.execute(
                    "SELECT 1 FROM dead_letters WHERE consumer = %s AND stream_seq = %s",
                    [self.name, stream_seq],
                )
                if await cursor.fetchone() is None:
                    await self._insert_dead_letter(
                        conn, letter, None, None, error, deliveries, MAX_DELIVERIES
                    )
                return
            if not await self._claim(conn, envelope):
                return  # handled (or dead-lettered) after all
            await self._insert_dead_letter(
                conn, letter, envelope.id, envelope.type, error, deliveries, MAX_DELIVERIES
            )
            try:
                data = envelope.decode_data()
            except ContractError:
                return
            await self.on_give_up(
                envelope, data, Tx(conn, self.outbox, deliveries), HandlerTimedOut(error), deliveries
            )
        EVENTS_HANDLED.labels(self.name, envelope.type, "dead_letter").inc()

    async def _recover(self) -> None:
        """After a failed fetch: recreate the consumer (and stream) if the server lost them."""
        try:
            await self.js.consumer_info(self.stream, self.name)
            return  # still there: the failure was the broker's, and the next fetch retries
        except NotFoundError:
            pass
        except Exception:
            return
        log.error(
            "durable consumer is missing on the server; recreating it",
            extra={"fields": {"consumer": self.name}},
        )
        try:
            await self.provision()
        except Exception as exc:
            log.error(
                "could not recreate the durable consumer; will try again",
                extra={"fields": {"consumer": self.name, "error_type": type(exc).__name__}},
            )
            return
        CONSUMER_RECREATED.labels(self.name, "consumer").inc()

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.provision()
        await self.watch_advisories()
        self._subscription = await self.js.pull_subscribe_bind(durable=self.name, stream=self.stream)
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
        for subscription in (self._subscription, self._advisories):
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        # Give-ups being recorded see the stop, log what is left and end; none outlives the pool.
        if self._recordings:
            await asyncio.wait(set(self._recordings), timeout=5.0)
        for task in list(self._recordings):
            task.cancel()

    async def _run(self) -> None:
        last_lag_check = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if self._database_away.is_set():
                await self._wait_for_database()
                continue
            capacity = self.concurrency - len(self._inflight)
            if capacity <= 0:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                # A short pull keeps shutdown prompt; an idle consumer costs the server a
                # couple of cheap pull requests per second.
                # A batched consumer's fetch becomes one task: it may take more at once.
                wanted = min(capacity * BATCH_FETCH_FACTOR, MAX_BATCH) if self.batched else capacity
                messages = await self._subscription.fetch(wanted, timeout=0.5)
            except TimeoutError:  # asyncio's and nats-py's: nothing arrived in this pull
                messages = []
            except Exception as exc:
                # "No responders" is what a pull on a deleted consumer (or stream) gets.
                log.warning(
                    "fetch failed",
                    extra={"fields": {"consumer": self.name, "error_type": type(exc).__name__}},
                )
                await self._recover()
                await asyncio.sleep(0.5)
                continue
            if self.batched and len(messages) > 1:
                batch, keys, rest = self._take_batch(messages)
                if len(batch) > 1:
                    await self._take_subjects(keys)
                    self._spawn(self._process_batch(batch, keys))
                    messages = rest
            for message in messages:
                self._spawn(self._process(message))
            if loop.time() - last_lag_check > 10:
                last_lag_check = loop.time()
                await self._record_lag()
        if self._inflight:
            await asyncio.wait(self._inflight)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _batchable(self, message: Msg) -> bool:
        """A first delivery, not a replay, of a type whose handler only touches Postgres."""
        if (message.metadata.num_delivered or 1) > 1 or REPLAY_HEADER in (message.headers or {}):
            return False
        return self._handles(message) and callable(self.handlers.get(self._event_type(message)))

    def _take_batch(self, messages: list[Msg]) -> tuple[list[tuple[Msg, Envelope]], list[str], list[Msg]]:
        """Split a fetch into a batch (in fetch order, decoded), its subjects, and the rest.

        A subject goes into the batch with all its messages of this fetch, or not at all, so
        its events stay in order; only subjects nobody is handling qualify (an earlier
        message still running or waiting keeps its turn).
        """
        by_subject: dict[str, list[tuple[Msg, Envelope]]] = {}
        undecoded: list[Msg] = []
        for message in messages:
            try:
                envelope = decode_envelope(message.data)
            except ContractError:
                undecoded.append(message)  # dead-lettered one by one
                continue
            by_subject.setdefault(envelope.subject, []).append((message, envelope))
        keys = [
            subject
            for subject, group in by_subject.items()
            if (self._subject_locks is None or self._subject_locks.free(subject))
            and all(self._batchable(message) for message, _ in group)
        ]
        batch = [item for subject in keys for item in by_subject[subject]]
        batch.sort(key=lambda item: item[0].metadata.sequence.stream)
        chosen = set(keys)
        rest = [
            message for subject, group in by_subject.items() if subject not in chosen for message, _ in group
        ]
        rest = sorted([*rest, *undecoded], key=lambda message: message.metadata.sequence.stream)
        return batch, keys, rest

    async def _take_subjects(self, keys: list[str]) -> None:
        if self._subject_locks is not None:
            await self._subject_locks.take_free(keys)

    async def _process_batch(self, batch: list[tuple[Msg, Envelope]], keys: list[str]) -> None:
        """Handle ``batch`` in one transaction; if that fails, each alone, in order."""
        try:
            try:
                handled = await asyncio.wait_for(self._handle_batch(batch), self.retry.handler_timeout)
            except Exception as exc:
                log.info(
                    "batch failed; handling its events one by one",
                    extra={
                        "fields": {
                            "consumer": self.name,
                            "events": len(batch),
                            "error_type": type(exc).__name__,
                        }
                    },
                )
                handled = False
            if not handled:
                for message, _ in batch:
                    await self._process(message, locked=True)
        finally:
            if self._subject_locks is not None:
                self._subject_locks.release(keys)

    async def _handle_batch(self, batch: list[tuple[Msg, Envelope]]) -> bool:
        """True once every message's handler ran in one committed transaction and each is
        acknowledged; False, with nothing done, when one of them needs the one-by-one way."""
        items: list[tuple[Msg, Envelope, Any, Callable[[Envelope, Any, Tx], Awaitable[None]], str]] = []
        for message, envelope in batch:
            try:
                if envelope.data_version > LATEST_VERSIONS.get(envelope.type, envelope.data_version):
                    return False
                data = envelope.decode_data()
                event_id = str(uuid.UUID(envelope.id))
            except (ContractError, ValueError):
                return False
            handler = self.handlers.get(envelope.type)
            if handler is None or not callable(handler):
                return False
            items.append((message, envelope, data, handler, event_id))
        watch = Stopwatch()
        outcomes: list[str] = []
        loaded: dict[str, Any] = {}
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "INSERT INTO inbox (consumer, event_id, event_type)"
                " SELECT %s, event_id, event_type FROM unnest(%s::uuid[], %s::text[]) AS e(event_id, event_type)"
                " ON CONFLICT DO NOTHING RETURNING event_id::text",
                [self.name, [item[4] for item in items], [item[1].type for item in items]],
            )
            claimed = {
                row[0] if isinstance(row, tuple) else row["event_id"] for row in await cursor.fetchall()
            }
            if self.preload is not None and claimed:
                fresh = [envelope for _, envelope, _, _, event_id in items if event_id in claimed]
                await self.preload(fresh, Tx(conn, self.outbox, 1, loaded=loaded))
            for message, envelope, data, handler, event_id in items:
                if event_id not in claimed:
                    outcomes.append("duplicate")  # handled before (or twice in this fetch)
                    continue
                claimed.discard(event_id)
                token = bind_request(envelope.subject)
                try:
                    with self._span(
                        message, envelope, 1, False, **{"messaging.batch.message_count": len(items)}
                    ):
                        await handler(envelope, data, Tx(conn, self.outbox, 1, loaded=loaded))
                finally:
                    bind_request(None)
                    del token
                outcomes.append("ok")
        # Acknowledged only after the commit, as one by one.
        elapsed = watch.elapsed()
        for (message, envelope, *_), outcome in zip(items, outcomes, strict=True):
            await self._ack(message)
            EVENTS_HANDLED.labels(self.name, envelope.type, outcome).inc()
            HANDLER_SECONDS.labels(self.name, envelope.type).observe(elapsed)
        return True

    @property
    def waiting_for_database(self) -> bool:
        """Whether fetching is paused until the database answers again."""
        return self._database_away.is_set()

    def _note_failure(self, exc: BaseException) -> None:
        """Pause fetching when ``exc`` says the database is away (the probe resumes it)."""
        if is_database_unavailable(exc):
            self._database_away.set()

    async def _wait_for_database(self) -> None:
        """Fetch nothing until ``SELECT 1`` answers, probing with backoff.

        Every delivery counts towards the server's finite ``max_deliver``. Fetching on while
        the database is away would fail and NAK each message again and again until the server
        gives up on it, and its dead letter could not be written either: an outage longer
        than the retry budget would drop events. A pull consumer that does not pull burns no
        deliveries; the messages wait in the stream and come again once the database is back.
        """
        log.warning(
            "database unavailable; consumer stops fetching", extra={"fields": {"consumer": self.name}}
        )
        delay, longest = DATABASE_PROBE_DELAYS
        while not self._stopping.is_set():
            try:
                async with self.pool.connection() as conn:
                    await conn.execute("SELECT 1")
            except Exception:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                delay = min(longest, delay * 2)
                continue
            self._database_away.clear()
            log.warning(
                "database answers again; consumer fetches again", extra={"fields": {"consumer": self.name}}
            )
            return

    async def _record_lag(self) -> None:
        try:
            info = await self.js.consumer_info(self.stream, self.name)
        except NotFoundError:
            await self._recover()
            return
        except Exception:
            return
        self._remember(info)
        CONSUMER_PENDING.labels(self.name).set(info.num_pending or 0)

    async def _keep_alive(self, message: Msg, lease: _Lease) -> None:
        """Extend the lease while a long handler (git push, cluster apply) works, up to its deadline."""
        loop = asyncio.get_running_loop()
        interval = max(1.0, self.retry.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            if lease.deadline is not None and loop.time() > lease.deadline:
                return  # a handler past its deadline is being cancelled; never hold the message forever
            with contextlib.suppress(Exception):
                await message.in_progress()

    def _event_type(self, message: Msg) -> str:
        # The subject names the type in both wire forms (a CloudEvents body carries no ce-type
        # header, and its type is the reverse-DNS one), so routing needs no header and no body.
        return self.subjects.event_type(message.subject)

    def _handles(self, message: Msg) -> bool:
        """A type with a handler, on its own subject or redriven to this durable."""
        addressee = self.subjects.replayed_for(message.subject)
        return addressee in (None, self.name) and self._event_type(message) in self.handlers

    def _is_replay(self, message: Msg) -> bool:
        """A replayed copy (not a dead letter's redrive) addressed to this durable."""
        headers = message.headers or {}
        return REPLAY_HEADER in headers and self.subjects.replayed_for(message.subject) == self.name

    async def _process(self, message: Msg, locked: bool = False) -> None:
        attempt = message.metadata.num_delivered or 1
        if attempt > 1:
            EVENTS_REDELIVERED.labels(self.name, self._event_type(message)).inc()
        # Routed before anything is decoded: what this consumer does not handle (a durable's
        # filter may still be broader during an upgrade, or on a server before 2.10) is
        # acknowledged unread.
        if not self._handles(message):
            EVENTS_HANDLED.labels(self.name, self._event_type(message), "skipped").inc()
            await self._ack(message)
            return
        replay = self._is_replay(message)
        if replay and not self.replay_policies[self._event_type(message)].reexecute:
            # Staged before this code declared the handler not idempotent (an upgrade between
            # the replay and its delivery): skipped here as the replay itself would have.
            EVENTS_REPLAYED.labels(self.name, self._event_type(message), SKIPPED).inc()
            await self._ack(message)
            return
        try:
            envelope = decode_envelope(message.data)
            if envelope.data_version > LATEST_VERSIONS.get(envelope.type, envelope.data_version):
                await self._park(message, envelope, attempt)
                return
            data = envelope.decode_data()
        except ContractError as exc:
            await self._dead_letter_undecodable(message, str(exc), attempt)
            return
        handler = self.handlers.get(envelope.type)
        if handler is None:
            EVENTS_HANDLED.labels(self.name, envelope.type, "skipped").inc()
            await self._ack(message)
            return
        token = bind_request(envelope.subject)
        watch = Stopwatch()
        lease = _Lease()
        keep_alive = asyncio.create_task(self._keep_alive(message, lease))
        try:
            with self._span(message, envelope, attempt, replay):
                outcome = await self._handle(message, envelope, data, handler, attempt, lease, replay, locked)
        finally:
            keep_alive.cancel()
            bind_request(None)
            del token
        EVENTS_HANDLED.labels(self.name, envelope.type, outcome).inc()
        HANDLER_SECONDS.labels(self.name, envelope.type).observe(watch.elapsed())
        if replay and outcome in ("ok", REEXECUTED):
            EVENTS_REPLAYED.labels(self.name, envelope.type, REEXECUTED).inc()

    async def _handle(
        self,
        message: Msg,
        envelope: Envelope,
        data: Any,
        handler: Handler,
        attempt: int,
        lease: _Lease,
        replay: bool = False,
        locked: bool = False,
    ) -> str:
        # ``locked``: the caller (a batch handled one by one after all) holds the subject.
        if self._subject_locks is None or locked:
            return await self._handle_in_time(message, envelope, data, handler, attempt, lease, replay)
        async with self._subject_locks.hold(envelope.subject):
            return await self._handle_in_time(message, envelope, data, handler, attempt, lease, replay)

    async def _handle_in_time(
        self,
        message: Msg,
        envelope: Envelope,
        data: Any,
        handler: Handler,
        attempt: int,
        lease: _Lease,
        replay: bool,
    ) -> str:
        timeout = self.retry.handler_timeout
        lease.deadline = asyncio.get_running_loop().time() + timeout
        handle = self._replay_unordered if replay else self._handle_unordered
        try:
            return await asyncio.wait_for(handle(message, envelope, data, handler, attempt), timeout)
        except TimeoutError:
            # Only wait_for's own deadline gets here (the handler's errors are caught inside):
            # the handler was cancelled, its transaction rolled back; try again later.
            error = HandlerTimedOut(f"handler ran past its {timeout:g}s deadline")
            return await self._on_error(message, envelope, data, error, attempt, replay=replay)

    async def _seen(self, event_id: str) -> bool:
        async with without_transaction(self.pool) as conn:
            cursor = await conn.execute(
                "SELECT 1 FROM inbox WHERE consumer = %s AND event_id = %s", [self.name, event_id]
            )
            return await cursor.fetchone() is not None

    async def _claim(self, conn: AsyncConnection[Any], envelope: Envelope) -> bool:
        """Insert the event's inbox row; False when it was there already (handled before)."""
        cursor = await conn.execute(
            "INSERT INTO inbox (consumer, event_id, event_type) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            [self.name, envelope.id, envelope.type],
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
                fresh = await self._claim(conn, envelope)
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

    async def _replay_unordered(
        self, message: Msg, envelope: Envelope, data: Any, handler: Handler, attempt: int
    ) -> str:
        """Re-execute a replayed event: no duplicate check, and nothing staged if it was handled before.

        Whether it was is known only inside the transaction (the inbox row), but a two-phase
        handler's side effect runs before it: it runs in replay mode whenever the row is
        there now, and a row that appears meanwhile (a concurrent first delivery) only
        means the idempotent work ran twice.
        """
        seen = await self._seen(envelope.id)
        token = _replaying.set(seen)
        try:
            prepared: Any = None
            if not callable(handler):
                prepared = await handler.prepare(envelope, data)
            async with self.pool.connection() as conn, conn.transaction():
                fresh = await self._claim(conn, envelope)
                tx = Tx(conn, self.outbox, attempt, replaying=not fresh)
                if callable(handler):
                    await handler(envelope, data, tx)
                else:
                    await handler.apply(envelope, data, tx, prepared)
        except Exception as exc:
            return await self._on_error(message, envelope, data, exc, attempt, replay=True)
        finally:
            _replaying.reset(token)
        await self._ack(message)
        return "ok" if fresh else REEXECUTED

    async def _on_error(
        self, message: Msg, envelope: Envelope, data: Any, exc: Exception, attempt: int, replay: bool = False
    ) -> str:
        self._note_failure(exc)
        transient = is_transient(exc)
        fields = {
            "consumer": self.name,
            "event_type": envelope.type,
            "event_id": envelope.id,
            "attempt": attempt,
            "transient": transient,
            "error_type": type(exc).__name__,
            "error": public_message(exc),
        }
        if self.retry.retries(attempt, transient=transient):
            delay = self.retry.delay(attempt)
            log.warning("handler failed; will retry", extra={"fields": {**fields, "retry_in_s": delay}})
            if transient and attempt >= REPORT_RETRY_FROM_ATTEMPT:
                await self._report_retry(envelope, data, exc, attempt, delay)
            with contextlib.suppress(Exception):
                await message.nak(delay=delay)
            return "retry"
        log.error("handler failed for the last time; dead-lettering", extra={"fields": fields})
        try:
            async with self.pool.connection() as conn, conn.transaction():
                fresh = await self._claim(conn, envelope)
                if fresh or replay:
                    letter = _Letter.of(message)
                    await self._insert_dead_letter(
                        conn, letter, envelope.id, envelope.type, exc, attempt, FAILED
                    )
                if fresh:
                    # A failed re-execution is kept as a dead letter only: the request it is
                    # about was settled when the event was handled first, nothing to report.
                    await self.on_give_up(envelope, data, Tx(conn, self.outbox, attempt), exc, attempt)
        except Exception as give_up_error:
            # Could not even record the failure (database down?): keep the message alive.
            self._note_failure(give_up_error)
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

    async def _report_retry(
        self, envelope: Envelope, data: Any, exc: Exception, attempt: int, delay: float
    ) -> None:
        """Stage the retry report in its own transaction (the handler's rolled back); best effort."""
        if self.on_retry is None:
            return
        next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        on_retry = self.on_retry

        async def stage() -> None:
            async with self.pool.connection() as conn, conn.transaction():
                await on_retry(envelope, data, Tx(conn, self.outbox, attempt), exc, attempt, next_attempt_at)

        try:
            # Bounded: when the database itself is what is down, the retry must not wait on it.
            await asyncio.wait_for(stage(), timeout=5.0)
        except Exception as report_error:
            log.warning(
                "could not report the retry",
                extra={"fields": {"consumer": self.name, "error_type": type(report_error).__name__}},
            )

    async def _insert_dead_letter(
        self,
        conn: AsyncConnection[Any],
        letter: _Letter,
        event_id: str | None,
        event_type: str | None,
        error: BaseException | str,
        attempt: int,
        kind: str,
    ) -> None:
        await conn.execute(
            "INSERT INTO dead_letters (consumer, event_id, event_type, subject, stream_seq, payload, headers,"
            " error, attempts, kind) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                self.name,
                event_id,
                event_type,
                letter.subject,
                letter.stream_seq,
                letter.payload,
                json.dumps(letter.headers),
                error if isinstance(error, str) else public_message(error),
                attempt,
                kind,
            ],
        )

    async def _park(self, message: Msg, envelope: Envelope, attempt: int) -> None:
        """An event from a newer producer: kept as a ``parked`` dead letter to replay after the upgrade.

        Not a failure: no ``request.failed``, no inbox row (the replay handles it afresh).
        """
        known = LATEST_VERSIONS.get(envelope.type)
        error = (
            f"parked: newer version (v{envelope.data_version} of {envelope.type}; this consumer reads "
            f"up to v{known}); replay it once the consumer is upgraded"
        )
        log.warning(
            "event of a newer version parked",
            extra={"fields": {"consumer": self.name, "event_id": envelope.id, "error": error}},
        )
        try:
            async with self.pool.connection() as conn, conn.transaction():
                letter = _Letter.of(message)
                await self._insert_dead_letter(
                    conn, letter, envelope.id, envelope.type, error, attempt, PARKED
                )
        except Exception as exc:
            self._note_failure(exc)
            with contextlib.suppress(Exception):
                await message.nak(delay=self.retry.max_backoff_seconds)
            return
        EVENTS_HANDLED.labels(self.name, envelope.type, "parked").inc()
        await self._ack(message)

    async def _dead_letter_undecodable(self, message: Msg, error: str, attempt: int) -> None:
        """A message that does not match its contract can never succeed: dead-letter it now."""
        log.error(
            "undecodable event; dead-lettering", extra={"fields": {"consumer": self.name, "error": error}}
        )
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await self._insert_dead_letter(
                    conn, _Letter.of(message), None, None, error, attempt, UNDECODABLE
                )
        except Exception as exc:
            self._note_failure(exc)
            with contextlib.suppress(Exception):
                await message.nak(delay=self.retry.max_backoff_seconds)
            return
        EVENTS_HANDLED.labels(self.name, "unknown", "dead_letter").inc()
        with contextlib.suppress(Exception):
            await message.term()

    def _span(
        self, message: Msg, envelope: Envelope, attempt: int, replay: bool, **attributes: Any
    ) -> contextlib.AbstractContextManager[Span]:
        """The consumer span of handling ``message``, continuing the trace its headers carry."""
        return span_from_headers(
            f"{self.name} {envelope.type}",
            message.headers,
            SpanKind.CONSUMER,
            **{
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.subject,
                "messaging.consumer.group.name": self.name,
                "messaging.message.id": envelope.id,
                "platform.attempt": attempt,
                "platform.replay": replay,
                **attributes,
            },
        )

    async def _ack(self, message: Msg) -> None:
        # A lost ack is harmless (the redelivery hits the inbox), so it is not retried here.
        with contextlib.suppress(Exception):
            await message.ack()


@dataclass(frozen=True)
class _Letter:
    """What a dead letter keeps of a stream message."""

    subject: str
    stream_seq: int | None
    payload: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, message: Msg) -> _Letter:
        return cls(
            message.subject, message.metadata.sequence.stream, message.data, dict(message.headers or {})
        )


def _filters(config: ConsumerConfig) -> list[str]:
    if config.filter_subjects:
        return sorted(config.filter_subjects)
    return [config.filter_subject] if config.filter_subject else []


def _config_changes(current: ConsumerConfig, desired: ConsumerConfig) -> dict[str, Any]:
    """The settings where the durable on the server differs from the code: ``{field: [now, wanted]}``."""
    pairs: dict[str, tuple[Any, Any]] = {
        "ack_wait": (current.ack_wait, desired.ack_wait),
        "max_deliver": (current.max_deliver, desired.max_deliver),
        "max_ack_pending": (current.max_ack_pending, desired.max_ack_pending),
        "backoff": (list(current.backoff or []), list(desired.backoff or [])),
        "filter_subjects": (_filters(current), _filters(desired)),
    }
    return {name: [now, wanted] for name, (now, wanted) in pairs.items() if now != wanted}
