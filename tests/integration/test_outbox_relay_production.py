"""The outbox relay in production: poison rows are quarantined, a request's events keep their order.

Real Postgres and NATS JetStream. A row JetStream refuses for good (larger than the server's
``max_payload``, a subject no stream takes) is set aside after a few refusals, listed as a dead
letter of kind ``outbox`` and released again by replaying it; transient failures never
quarantine. Events of one request reach the stream in the order they were staged, through a
lost PubAck and with two relays at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from contracts.events import RequestFailed
from contracts.rpc import ListDeadLetters, ReplayDeadLetter
from libs.bus import Subjects, ensure_stream, stream_config
from libs.database import Pool, open_pool
from libs.dead_letters import DeadLetters
from libs.outbox import Outbox, OutboxRelay, RelayPublishError, notify_channel
from libs.settings import PlatformSettings
from libs.telemetry import REGISTRY
from tests.support.alerts import alert_expr, evaluate, registry_samples
from tests.support.bus import stream_events
from tests.support.kit_schema import kit_pool

SCHEMA = "relay_test"


@pytest.fixture
async def pool(settings: PlatformSettings) -> AsyncIterator[Pool]:
    async with kit_pool(settings, SCHEMA) as opened:
        yield opened


@pytest.fixture
async def nc(settings: PlatformSettings) -> AsyncIterator[Any]:
    client = await nats.connect(settings.nats_url.reveal())
    await ensure_stream(client.jetstream(), settings)
    yield client
    await client.close()


def relay(settings: PlatformSettings, pool: Pool, js: Any, **options: Any) -> OutboxRelay:
    options.setdefault("quarantine_after", 3)
    return OutboxRelay(
        pool, js, dsn=settings.require_dsn(), schema=SCHEMA, stream=settings.stream_name, **options
    )


def failure(request: str, n: int, error: str = "x") -> RequestFailed:
    return RequestFailed(request_id=request, generation=n, stage="test", error=error, attempts=1)


async def stage(pool: Pool, outbox: Outbox, request: str, n: int, error: str = "x") -> str:
    async with pool.connection() as conn, conn.transaction():
        return (await outbox.add(conn, request, failure(request, n, error))).id


async def outbox_row(pool: Pool, event_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT published_at, quarantined_at, rejections, publish_attempts, last_error"
            " FROM outbox WHERE event_id = %s",
            [event_id],
        )
        row = await cursor.fetchone()
    assert row is not None
    return row


async def passes(relay: OutboxRelay, count: int) -> list[int | str]:
    """Run ``count`` relay passes; each one's published count, or the error it raised."""
    outcomes: list[int | str] = []
    for _ in range(count):
        try:
            outcomes.append(await relay.publish_pending())
        except RelayPublishError as exc:
            outcomes.append(f"failed, published {exc.published}")
    return outcomes


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_an_oversized_event_is_quarantined_and_the_events_behind_it_go_on(
    settings: PlatformSettings, pool: Pool, nc: Any
) -> None:
    outbox = Outbox(SCHEMA, "relay-test", Subjects.from_settings(settings))
    first = await stage(pool, outbox, "req-a", 1)
    poison = await stage(pool, outbox, "req-b", 1, error="x" * (nc.max_payload + 1))
    behind_poison = await stage(pool, outbox, "req-b", 2)
    other = await stage(pool, outbox, "req-c", 1)
    quarantined_before = metric("platform_outbox_quarantined_total")

    # Three refusals quarantine the row; its request's next event waits behind it until then.
    assert await passes(relay(settings, pool, nc.jetstream()), 4) == [
        "failed, published 2",
        "failed, published 0",
        0,
        1,
    ]

    events = await stream_events(nc.jetstream(), settings.stream_name, settings.subject_prefix)
    assert [e.id for e in events] == [first, other, behind_poison]
    row = await outbox_row(pool, poison)
    assert row["published_at"] is None
    assert row["quarantined_at"] is not None
    assert row["rejections"] == 3
    assert "max_payload" in row["last_error"]
    assert metric("platform_outbox_quarantined_total") == quarantined_before + 1
    assert metric("platform_outbox_quarantined_rows") == 1
    # Later passes leave it alone: nothing is pending.
    assert await passes(relay(settings, pool, nc.jetstream()), 1) == [0]
    letters = await DeadLetters(pool, notify_channel(SCHEMA), Subjects.from_settings(settings)).list(
        ListDeadLetters()
    )
    [letter] = letters.items
    assert (letter.kind, letter.consumer, letter.event_id) == ("outbox", "outbox", poison)
    assert "max_payload" in letter.error


async def test_an_event_the_stream_refuses_with_a_4xx_is_quarantined_without_holding_up_the_others(
    settings: PlatformSettings, pool: Pool, nc: Any
) -> None:
    # An operator's limit on the stream, below the server's max_payload: only JetStream's
    # answer (400, "message size exceeds maximum allowed") says the row can never be stored.
    # nats-py 2.16 loses that answer to publish_async (nats-io/nats.py#985); the relay used
    # to see a timeout, retry it as transient for ever and wait 5 s on every pass.
    js = nc.jetstream()
    config = (await js.stream_info(settings.stream_name)).config
    config.max_msg_size = 2000
    await js.update_stream(config)
    outbox = Outbox(SCHEMA, "relay-test", Subjects.from_settings(settings))
    poison = await stage(pool, outbox, "req-b", 1, error="x" * 3000)
    behind_poison = await stage(pool, outbox, "req-b", 2)
    relaying = relay(settings, pool, js, publish_timeout=5.0)

    outcomes, slowest = [], 0.0
    for n in range(3):
        other = await stage(pool, outbox, f"req-c{n}", 1)  # another request's event beside it
        started = time.monotonic()
        outcomes += await passes(relaying, 1)
        slowest = max(slowest, time.monotonic() - started)
        assert (await outbox_row(pool, other))["published_at"] is not None
    assert outcomes == ["failed, published 1", "failed, published 1", 1]
    # The rows answered beside it are not kept waiting for the publish timeout.
    assert slowest < 3.5

    row = await outbox_row(pool, poison)
    assert (row["quarantined_at"] is not None, row["rejections"]) == (True, 3)
    assert "code 400" in row["last_error"]
    assert await passes(relaying, 1) == [1]  # its request's next event goes on
    assert (await outbox_row(pool, behind_poison))["published_at"] is not None
    events = await stream_events(js, settings.stream_name, settings.subject_prefix)
    assert poison not in [e.id for e in events]


async def test_an_event_no_stream_takes_is_quarantined_and_published_when_replayed_after_the_fix(
    settings: PlatformSettings, pool: Pool, nc: Any
) -> None:
    js = nc.jetstream()
    # A producer whose events go to a subject the stream does not take (a mistyped prefix).
    orphan_prefix = f"{settings.subject_prefix}-orphan"
    orphans = Outbox(SCHEMA, "relay-test", Subjects(events_prefix=orphan_prefix, rpc_prefix="unused"))
    orphan = await stage(pool, orphans, "req-a", 1)
    quarantined = alert_expr("PlatformOutboxRowsQuarantined")
    assert await relay(settings, pool, js).count_quarantined() == 0  # what a relay does on start
    assert not evaluate(quarantined, registry_samples(REGISTRY))
    assert await passes(relay(settings, pool, js), 3) == ["failed, published 0", "failed, published 0", 0]
    row = await outbox_row(pool, orphan)
    assert row["quarantined_at"] is not None
    assert "no stream takes subject" in row["last_error"]
    assert evaluate(quarantined, registry_samples(REGISTRY)) == {("",): 1}  # Prometheus adds job

    dead_letters = DeadLetters(pool, notify_channel(SCHEMA), Subjects.from_settings(settings))
    [letter] = (await dead_letters.list(ListDeadLetters())).items
    assert letter.kind == "outbox"
    # The operator fixes the cause (the stream takes the subject now) and replays the dead letter.
    config = stream_config(settings)
    config.subjects = [*(config.subjects or []), f"{orphan_prefix}.>"]
    await js.update_stream(config)
    replayed = await dead_letters.replay(ReplayDeadLetter(id=letter.id, replayed_by="operator"))
    assert replayed.replayed_at is not None

    assert await passes(relay(settings, pool, js), 1) == [1]
    events = await stream_events(js, settings.stream_name, orphan_prefix)
    assert [e.id for e in events] == [orphan]  # the original event, under its own id
    assert (await outbox_row(pool, orphan))["published_at"] is not None
    assert (await dead_letters.list(ListDeadLetters())).items == []
    assert not evaluate(quarantined, registry_samples(REGISTRY))


async def test_events_the_relay_cannot_publish_for_minutes_fire_the_delayed_alert(
    settings: PlatformSettings, pool: Pool, nc: Any
) -> None:
    js = nc.jetstream()
    delayed = alert_expr("PlatformOutboxEventsDelayed")
    nowhere = f"{settings.subject_prefix}-nowhere"
    orphans = Outbox(SCHEMA, "relay-test", Subjects(events_prefix=nowhere, rpc_prefix="unused"))
    waiting = await stage(pool, orphans, "req-d", 1)
    stuck = relay(settings, pool, js, quarantine_after=100)
    assert await passes(stuck, 1) == ["failed, published 0"]
    assert not evaluate(delayed, registry_samples(REGISTRY))  # refused for a moment: no page yet
    # The relay has been failing for three minutes (the row was committed that long ago).
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE outbox SET created_at = created_at - interval '3 minutes' WHERE event_id = %s", [waiting]
        )
    assert await passes(stuck, 1) == ["failed, published 0"]
    [(job, age)] = evaluate(delayed, registry_samples(REGISTRY)).items()
    assert job == ("",)
    assert age > 180
    # The cause is fixed (the stream takes the subject): the event goes out, nothing waits, the
    # oldest age is 0 again and the alert clears.
    config = stream_config(settings)
    config.subjects = [*(config.subjects or []), f"{nowhere}.>"]
    await js.update_stream(config)
    assert await passes(stuck, 2) == [1, 0]
    assert not evaluate(delayed, registry_samples(REGISTRY))


async def test_transient_failures_never_quarantine(settings: PlatformSettings, pool: Pool, nc: Any) -> None:
    """No stream at all (deleted, being recreated): no responders, like JetStream not ready."""
    js = nc.jetstream()
    outbox = Outbox(SCHEMA, "relay-test", Subjects.from_settings(settings))
    event = await stage(pool, outbox, "req-a", 1)
    await js.delete_stream(settings.stream_name)

    outcomes = await passes(relay(settings, pool, js, quarantine_after=2, publish_timeout=0.5), 6)
    assert outcomes == ["failed, published 0"] * 6
    row = await outbox_row(pool, event)
    assert row["quarantined_at"] is None
    assert row["rejections"] == 0
    assert row["publish_attempts"] == 6

    await ensure_stream(js, settings)
    assert await passes(relay(settings, pool, js), 1) == [1]
    assert [e.id for e in await stream_events(js, settings.stream_name, settings.subject_prefix)] == [event]


class LostAck:
    """The real JetStream context, except that the PubAck of one event never arrives, nor
    that of the relay's synchronous publish of it again (the network is what loses them)."""

    def __init__(self, js: Any, lost_event_id: str) -> None:
        self._js = js
        self.lost_event_id = lost_event_id
        self.lost_again = lost_event_id

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        if kwargs["headers"]["Nats-Msg-Id"] == self.lost_again:
            self.lost_again = ""  # only once
            raise nats.errors.TimeoutError
        return await self._js.publish(subject, payload, **kwargs)

    async def publish_async(self, subject: str, payload: bytes, **kwargs: Any) -> asyncio.Future[Any]:
        if kwargs["headers"]["Nats-Msg-Id"] == self.lost_event_id:
            self.lost_event_id = ""  # only once
            return asyncio.get_running_loop().create_future()  # never resolved: a timeout
        future: asyncio.Future[Any] = await self._js.publish_async(subject, payload, **kwargs)
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


async def test_a_failed_event_is_not_overtaken_by_its_requests_next_event(
    settings: PlatformSettings, pool: Pool, nc: Any
) -> None:
    js = nc.jetstream()
    outbox = Outbox(SCHEMA, "relay-test", Subjects.from_settings(settings))
    lost = await stage(pool, outbox, "req-a", 1)
    after_lost = await stage(pool, outbox, "req-a", 2)
    other = await stage(pool, outbox, "req-b", 1)
    flaky = relay(settings, pool, LostAck(js, lost), publish_timeout=0.3)

    assert await passes(flaky, 1) == ["failed, published 1"]
    assert [e.id for e in await stream_events(js, settings.stream_name, settings.subject_prefix)] == [other]
    # The next event of req-a was neither sent nor marked: it waits for the one before it.
    assert (await outbox_row(pool, after_lost))["published_at"] is None
    assert (await outbox_row(pool, lost))["rejections"] == 0  # a timeout is no refusal

    assert await passes(flaky, 1) == [2]
    events = await stream_events(js, settings.stream_name, settings.subject_prefix)
    assert [e.id for e in events] == [other, lost, after_lost]


async def test_a_second_relay_does_not_publish_past_a_row_the_first_holds(
    settings: PlatformSettings, pool: Pool, nc: Any
) -> None:
    js = nc.jetstream()
    outbox = Outbox(SCHEMA, "relay-test", Subjects.from_settings(settings))
    held = await stage(pool, outbox, "req-a", 1)
    after_held = await stage(pool, outbox, "req-a", 2)
    other = await stage(pool, outbox, "req-b", 1)
    # Relay 1 is in the middle of a pass that locked req-a's first event.
    async with pool.connection() as first_relay, first_relay.transaction():
        await first_relay.execute("SELECT 1 FROM outbox WHERE event_id = %s FOR UPDATE", [held])
        assert await passes(relay(settings, pool, js), 1) == [1]
        assert (await outbox_row(pool, after_held))["published_at"] is None
    assert await passes(relay(settings, pool, js), 1) == [2]
    events = await stream_events(js, settings.stream_name, settings.subject_prefix)
    assert [e.id for e in events] == [other, held, after_held]


async def test_two_relays_keep_each_requests_order(settings: PlatformSettings, pool: Pool, nc: Any) -> None:
    outbox = Outbox(SCHEMA, "relay-test", Subjects.from_settings(settings))
    staged: dict[str, list[str]] = {f"req-{k}": [] for k in range(10)}
    for n in range(20):
        async with pool.connection() as conn, conn.transaction():
            for request, ids in staged.items():
                ids.append((await outbox.add(conn, request, failure(request, n))).id)
    second_pool = await open_pool(settings.require_dsn(), SCHEMA, "relay-test-2")
    relays = [
        relay(settings, p, nc.jetstream(), batch_size=7, poll_seconds=0.02) for p in (pool, second_pool)
    ]
    try:
        for each in relays:
            await each.start()

        async def drained() -> bool:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
                row = await cursor.fetchone()
            return bool(row and row["n"] == 0)

        deadline = asyncio.get_running_loop().time() + 30
        while not await drained():
            assert asyncio.get_running_loop().time() < deadline, "relays did not drain the outbox"
            await asyncio.sleep(0.05)
    finally:
        for each in relays:
            await each.stop()
        await second_pool.close()

    events = await stream_events(nc.jetstream(), settings.stream_name, settings.subject_prefix)
    assert len(events) == 200
    for request, ids in staged.items():
        assert [e.id for e in events if e.subject == request] == ids
