"""A Postgres outage longer than a consumer's retry budget costs time, never an event.

With the database away a delivery can neither be handled nor dead-lettered. Were the
consumer to fetch on, each message would burn its deliveries until the server's finite
``max_deliver`` gave up on it, and that give-up (a core NATS advisory, announced once) could
not be recorded either. Compressed here: one attempt, no retry window, so the server gives
up at the fourth delivery.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest

from libs.embedded import EmbeddedPostgres
from libs.service_kit import ServiceKit
from tests.integration.test_consumer_operations import (  # noqa: F401 (fixtures)
    CONSUMER,
    Dependency,
    Harness,
    fact,
    harness,
)
from tests.reliability.test_database_outage import private_postgres  # noqa: F401 (fixture)
from tests.support.bus import publish_event, wait_until
from tests.support.isolation import Isolation, platform_environment

NO_RETRY_BUDGET = {
    "PLATFORM_RECONCILE_MAX_ATTEMPTS": "1",
    "PLATFORM_RECONCILE_RETRY_FOR_SECONDS": "0",
    "PLATFORM_POSTGRES_POOL_WAIT_SECONDS": "0.3",
}


@pytest.fixture
def platform_env(private_postgres: EmbeddedPostgres, nats_url: str, isolation: Isolation) -> dict[str, str]:  # noqa: F811
    return platform_environment(private_postgres.dsn("platform"), nats_url, isolation)


async def count(kit: ServiceKit, sql: str) -> int:
    """``sql``'s count; 0 while the pool has not reconnected yet."""
    try:
        async with kit.pool.connection() as conn:
            row = await (await conn.execute(sql)).fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row["n"]) if row else 0


async def test_a_consumer_stops_fetching_while_the_database_is_away_and_handles_the_event_after(
    harness: Harness,  # noqa: F811
    private_postgres: EmbeddedPostgres,  # noqa: F811
) -> None:
    kit = await harness.start(Dependency(), **NO_RETRY_BUDGET)
    assert kit.retry.server_max_deliver == 4
    private_postgres.stop()
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())

    async def delivered() -> bool:
        info = await kit.js.consumer_info(harness.stream, CONSUMER)
        return info.delivered.stream_seq >= 1

    await wait_until(delivered, what="the event delivered while the database is away")
    # Fetching on, the four deliveries would be spent within about three seconds.
    for _ in range(40):
        info = await kit.js.consumer_info(harness.stream, CONSUMER)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break  # the server gave up on it
        await asyncio.sleep(0.2)
    info = await kit.js.consumer_info(harness.stream, CONSUMER)
    assert info.num_ack_pending + info.num_pending == 1, "the server gave up on the event"
    assert info.delivered.consumer_seq < kit.retry.server_max_deliver
    # Not pulling on purpose is not a wedged fetch loop: /healthz must not restart the pod.
    assert kit.consumers[0].waiting_for_database
    assert kit.consumers[0].problem(stale_after=1.0) is None

    private_postgres.start()
    await wait_until(
        lambda: count(kit, "SELECT count(*) AS n FROM handled"), timeout=60, what="handled after the outage"
    )
    assert await count(kit, "SELECT count(*) AS n FROM dead_letters") == 0


async def test_a_give_up_the_database_cannot_record_yet_is_recorded_once_it_is_back(
    harness: Harness,  # noqa: F811
    private_postgres: EmbeddedPostgres,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    kit = await harness.start(
        Dependency(), start=False, PLATFORM_RECONCILE_TIMEOUT_SECONDS="1", **NO_RETRY_BUDGET
    )
    consumer = kit.consumers[0]
    # A replica that takes the message and dies on it every time; this one only watches.
    await consumer.provision()
    await consumer.watch_advisories()
    envelope = await publish_event(kit.js, harness.prefix, fact().request_id, fact())
    crashing = await kit.js.pull_subscribe_bind(durable=CONSUMER, stream=harness.stream)
    for _ in range(4):
        [message] = await crashing.fetch(1, timeout=5)
        assert message.data
    private_postgres.stop()
    # The server gives up when it would deliver a fifth time; the advisory finds no database.
    with contextlib.suppress(TimeoutError):
        assert await crashing.fetch(1, timeout=3) == []

    async def logged() -> list[str]:
        return [
            getattr(record, "fields", {}).get("stream_seq")
            for record in caplog.records
            if record.levelname == "ERROR"
            and record.getMessage().startswith("could not record a message the server gave up on")
        ]

    await wait_until(logged, what="the failed recording logged")
    private_postgres.start()

    async def recorded() -> list[tuple[str, str]]:
        with contextlib.suppress(psycopg.OperationalError):  # the pool reconnecting
            async with kit.pool.connection() as conn:
                cursor = await conn.execute("SELECT kind, event_id::text AS event_id FROM dead_letters")
                return [(row["kind"], row["event_id"]) for row in await cursor.fetchall()]
        return []

    assert await wait_until(recorded, timeout=60, what="the give-up recorded") == [
        ("max_deliveries", envelope.id)
    ]
    # Logged with where the message is, for an operator should the process crash meanwhile.
    assert await logged() == [1]
    await crashing.unsubscribe()
