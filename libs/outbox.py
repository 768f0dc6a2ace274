"""Transactional outbox and its relay to JetStream.

A state change and the events it causes are written in one Postgres transaction
(:meth:`Outbox.add`); the relay publishes committed rows afterwards. Nothing is published
for a transaction that rolled back, and nothing committed is ever lost: a crashed relay
leaves rows unpublished and the next pass picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from psycopg import AsyncConnection

from contracts.envelope import Envelope, cloudevents_headers, encode_envelope, new_event
from contracts.events import EVENT_TYPE_OF, EventData
from libs.bus import Subjects
from libs.database import Pool, check_schema_name, connect
from libs.telemetry import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISHED, inject_headers

log = logging.getLogger(__name__)


class RelayPublishError(Exception):
    """Some events of a relay pass were not acknowledged by JetStream; they stay pending."""


def notify_channel(schema: str) -> str:
    """One channel per service schema, so a commit wakes only that service's relays."""
    return f"outbox_{check_schema_name(schema)}"


class Outbox:
    """Writes events into the caller's transaction."""

    def __init__(self, schema: str, source: str, subjects: Subjects) -> None:
        self.channel = notify_channel(schema)
        self.source = source
        self.subjects = subjects

    async def add(self, conn: AsyncConnection[Any], subject: str, data: EventData) -> Envelope:
        """Stage ``data`` as an event about ``subject`` (a request id or class name).

        Must run inside the transaction that makes the change the event reports.
        """
        event_type = EVENT_TYPE_OF[type(data)]
        envelope = new_event(event_type, self.source, subject, data)
        # Trace context is captured now, in the span that caused the event, not at relay time.
        headers = inject_headers(cloudevents_headers(envelope))
        # One round trip for the row and the wake-up. NOTIFY is transactional: relays are
        # woken only when this transaction commits, and never for one that rolls back.
        await conn.execute(
            "WITH staged AS (INSERT INTO outbox (event_id, event_type, subject, payload, headers)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING 1) SELECT pg_notify(%s, '') FROM staged",
            [
                envelope.id,
                event_type,
                self.subjects.event(event_type),
                encode_envelope(envelope),
                json.dumps(headers),
                self.channel,
            ],
        )
        return envelope


class OutboxRelay:
    """Publishes unpublished outbox rows to JetStream, at least once, deduplicated by event id.

    Correct with any number of relays: each pass locks its rows with ``FOR UPDATE SKIP
    LOCKED`` so relays never publish the same rows concurrently, and rows are selected by
    ``published_at IS NULL`` rather than a "last id" cursor, because ids are assigned at
    insert but become visible at commit, out of order. A row is marked published only
    after JetStream acknowledged it; if the relay dies in between, the row is published
    again with the same ``Nats-Msg-Id`` and the stream drops the duplicate.
    """

    def __init__(
        self,
        pool: Pool,
        js: JetStreamContext,
        *,
        dsn: str,
        schema: str,
        stream: str,
        poll_seconds: float = 1.0,
        batch_size: int = 256,
        publish_timeout: float = 5.0,
    ) -> None:
        self.pool = pool
        self.js = js
        self.dsn = dsn
        self.schema = schema
        self.stream = stream
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.publish_timeout = publish_timeout
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name=f"outbox-listen-{self.schema}"),
            asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}"),
        ]

    async def stop(self) -> None:
        """Stop after a final pass, so events committed before shutdown are not left waiting."""
        self._stopping.set()
        self._wake.set()
        for task in self._tasks[:1]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                published = await self.publish_pending()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = min(30.0, 0.2 * 2**failures)
                log.warning(
                    "outbox relay pass failed",
                    extra={"fields": {"error_type": type(exc).__name__, "retry_in_s": delay}},
                )
                published = 0
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if self._stopping.is_set():
                with contextlib.suppress(Exception):
                    await self.publish_pending()
                return
            if published >= self.batch_size:
                continue  # a full batch: there is probably more waiting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()

    async def _listen(self) -> None:
        """Wake the relay on NOTIFY. Losing the connection only costs latency: polling continues."""
        while not self._stopping.is_set():
            try:
                conn = await connect(self.dsn, self.schema, f"{self.schema}-outbox-listener", autocommit=True)
                async with conn:
                    await conn.execute(f'LISTEN "{notify_channel(self.schema)}"')
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "outbox listener lost its connection",
                    extra={"fields": {"error_type": type(exc).__name__}},
                )
                await asyncio.sleep(1.0)

    async def publish_pending(self) -> int:
        """One relay pass; returns how many rows were published."""
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT seq, event_id, subject, payload, headers, created_at FROM outbox"
                " WHERE published_at IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
                [self.batch_size],
            )
            rows = await cursor.fetchall()
            if not rows:
                OUTBOX_BACKLOG.set(0)
                OUTBOX_OLDEST_AGE.set(0)
                return 0
            OUTBOX_BACKLOG.set(len(rows))
            OUTBOX_OLDEST_AGE.set((datetime.now(UTC) - rows[0]["created_at"]).total_seconds())
            # Publish the whole batch pipelined, then wait for every PubAck.
            futures = []
            for row in rows:
                headers = dict(row["headers"])
                headers["Nats-Msg-Id"] = str(row["event_id"])
                futures.append(
                    await self.js.publish_async(
                        row["subject"], bytes(row["payload"]), stream=self.stream, headers=headers
                    )
                )
            results = await asyncio.gather(
                *(asyncio.wait_for(future, self.publish_timeout) for future in futures),
                return_exceptions=True,
            )
            acked = [
                row["seq"]
                for row, result in zip(rows, results, strict=True)
                if not isinstance(result, BaseException)
            ]
            failed = [
                (row["seq"], type(result).__name__)
                for row, result in zip(rows, results, strict=True)
                if isinstance(result, BaseException)
            ]
            if acked:
                await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY(%s)", [acked])
            for seq, error in failed:
                await conn.execute(
                    "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = %s WHERE seq = %s",
                    [error, seq],
                )
            OUTBOX_PUBLISHED.inc(len(acked))
        if failed:
            # Raised after the commit above, so the rows that were acknowledged stay marked.
            raise RelayPublishError(f"{len(failed)} of {len(rows)} events were not acknowledged")
        return len(acked)
