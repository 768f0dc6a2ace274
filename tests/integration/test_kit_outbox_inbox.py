"""The kit's delivery guarantees against real Postgres and NATS JetStream."""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from msgspec.structs import replace
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.envelope import Envelope, cloudevents_headers, decode_envelope, encode_envelope, new_event
from contracts.events import RequestFailed
from libs.bus import Subjects, ensure_stream
from libs.database import open_pool
from libs.inbox import EventConsumer, RetryPolicy, Tx
from libs.migrations import discover, migrate
from libs.outbox import Outbox, OutboxRelay
from libs.settings import PlatformSettings
from tests.support.bus import consumer_settled, wait_until

SCHEMA = "kit_test"
CONSUMER = "kit-test-consumer"


@pytest.fixture
async def kit_db(settings: PlatformSettings) -> AsyncIterator[Any]:
    dsn = settings.require_dsn()
    await migrate(dsn, SCHEMA, discover(None))
    pool = await open_pool(dsn, SCHEMA, "kit-test")
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (event_id text PRIMARY KEY, request_id text NOT NULL)")
    yield pool
    await pool.close()


@pytest.fixture
async def js(settings: PlatformSettings) -> AsyncIterator[Any]:
    nc = await nats.connect(settings.nats_url.reveal())
    jetstream = nc.jetstream()
    await ensure_stream(jetstream, settings)
    yield jetstream
    await nc.close()


def failure(n: int, generation: int = 1) -> RequestFailed:
    return RequestFailed(
        request_id=f"req-{n:016x}", generation=generation, stage="test", error="x", attempts=1
    )


async def stream_envelopes(js: Any, settings: PlatformSettings) -> list[Envelope]:
    """Every message in the test's stream, read with an ephemeral consumer."""
    info = await js.stream_info(settings.stream_name)
    count = info.state.messages
    if count == 0:
        return []
    sub = await js.pull_subscribe(
        f"{settings.subject_prefix}.>",
        stream=settings.stream_name,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30),
    )
    envelopes: list[Envelope] = []
    while len(envelopes) < count:
        for message in await sub.fetch(count - len(envelopes), timeout=5):
            envelopes.append(decode_envelope(message.data))
            await message.ack()
    await sub.unsubscribe()
    return envelopes


async def test_two_relays_publish_every_event_exactly_once(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    subjects = Subjects.from_settings(settings)
    outbox = Outbox(SCHEMA, "kit-test", subjects)
    staged: list[str] = []
    for batch in range(20):
        async with kit_db.connection() as conn, conn.transaction():
            for n in range(25):
                staged.append((await outbox.add(conn, "req-x", failure(batch * 25 + n))).id)
    second_pool = await open_pool(settings.require_dsn(), SCHEMA, "kit-test-2")
    relays = [
        OutboxRelay(
            pool,
            js,
            dsn=settings.require_dsn(),
            schema=SCHEMA,
            stream=settings.stream_name,
            poll_seconds=0.05,
            batch_size=16,
        )
        for pool in (kit_db, second_pool)
    ]
    for relay in relays:
        await relay.start()

    async def all_marked() -> bool:
        async with kit_db.connection() as conn:
            row = await (
                await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            ).fetchone()
            return bool(row["n"] == 0)

    await wait_until(all_marked)
    for relay in relays:
        await relay.stop()
    await second_pool.close()

    envelopes = await stream_envelopes(js, settings)
    assert sorted(e.id for e in envelopes) == sorted(staged)


async def test_event_published_before_a_crash_is_deduplicated_by_the_stream(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    """Relay died after the PubAck but before marking the row: the re-publish is dropped."""
    outbox = Outbox(SCHEMA, "kit-test", Subjects.from_settings(settings))
    async with kit_db.connection() as conn, conn.transaction():
        envelope = await outbox.add(conn, "req-x", failure(1))
    # What the dead relay managed to do: publish, with the event id as Nats-Msg-Id.
    ack = await js.publish(
        f"{settings.subject_prefix}.request.failed",
        encode_envelope(envelope),
        headers=cloudevents_headers(envelope),
    )
    assert not ack.duplicate
    relay = OutboxRelay(kit_db, js, dsn=settings.require_dsn(), schema=SCHEMA, stream=settings.stream_name)
    assert await relay.publish_pending() == 1
    envelopes = await stream_envelopes(js, settings)
    assert [e.id for e in envelopes] == [envelope.id]


async def test_rolled_back_transaction_publishes_nothing(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    outbox = Outbox(SCHEMA, "kit-test", Subjects.from_settings(settings))

    async def change_that_fails() -> None:
        async with kit_db.connection() as conn, conn.transaction():
            await outbox.add(conn, "req-x", failure(1))
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await change_that_fails()
    relay = OutboxRelay(kit_db, js, dsn=settings.require_dsn(), schema=SCHEMA, stream=settings.stream_name)
    assert await relay.publish_pending() == 0
    assert await stream_envelopes(js, settings) == []


class Recorder:
    """A handler that records its effect in Postgres and emits one event, optionally failing first."""

    def __init__(self, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.calls = 0

    async def __call__(self, envelope: Envelope, data: Any, tx: Tx) -> None:
        self.calls += 1
        await tx.conn.execute(
            "INSERT INTO effects (event_id, request_id) VALUES (%s, %s)", [envelope.id, data.request_id]
        )
        await tx.emit(data.request_id, replace(data, stage="echo"))
        if self.calls <= self.fail_times:
            raise RuntimeError("transient failure")


def make_consumer(
    settings: PlatformSettings, pool: Any, js: Any, handler: Any, max_attempts: int = 5
) -> EventConsumer:
    subjects = Subjects.from_settings(settings)
    return EventConsumer(
        name=CONSUMER,
        event_filter="request.failed",
        handlers={"request.failed": handler},
        pool=pool,
        js=js,
        outbox=Outbox(SCHEMA, "kit-test", subjects),
        subjects=subjects,
        stream=settings.stream_name,
        retry=RetryPolicy(
            max_attempts=max_attempts, backoff_seconds=0.1, max_backoff_seconds=0.2, ack_wait_seconds=5
        ),
        concurrency=4,
    )


async def count(pool: Any, query: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(query)).fetchone()
        return int(row["n"])


async def publish_raw(js: Any, settings: PlatformSettings, envelope: Envelope, msg_id: str) -> None:
    headers = cloudevents_headers(envelope)
    headers["Nats-Msg-Id"] = msg_id
    await js.publish(f"{settings.subject_prefix}.{envelope.type}", encode_envelope(envelope), headers=headers)


async def test_redelivered_event_changes_nothing(settings: PlatformSettings, kit_db: Any, js: Any) -> None:
    recorder = Recorder()
    consumer = make_consumer(settings, kit_db, js, recorder)
    await consumer.start()
    envelope = new_event("request.failed", "test", "req-1", failure(1))
    # The same event delivered twice (as after a lost ack), bypassing the stream's dedup.
    await publish_raw(js, settings, envelope, "first-delivery")
    await publish_raw(js, settings, envelope, "second-delivery")

    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER, past_seq=2))
    await consumer.stop()
    assert recorder.calls == 1
    assert await count(kit_db, "SELECT count(*) AS n FROM effects") == 1
    assert await count(kit_db, "SELECT count(*) AS n FROM outbox") == 1


async def test_handler_error_leads_to_redelivery_not_loss(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    recorder = Recorder(fail_times=2)
    consumer = make_consumer(settings, kit_db, js, recorder)
    await consumer.start()
    envelope = new_event("request.failed", "test", "req-1", failure(7))
    await publish_raw(js, settings, envelope, envelope.id)

    async def effect_committed() -> bool:
        return await count(kit_db, "SELECT count(*) AS n FROM effects") == 1

    await wait_until(effect_committed)
    await consumer.stop()
    # Two failed attempts rolled back their effect and event; the third committed both once.
    assert recorder.calls == 3
    assert await count(kit_db, "SELECT count(*) AS n FROM outbox") == 1
    assert await count(kit_db, "SELECT count(*) AS n FROM dead_letters") == 0


async def test_exhausted_retries_dead_letter_and_report_failure(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    recorder = Recorder(fail_times=100)
    consumer = make_consumer(settings, kit_db, js, recorder, max_attempts=3)
    await consumer.start()
    envelope = new_event("request.failed", "test", "req-00000000000000aa", failure(0xAA, generation=4))
    await publish_raw(js, settings, envelope, envelope.id)

    async def dead_lettered() -> bool:
        return await count(kit_db, "SELECT count(*) AS n FROM dead_letters") == 1

    await wait_until(dead_lettered)
    # Settled: the server will not deliver the event again, so no further attempt can follow.
    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER))
    await consumer.stop()
    assert recorder.calls == 3
    assert await count(kit_db, "SELECT count(*) AS n FROM effects") == 0
    async with kit_db.connection() as conn:
        letter = await (await conn.execute("SELECT event_id, attempts, error FROM dead_letters")).fetchone()
        staged = await (await conn.execute("SELECT event_type, payload FROM outbox")).fetchall()
    assert str(letter["event_id"]) == envelope.id
    assert letter["attempts"] == 3
    assert letter["error"] == "internal error (RuntimeError)"
    assert [row["event_type"] for row in staged] == ["request.failed"]
    reported = json.loads(bytes(staged[0]["payload"]))["data"]
    assert reported == {
        "request_id": "req-00000000000000aa",
        "generation": 4,
        "stage": "kit-test",
        "error": "internal error (RuntimeError)",
        "attempts": 3,
    }


async def test_an_event_whose_id_is_not_a_uuid_is_dead_lettered_at_once(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    """It could never be recorded in the inbox (ids are UUIDs there): retrying would loop forever."""
    recorder = Recorder()
    consumer = make_consumer(settings, kit_db, js, recorder)
    await consumer.start()
    envelope = replace(new_event("request.failed", "test", "req-1", failure(9)), id="not-a-uuid")
    await publish_raw(js, settings, envelope, "odd-one")

    async def dead_lettered() -> bool:
        return await count(kit_db, "SELECT count(*) AS n FROM dead_letters") == 1

    await wait_until(dead_lettered)
    # Settled (terminated, not waiting for another delivery): no second attempt can follow.
    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER))
    await consumer.stop()
    assert recorder.calls == 0
    async with kit_db.connection() as conn:
        letters = await (await conn.execute("SELECT event_id, error FROM dead_letters")).fetchall()
    [letter] = letters
    assert letter["event_id"] is None
    assert "id is not a UUID" in letter["error"]


async def test_a_batched_consumer_handles_each_event_once_in_order_also_when_a_batch_fails(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    """Batches (one transaction per fetch) keep the guarantees of one event at a time: each
    effect once, a subject's events in stream order, and a failing handler costs its batch a
    rollback and the one-by-one way, not an event."""
    async with kit_db.connection() as conn:
        await conn.execute(
            "CREATE TABLE ordered_effects (seq bigserial, event_id text PRIMARY KEY,"
            " request_id text NOT NULL, generation integer NOT NULL)"
        )
    events = [
        new_event("request.failed", "test", f"req-{n % 5:016x}", failure(n % 5, generation=n // 5 + 1))
        for n in range(60)
    ]
    failing = events[23].id
    calls: dict[str, int] = {}

    async def handler(envelope: Envelope, data: Any, tx: Tx) -> None:
        calls[envelope.id] = calls.get(envelope.id, 0) + 1
        await tx.conn.execute(
            "INSERT INTO ordered_effects (event_id, request_id, generation) VALUES (%s, %s, %s)",
            [envelope.id, data.request_id, data.generation],
        )
        await tx.emit(data.request_id, replace(data, stage="echo"))
        if envelope.id == failing and calls[envelope.id] == 1:
            raise RuntimeError("fails once")

    subjects = Subjects.from_settings(settings)

    def consumer() -> EventConsumer:
        return EventConsumer(
            name=CONSUMER,
            event_filter="request.failed",
            handlers={"request.failed": handler},
            pool=kit_db,
            js=js,
            outbox=Outbox(SCHEMA, "kit-test", subjects),
            subjects=subjects,
            stream=settings.stream_name,
            retry=RetryPolicy(
                max_attempts=5, backoff_seconds=0.1, max_backoff_seconds=0.2, ack_wait_seconds=5
            ),
            concurrency=4,
            ordered_by_subject=True,
            start_from="all",
            batched=True,
        )

    # Each part is in the stream before a consumer starts on it, so it comes in whole fetches:
    # the first twenty, without a failure, commit as a batch; the rest hold the failing event
    # in a batch, which rolls back and goes one by one.
    for envelope in events[:20]:
        await publish_raw(js, settings, envelope, envelope.id)
    first = consumer()
    await first.start()
    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER, past_seq=20))
    await first.stop()
    for envelope in events[20:]:
        await publish_raw(js, settings, envelope, envelope.id)
    # The first event published again (a lost ack's redelivery would look the same).
    await publish_raw(js, settings, events[0], "again")
    second = consumer()
    await second.start()
    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER, past_seq=61))
    await second.stop()

    assert await count(kit_db, "SELECT count(*) AS n FROM ordered_effects") == 60
    assert await count(kit_db, "SELECT count(*) AS n FROM outbox") == 60
    assert await count(kit_db, "SELECT count(*) AS n FROM dead_letters") == 0
    async with kit_db.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT request_id, generation, xmin::text AS tx FROM ordered_effects ORDER BY seq"
            )
        ).fetchall()
    for n in range(5):
        generations = [row["generation"] for row in rows if row["request_id"] == f"req-{n:016x}"]
        assert generations == sorted(generations) == list(range(1, 13))
    # Batched indeed: some transaction committed the effects of several events.
    assert max(collections.Counter(row["tx"] for row in rows).values()) > 1
    assert calls[failing] == 2


async def test_a_batch_preload_is_read_once_and_shared_by_its_handlers_and_the_one_by_one_way_reads_alone(
    settings: PlatformSettings, kit_db: Any, js: Any
) -> None:
    """A batched consumer's preload reads every record its batch needs in one statement; each
    handler sees what the handlers before it in the batch wrote, and a batch that failed is
    handled one by one with nothing preloaded (each handler reads its own record)."""
    async with kit_db.connection() as conn:
        await conn.execute("CREATE TABLE counters (id text PRIMARY KEY, n integer NOT NULL)")
        for n in range(4):
            await conn.execute("INSERT INTO counters VALUES (%s, 0)", [f"req-{n:016x}"])
    events = [new_event("request.failed", "test", f"req-{n % 4:016x}", failure(n % 4)) for n in range(40)]
    failing = events[37].id
    preloads: list[int] = []
    seen = {"preloaded": 0, "read": 0, "failed": 0}

    async def preload(envelopes: list[Envelope], tx: Tx) -> None:
        preloads.append(len(envelopes))
        cursor = await tx.conn.execute(
            "SELECT id, n FROM counters WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            [sorted({e.subject for e in envelopes})],
        )
        for row in await cursor.fetchall():
            tx.loaded[row["id"]] = {"n": row["n"]}

    async def handler(envelope: Envelope, data: Any, tx: Tx) -> None:
        counter = tx.loaded.get(envelope.subject)
        if counter is None:
            seen["read"] += 1
            cursor = await tx.conn.execute(
                "SELECT n FROM counters WHERE id = %s FOR UPDATE", [envelope.subject]
            )
            counter = {"n": (await cursor.fetchone())["n"]}
        else:
            seen["preloaded"] += 1
        counter["n"] += 1
        await tx.conn.execute("UPDATE counters SET n = %s WHERE id = %s", [counter["n"], envelope.subject])
        if envelope.id == failing and not seen["failed"]:
            seen["failed"] = 1
            raise RuntimeError("fails once")

    async def counts() -> list[int]:
        async with kit_db.connection() as conn:
            rows = await (await conn.execute("SELECT id, n FROM counters ORDER BY id")).fetchall()
        return [row["n"] for row in rows]

    subjects = Subjects.from_settings(settings)
    consumer = EventConsumer(
        name=CONSUMER,
        event_filter="request.failed",
        handlers={"request.failed": handler},
        pool=kit_db,
        js=js,
        outbox=Outbox(SCHEMA, "kit-test", subjects),
        subjects=subjects,
        stream=settings.stream_name,
        retry=RetryPolicy(max_attempts=5, backoff_seconds=0.1, max_backoff_seconds=0.2, ack_wait_seconds=5),
        concurrency=4,
        ordered_by_subject=True,
        start_from="all",
        batched=True,
        preload=preload,
    )
    # Twenty events in the stream before the consumer starts: its first fetches are batches
    # holding several events of each request.
    for envelope in events[:20]:
        await publish_raw(js, settings, envelope, envelope.id)
    await consumer.start()
    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER, past_seq=20))
    # Each counted once although most handlers never read the row: the record a handler
    # changed is the one the next handler of its request in the batch got.
    assert await counts() == [5, 5, 5, 5]
    assert len(preloads) < 20
    # (Normally all twenty in one batch; a fetch that returned fewer leaves the rest of their
    # requests to the one-by-one way while the batch holds them.)
    assert seen["preloaded"] >= 10

    # A batch with a failing handler rolls back and goes one by one, where nothing is preloaded.
    for envelope in events[20:]:
        await publish_raw(js, settings, envelope, envelope.id)
    await wait_until(lambda: consumer_settled(js, settings.stream_name, CONSUMER, past_seq=40))
    await consumer.stop()
    assert await counts() == [10, 10, 10, 10]
    assert seen["failed"] == 1
    assert seen["read"] >= 1
