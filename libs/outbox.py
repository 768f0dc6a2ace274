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

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError
from psycopg import AsyncConnection

from contracts.catalog import subject_matches
from contracts.envelope import (
    DEFAULT_SCHEMA_BASE_URL,
    Envelope,
    cloudevents_headers,
    earlier_form_headers,
    encode_earlier_form,
    encode_envelope,
    new_event,
)
from contracts.events import EVENT_TYPE_OF, EventData
from libs.bus import Subjects
from libs.database import Pool, check_schema_name, connect
from libs.telemetry import (
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PUBLISHED,
    OUTBOX_QUARANTINED,
    OUTBOX_QUARANTINED_ROWS,
    inject_headers,
)

log = logging.getLogger(__name__)

# How long a wave's unanswered publishes are waited for once the others were answered.
STRAGGLER_GRACE = 1.0


class RelayPublishError(Exception):
    """Some events of a relay pass were not acknowledged by JetStream; they stay pending.

    ``published`` says how many of the pass's rows were acknowledged all the same.
    """

    def __init__(self, message: str, published: int = 0) -> None:
        super().__init__(message)
        self.published = published


class Rejected(Exception):
    """JetStream (or the client, before sending) refused an event for good: the same bytes
    on the same subject can never be accepted. Counted in ``outbox.rejections``; enough of
    them quarantine the row, while transient failures (timeouts, no connection, JetStream
    not ready) never do."""


def notify_channel(schema: str) -> str:
    """One channel per service schema, so a commit wakes only that service's relays."""
    return f"outbox_{check_schema_name(schema)}"


class Outbox:
    """Writes events into the caller's transaction."""

    def __init__(
        self,
        schema: str,
        source: str,
        subjects: Subjects,
        *,
        schema_base: str = DEFAULT_SCHEMA_BASE_URL,
        wire_form: str = "cloudevents",
    ) -> None:
        self.channel = notify_channel(schema)
        self.source = source
        self.subjects = subjects
        self.schema_base = schema_base
        self.earlier_form = wire_form == "envelope"

    def _wire(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]:
        if self.earlier_form:
            return encode_earlier_form(envelope), earlier_form_headers(envelope)
        return encode_envelope(envelope, self.schema_base), cloudevents_headers(envelope)

    async def add(self, conn: AsyncConnection[Any], subject: str, data: EventData) -> Envelope:
        """Stage ``data`` as an event about ``subject`` (a request id or class name).

        Must run inside the transaction that makes the change the event reports.
        """
        event_type = EVENT_TYPE_OF[type(data)]
        envelope = new_event(event_type, self.source, subject, data)
        # Encoded now, in the form this release writes: a row staged by an older release is
        # relayed in its own form, which consumers still read (decode_envelope).
        payload, wire_headers = self._wire(envelope)
        # Trace context is captured now, in the span that caused the event, not at relay time.
        headers = inject_headers(wire_headers)
        # One round trip for the row and the wake-up. NOTIFY is transactional: relays are
        # woken only when this transaction commits, and never for one that rolls back.
        await conn.execute(
            "WITH staged AS (INSERT INTO outbox (event_id, event_type, subject, ordering_key, payload, headers)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING 1) SELECT pg_notify(%s, '') FROM staged",
            [
                envelope.id,
                event_type,
                self.subjects.event(event_type),
                subject,
                payload,
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

    Events of one request (one ``ordering_key``) reach the stream in ``seq`` order:
    a relay publishes a row only when every earlier pending row of its key is in its own
    batch (one a second relay holds locked makes it wait), and publishes a key's rows one
    wave at a time, the next only after the previous was acknowledged, so a failed row is
    never overtaken by a later one of its request.

    A row JetStream refuses for good (:class:`Rejected`: larger than the server's
    ``max_payload``, a subject no stream covers, a 4xx answer) is quarantined after
    ``quarantine_after`` refusals: set aside with its reason, listed as a dead letter of
    kind ``outbox`` and released to the relay again by replaying that dead letter. The
    rows behind it, its own request's included, go on.
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
        quarantine_after: int = 5,
    ) -> None:
        self.pool = pool
        self.js = js
        self.dsn = dsn
        self.schema = schema
        self.stream = stream
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.publish_timeout = publish_timeout
        self.quarantine_after = quarantine_after
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
        with contextlib.suppress(Exception):
            await self.count_quarantined()
        while True:
            try:
                published = await self.publish_pending()
                failures = 0
            except Exception as exc:
                published = exc.published if isinstance(exc, RelayPublishError) else 0
                # Back off only when nothing moved (NATS or Postgres down): a pass that
                # published others around a failing row keeps the normal pace, so one bad
                # row does not delay everyone's events by the backoff.
                failures = 0 if published else failures + 1
                delay = min(30.0, 0.2 * 2**failures) if failures else self.poll_seconds
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
        """One relay pass; returns how many rows were published.

        Raises :class:`RelayPublishError` after committing when some rows failed (they stay
        pending, or are quarantined when refused often enough).
        """
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(_CLAIM, [self.batch_size])
            batch = await cursor.fetchall()
            if not batch:
                OUTBOX_BACKLOG.set(0)
                OUTBOX_OLDEST_AGE.set(0)
                return 0
            OUTBOX_BACKLOG.set(len(batch))
            OUTBOX_OLDEST_AGE.set((datetime.now(UTC) - batch[0]["created_at"]).total_seconds())
            # A row whose key has an earlier pending row outside this batch (locked by another
            # relay, or committed after this pass began) waits for a later pass.
            rows = [row for row in batch if not row["waits"]]
            outcomes = await self._publish_in_order(rows)
            acked = [seq for seq, error in outcomes.items() if error is None]
            failed = {seq: error for seq, error in outcomes.items() if error is not None}
            if acked:
                await conn.execute("UPDATE outbox SET published_at = now() WHERE seq = ANY(%s)", [acked])
            quarantined = 0
            for seq, error in failed.items():
                quarantined += await self._record_failure(conn, seq, error)
            OUTBOX_PUBLISHED.inc(len(acked))
        if quarantined:
            OUTBOX_QUARANTINED.inc(quarantined)
            with contextlib.suppress(Exception):
                await self.count_quarantined()
        if len(failed) > quarantined:
            # Raised after the commit above, so the rows that were acknowledged stay marked.
            raise RelayPublishError(
                f"{len(failed)} of {len(rows)} events were not acknowledged", published=len(acked)
            )
        return len(acked)

    async def count_quarantined(self) -> int:
        """Refresh the gauge of quarantined rows (on start and after quarantining)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute("SELECT count(*) AS n FROM outbox WHERE quarantined_at IS NOT NULL")
            row = await cursor.fetchone()
        count = int(row["n"]) if row else 0
        OUTBOX_QUARANTINED_ROWS.set(count)
        return count

    async def _publish_in_order(self, rows: list[dict[str, Any]]) -> dict[int, BaseException | None]:
        """Publish ``rows`` (in seq order) wave by wave: a key's n-th row is in the n-th wave.

        Within a wave everything is pipelined. A key whose row failed sends nothing more in
        this pass: had its later row been sent, it could be stored before the failed one
        is retried. Rows not sent get no outcome and stay pending, untouched.
        """
        waves: list[list[dict[str, Any]]] = []
        position: dict[str, int] = {}
        for row in rows:
            key = row["ordering_key"]
            index = 0 if key is None else position.get(key, 0)
            if key is not None:
                position[key] = index + 1
            if index == len(waves):
                waves.append([])
            waves[index].append(row)
        outcomes: dict[int, BaseException | None] = {}
        halted: set[str] = set()
        for wave in waves:
            sendable = [row for row in wave if row["ordering_key"] not in halted]
            for row, outcome in zip(sendable, await self._publish_wave(sendable), strict=True):
                outcomes[row["seq"]] = outcome
                if outcome is not None and row["ordering_key"] is not None:
                    halted.add(row["ordering_key"])
        return outcomes

    async def _publish_wave(self, rows: list[dict[str, Any]]) -> list[BaseException | None]:
        sent: list[tuple[asyncio.Future[Any] | BaseException, bytes, dict[str, str]]] = []
        max_payload = self._max_payload()
        for row in rows:
            headers = dict(row["headers"])
            headers["Nats-Msg-Id"] = str(row["event_id"])
            headers[Header.EXPECTED_STREAM] = self.stream  # what publish_async adds for stream=
            payload = bytes(row["payload"])
            size = len(payload) + _header_bytes(headers)
            if max_payload and size > max_payload:
                # Checked here because the server counts headers too and answers an oversized
                # message by closing the connection, which would look like an outage forever.
                refused = Rejected(
                    f"message of {size} bytes exceeds the server's max_payload ({max_payload})"
                )
                sent.append((refused, payload, headers))
                continue
            try:
                future = await self.js.publish_async(
                    row["subject"], payload, stream=self.stream, headers=headers
                )
            except Exception as exc:  # raised before sending: not connected, too large, stalled
                sent.append((exc, payload, headers))
                continue
            sent.append((future, payload, headers))
        await self._settle([item for item, _, _ in sent if isinstance(item, asyncio.Future)])
        answers = await asyncio.gather(
            *(self._answer(row["subject"], *item) for row, item in zip(rows, sent, strict=True))
        )
        return [
            None if answer is None else await self._classify(row["subject"], answer)
            for row, answer in zip(rows, answers, strict=True)
        ]

    async def _settle(self, futures: list[asyncio.Future[Any]]) -> None:
        """Wait for the answers to a wave: up to ``publish_timeout`` while none came, and no
        more than :data:`STRAGGLER_GRACE` past the latest one once some did.

        JetStream answers a stream's publishes as it stores them; a row still unanswered
        well after the rows around it were answered has lost its answer (see
        :meth:`_publish_again`). Waiting the full timeout for it would hold back the
        wave's acknowledged rows, and the next waves, on every pass.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        waiting = set(futures)
        while waiting:
            left = deadline - loop.time()
            if len(waiting) < len(futures):
                left = min(left, STRAGGLER_GRACE)
            if left <= 0:
                return
            done, waiting = await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return

    async def _answer(
        self, subject: str, sent: asyncio.Future[Any] | BaseException, payload: bytes, headers: dict[str, str]
    ) -> BaseException | None:
        """What JetStream answered to one row: None (stored), or the error."""
        if isinstance(sent, BaseException):
            return sent
        if not sent.done():
            sent.cancel()  # frees its place among the client's pending async publishes
            return await self._publish_again(subject, payload, headers)
        return None if sent.cancelled() else sent.exception()

    async def _publish_again(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> BaseException | None:
        """Publish a row whose pipelined publish was not answered once more, synchronously.

        nats-py 2.16 loses JetStream's error answers to ``publish_async``: its reply handler
        raises the :class:`APIError` instead of setting it on the future
        (https://github.com/nats-io/nats.py/issues/985), so a refusal for good (a 4xx such
        as the stream's ``max_msg_size``) would look like a timeout, which is transient:
        the row would never be quarantined and its request's later events would wait
        behind it forever. The synchronous publish reads the answer correctly. It carries
        the same ``Nats-Msg-Id``, so if the first publish was stored after all, the stream
        drops this one as a duplicate and acknowledges it. A timeout or a lost connection
        stays transient.
        """
        try:
            await self.js.publish(
                subject, payload, timeout=self.publish_timeout, stream=self.stream, headers=headers
            )
        except Exception as exc:
            return exc
        return None

    def _max_payload(self) -> int:
        client = getattr(self.js, "_nc", None)  # the JetStream context's connection
        return int(getattr(client, "max_payload", 0) or 0)

    async def _classify(self, subject: str, exc: BaseException) -> BaseException:
        """``exc`` as it is, or as :class:`Rejected` when publishing it again cannot succeed."""
        if isinstance(exc, Rejected):
            return exc
        if isinstance(exc, nats.errors.MaxPayloadError):
            return Rejected("message exceeds the server's max_payload")
        if isinstance(exc, NoStreamResponseError):
            # Also what a stream being created or electing a leader answers: only a stream
            # that is there and does not take this subject makes it permanent.
            if await self._stream_refuses(subject):
                return Rejected(f"no stream takes subject {subject} (stream {self.stream})")
            return exc
        if isinstance(exc, APIError) and exc.code is not None and 400 <= exc.code < 500:
            return Rejected(
                f"JetStream refused the event: {exc.description} (code {exc.code}, err {exc.err_code})"
            )
        return exc

    async def _stream_refuses(self, subject: str) -> bool:
        try:
            info = await self.js.stream_info(self.stream)
        except Exception:
            return False  # a missing stream is recreated by the kit; JetStream down is transient
        return not any(subject_matches(pattern, subject) for pattern in info.config.subjects or [])

    async def _record_failure(self, conn: AsyncConnection[Any], seq: int, error: BaseException) -> int:
        """Count the failure on the row; 1 when this refusal quarantined it, else 0."""
        if not isinstance(error, Rejected):
            await conn.execute(
                "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = %s WHERE seq = %s",
                [type(error).__name__, seq],
            )
            return 0
        cursor = await conn.execute(
            _REJECT, {"error": str(error), "limit": self.quarantine_after, "seq": seq}
        )
        row = await cursor.fetchone()
        if row is None:
            return 0
        log.error(
            "outbox row quarantined: JetStream refuses it",
            extra={"fields": {"outbox_seq": seq, "event_id": str(row["event_id"]), "error": str(error)}},
        )
        return 1


# The batch is locked first (SKIP LOCKED: another relay's rows are not waited for), then each
# row learns whether an earlier pending row of its key lies outside the batch: that row is
# another relay's (or committed late), and publishing this one first would reorder the request.
_CLAIM = """
WITH batch AS MATERIALIZED (
    SELECT seq FROM outbox
    WHERE published_at IS NULL AND quarantined_at IS NULL
    ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED
)
SELECT o.seq, o.event_id, o.subject, o.ordering_key, o.payload, o.headers, o.created_at,
    o.ordering_key IS NOT NULL AND EXISTS (
        SELECT 1 FROM outbox e
        WHERE e.ordering_key = o.ordering_key AND e.seq < o.seq
            AND e.published_at IS NULL AND e.quarantined_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM batch b WHERE b.seq = e.seq)
    ) AS waits
FROM outbox o JOIN batch USING (seq)
ORDER BY o.seq
"""

# One refusal more; at the limit the row is quarantined and listed as a dead letter (kind
# 'outbox', no payload: it stays in the outbox row, which a replay releases). Returns a row
# only when it quarantined.
_REJECT = """
WITH refused AS (
    UPDATE outbox SET publish_attempts = publish_attempts + 1, rejections = rejections + 1,
        last_error = %(error)s,
        quarantined_at = CASE WHEN rejections + 1 >= %(limit)s THEN now() END
    WHERE seq = %(seq)s
    RETURNING seq, event_id, event_type, subject, publish_attempts, last_error, quarantined_at
)
INSERT INTO dead_letters (consumer, event_id, event_type, subject, payload, error, attempts, kind, outbox_seq)
SELECT 'outbox', event_id, event_type, subject, ''::bytea, last_error, publish_attempts, 'outbox', seq
FROM refused WHERE quarantined_at IS NOT NULL
RETURNING event_id
"""


def _header_bytes(headers: dict[str, str]) -> int:
    """Size of the NATS header block for ``headers`` (``NATS/1.0`` line, ``k: v`` lines, blank line)."""
    return 12 + sum(len(key.encode()) + len(str(value).encode()) + 4 for key, value in headers.items())
