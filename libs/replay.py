"""Replay of the stream to a service's own consumers (``platformctl events replay --consumer``).

Re-publishing a stored event changes nothing: every consumer finds the event id in its inbox
and drops the copy (:mod:`libs.inbox`). A replay instead reads the stream from a sequence or a
time, keeps the messages of the types the service's durables handle, and for each durable
and type does what the handler's registration declares (:class:`libs.inbox.ReplayPolicy`):

- ``re-execute``: the message is staged in the service's outbox, addressed to that durable
  alone (``<events prefix>.replay.<durable>.<type>``, :meth:`libs.bus.Subjects.replay`, the
  subject its redriven dead letters use) with the :data:`libs.inbox.REPLAY_HEADER`, under a
  fresh ``Nats-Msg-Id`` (the stream's duplicate window would drop the copy otherwise). The
  relay publishes the rows in order per request; the durable re-executes the handler;
- ``skip``: counted (``platform_events_replayed_total{outcome="skipped"}``) and reported.

A dry run reads the same messages and stages nothing. Every stage of one page is one
transaction: either all of the page's copies are handed to the relay or none.

The stream is read through a consumer of the service's own, ``<service>-replay`` (created for
the page, acknowledging nothing, deleted afterwards; it lapses on its own if the process dies),
which the service's NATS identity may create (``services/tools/nats_permissions.py``). One
call reads a bounded page (a number of messages, a share of the RPC deadline), so a long
stream is replayed in several calls, each continuing at ``next_sequence`` up to the same
``to_sequence``; platformctl makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from psycopg import AsyncConnection

from contracts.envelope import ContractError, decode_envelope
from contracts.replies import ReplayedType, ReplayReport
from contracts.rpc import ReplayEvents
from libs.bus import Subjects, durable_name
from libs.database import Pool
from libs.errors import Unavailable, ValidationFailed
from libs.inbox import REPLAY_HEADER, SKIPPED, EventConsumer, supports_filter_subjects
from libs.telemetry import EVENTS_REPLAYED

log = logging.getLogger(__name__)

# Messages read per call: enough for a busy day of one service, small enough for the deadline.
PAGE_MESSAGES = 5000
FETCH_BATCH = 256
# A clock a little ahead of the server's is no reason to refuse a start time.
CLOCK_SKEW = timedelta(seconds=5)
# The reader lapses on the server this long after its last pull (a process that died mid-page).
READER_INACTIVE_SECONDS = 30.0


def reader_name(service: str) -> str:
    """The consumer a replay of ``service`` reads the stream through."""
    return durable_name(service, "replay")


@dataclass
class _Tally:
    messages: int = 0


@dataclass
class _Page:
    first: int | None = None
    last: int | None = None
    done: bool = False
    tallies: dict[tuple[str, str], _Tally] = field(default_factory=dict)


class StreamReplay:
    """Serves ``<service>.replay_events`` over the service's durable consumers."""

    def __init__(
        self,
        *,
        service: str,
        consumers: Sequence[EventConsumer],
        pool: Pool,
        js: JetStreamContext,
        nc: NatsClient,
        subjects: Subjects,
        stream: str,
        outbox_channel: str,
        budget_seconds: float,
    ) -> None:
        self.service = service
        self.consumers = consumers
        self.pool = pool
        self.js = js
        self.nc = nc
        self.subjects = subjects
        self.stream = stream
        self.outbox_channel = outbox_channel
        self.budget_seconds = budget_seconds
        self.reader = reader_name(service)
        # One page at a time in this process: they share the reader's name.
        self._lock = asyncio.Lock()

    async def replay(self, command: ReplayEvents) -> ReplayReport:
        """Re-drive (or count) one page of the range; see the module docstring."""
        body = command.body
        info = await self.js.stream_info(self.stream)
        last = info.state.last_seq
        to_sequence = min(body.to_sequence or last, last)
        self._check_start(body.from_sequence, body.from_time, last)
        page = _Page()
        if last and to_sequence >= (body.from_sequence or 1):
            async with self._lock:
                page = await self._read(command, to_sequence)
        return self._report(command, page, to_sequence)

    @staticmethod
    def _check_start(from_sequence: int | None, from_time: datetime | None, last: int) -> None:
        if from_sequence is not None and from_sequence > last:
            raise ValidationFailed(
                f"from_sequence {from_sequence} is in the future: the stream's last message is {last}",
                details=[
                    {"field": "from_sequence", "message": f"must be at most {last} (the stream's last)"}
                ],
            )
        if from_time is not None and from_time > datetime.now(UTC) + CLOCK_SKEW:
            raise ValidationFailed(
                f"from_time {from_time.isoformat()} is in the future",
                details=[{"field": "from_time", "message": "must not be in the future"}],
            )

    def _handled_subjects(self) -> list[str]:
        return sorted({self.subjects.event(t) for consumer in self.consumers for t in consumer.handlers})

    def _reader_config(self, command: ReplayEvents) -> ConsumerConfig:
        body = command.body
        start: dict[str, Any] = (
            {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": body.from_sequence}
            if body.from_sequence is not None
            else {"deliver_policy": DeliverPolicy.BY_START_TIME, "opt_start_time": body.from_time}
        )
        # Before NATS 2.10 one filter: the whole stream, and the types are picked here.
        filters: dict[str, Any] = (
            {"filter_subjects": self._handled_subjects()}
            if supports_filter_subjects(self.nc)
            else {"filter_subject": self.subjects.all_events}
        )
        return ConsumerConfig(
            name=self.reader,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=READER_INACTIVE_SECONDS,
            mem_storage=True,
            num_replicas=1,
            **start,
            **filters,
        )

    async def _read(self, command: ReplayEvents, to_sequence: int) -> _Page:
        # A reader left by a page that died is in the way (it would start where that one did).
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(self.stream, self.reader)
        await self.js.add_consumer(self.stream, self._reader_config(command))
        subscription = await self.js.pull_subscribe_bind(durable=self.reader, stream=self.stream)
        try:
            if command.body.dry_run:
                return await self._pull(subscription, to_sequence, None, command)
            async with self.pool.connection() as conn, conn.transaction():
                page = await self._pull(subscription, to_sequence, conn, command)
                await conn.execute("SELECT pg_notify(%s, '')", [self.outbox_channel])
            return page
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, self.reader)

    async def _pull(
        self, subscription: Any, to_sequence: int, conn: AsyncConnection[Any] | None, command: ReplayEvents
    ) -> _Page:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget_seconds
        page = _Page()
        read = 0
        while read < PAGE_MESSAGES and loop.time() < deadline:
            try:
                messages = await subscription.fetch(min(FETCH_BATCH, PAGE_MESSAGES - read), timeout=0.5)
            except TimeoutError:
                # A slow or busy server answers a pull late: the range is over only when the
                # reader has nothing left to deliver, not when one pull came back empty.
                if not (await subscription.consumer_info()).num_pending:
                    page.done = True
                    return page
                continue
            for message in messages:
                sequence = message.metadata.sequence.stream
                if sequence > to_sequence:
                    page.done = True
                    return page
                read += 1
                page.first = sequence if page.first is None else page.first
                page.last = sequence
                await self._take(message, conn, command, page)
                if sequence == to_sequence or not message.metadata.num_pending:
                    page.done = True
                    return page
        return page

    async def _take(
        self, message: Msg, conn: AsyncConnection[Any] | None, command: ReplayEvents, page: _Page
    ) -> None:
        if self.subjects.replayed_for(message.subject) is not None:
            return  # a redrive copy, not an event as it happened
        headers = dict(message.headers or {})
        event_type = headers.get("ce-type") or self.subjects.event_type(message.subject)
        for consumer in self.consumers:
            policy = consumer.replay_policies.get(event_type)
            if event_type not in consumer.handlers or policy is None:
                continue
            page.tallies.setdefault((consumer.name, event_type), _Tally()).messages += 1
            if conn is None:
                continue
            if not policy.reexecute:
                EVENTS_REPLAYED.labels(consumer.name, event_type, SKIPPED).inc()
                continue
            await self._stage(conn, consumer.name, event_type, message, headers, command.replayed_by)

    async def _stage(
        self,
        conn: AsyncConnection[Any],
        durable: str,
        event_type: str,
        message: Msg,
        headers: dict[str, str],
        replayed_by: str,
    ) -> None:
        copy = {k: v for k, v in headers.items() if k.lower() not in ("nats-msg-id", "nats-expected-stream")}
        copy[REPLAY_HEADER] = replayed_by
        try:
            # Ordered with the request's other events in the relay: a teardown's copy never
            # overtakes the bundle's.
            ordering_key: str | None = decode_envelope(message.data).subject
        except ContractError:
            ordering_key = None
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, subject, ordering_key, payload, headers)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                uuid.uuid4(),
                event_type,
                self.subjects.replay(durable, event_type),
                ordering_key,
                message.data,
                json.dumps(copy),
            ],
        )

    def _report(self, command: ReplayEvents, page: _Page, to_sequence: int) -> ReplayReport:
        policies = {consumer.name: consumer.replay_policies for consumer in self.consumers}
        types = [
            ReplayedType(
                consumer=durable,
                event_type=event_type,
                messages=tally.messages,
                action="re-execute" if policies[durable][event_type].reexecute else "skip",
                reason=policies[durable][event_type].reason,
            )
            for (durable, event_type), tally in sorted(page.tallies.items())
        ]
        next_sequence = None if page.done or page.last is None else page.last + 1
        if page.last is None and not page.done:
            # Read nothing within the budget (a very slow server): try again from the same place.
            if command.body.from_sequence is None:
                # A time has no sequence to continue from, and "no next" would read as "done".
                raise Unavailable(
                    f"the stream delivered nothing from {command.body.from_time} within "
                    f"{self.budget_seconds:g} s, so nothing was replayed; run the replay again"
                )
            next_sequence = command.body.from_sequence
        report = ReplayReport(
            service=self.service,
            dry_run=command.body.dry_run,
            from_sequence=page.first,
            to_sequence=to_sequence,
            next_sequence=next_sequence,
            re_executed=sum(t.messages for t in types if t.action == "re-execute"),
            skipped=sum(t.messages for t in types if t.action == "skip"),
            types=types,
        )
        log.warning(
            "events replayed" if not command.body.dry_run else "replay planned (dry run)",
            extra={
                "fields": {
                    "replayed_by": command.replayed_by,
                    "from_sequence": page.first,
                    "to_sequence": to_sequence,
                    "next_sequence": next_sequence,
                    "re_executed": report.re_executed,
                    "skipped": report.skipped,
                }
            },
        )
        return report
