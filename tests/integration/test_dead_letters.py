"""Dead letters through the kit's RPC verbs: list them, replay one once its cause is fixed.

A service built on the real :class:`ServiceKit` (its migrations, consumer, relay and RPC)
with one handler whose dependency is "down" until the test brings it back, and a second
durable consuming the same type that handles it at once (another service's consumer, for
what a redrive must not reach).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from contracts.events import RequestFailed
from contracts.rpc import ListDeadLetters, ReplayDeadLetter
from libs.inbox import Tx, supports_filter_subjects
from libs.rpc import RpcClient, RpcError
from libs.service_kit import ServiceKit
from libs.settings import PlatformSettings, load_settings
from tests.support.bus import publish_event, stream_events, wait_until


class FlakyDependency:
    """Fails every call while ``down``; records the events it handled once up."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def __call__(self, envelope: Any, data: RequestFailed, tx: Tx) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("the dependency is down")
        await tx.conn.execute("INSERT INTO handled (event_id) VALUES (%s)", [envelope.id])


@pytest.fixture
async def service(platform_env: dict[str, str]) -> AsyncIterator[tuple[ServiceKit, FlakyDependency]]:
    settings = load_settings(
        PlatformSettings,
        {
            **platform_env,
            "PLATFORM_RECONCILE_MAX_ATTEMPTS": "2",
            # The dependency's ConnectionError is transient: give up after the two attempts
            # anyway instead of retrying through a long outage.
            "PLATFORM_RECONCILE_RETRY_FOR_SECONDS": "0",
            "PLATFORM_OUTBOX_POLL_SECONDS": "0.1",
        },
    )
    kit = await ServiceKit.open(service="dltest", schema="dltest", settings=settings, package=None)
    async with kit.pool.connection() as conn:
        await conn.execute("CREATE TABLE handled (event_id uuid PRIMARY KEY)")
    dependency = FlakyDependency()
    # No give-up hook: the test looks at the dead letter itself, not at request.failed.
    kit.consume("work", "request.failed", {"request.failed": dependency}, on_give_up=_nothing)
    kit.consume("observer", "request.failed", {"request.failed": _nothing})
    await kit.start()
    try:
        yield kit, dependency
    finally:
        await kit.stop()


async def _nothing(*_: Any) -> None:
    return None


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> AsyncIterator[RpcClient]:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)
    await nc.close()


async def handled(kit: ServiceKit) -> int:
    async with kit.pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM handled")).fetchone()
    return int(row["n"]) if row else 0


async def test_a_dead_letter_is_listed_and_replayed_once(
    service: tuple[ServiceKit, FlakyDependency], rpc: RpcClient, platform_env: dict[str, str]
) -> None:
    kit, dependency = service
    fact = RequestFailed(request_id="req-00000000000000d1", generation=1, stage="x", error="y", attempts=1)
    envelope = await publish_event(
        kit.js, platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"], fact.request_id, fact
    )

    async def listed() -> list[dict[str, Any]]:
        page = await rpc.call("dltest", "list_dead_letters", ListDeadLetters())
        return list(page["items"])

    [letter] = await wait_until(listed, what="dead letter recorded")
    assert dependency.calls == 2
    assert (letter["consumer"], letter["event_id"], letter["event_type"]) == (
        "dltest-work",
        envelope.id,
        "request.failed",
    )
    assert letter["error"] == "internal error (ConnectionError)"
    assert letter["replayed_at"] is None
    assert "payload" not in letter

    dependency.down = False  # the operator fixed the cause
    replayed = await rpc.call(
        "dltest", "replay_dead_letter", ReplayDeadLetter(id=letter["id"], replayed_by="ops")
    )
    assert replayed["replayed_at"] is not None

    async def done() -> bool:
        return await handled(kit) == 1

    await wait_until(done, what="replayed event handled")
    # The same event (same envelope id) went through the consumer again, under a new
    # Nats-Msg-Id, on a subject addressed to the consumer that gave up on it.
    prefix, stream = platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"], platform_env["PLATFORM_EVENTS_STREAM"]
    copies = [e for e in await stream_events(kit.js, stream, prefix) if e.id == envelope.id]
    assert len(copies) == 2
    [redrive] = await stream_events(kit.js, stream, prefix, "replay.dltest-work.request.failed")
    assert redrive.id == envelope.id
    # The other consumer of the type was delivered the event once: the redrive never reached
    # it (a server before 2.10 takes one filter per durable: the whole stream, so there it
    # was delivered and acknowledged unread).
    observer = await kit.js.consumer_info(stream, "dltest-observer")
    deliveries = 1 if supports_filter_subjects(kit.nc) else 2
    assert (observer.delivered.consumer_seq, observer.num_pending, observer.num_ack_pending) == (
        deliveries,
        0,
        0,
    )
    assert await listed() == []  # replayed ones are hidden by default ...
    everything = await rpc.call("dltest", "list_dead_letters", ListDeadLetters(include_replayed=True))
    assert [item["id"] for item in everything["items"]] == [letter["id"]]  # ... and kept

    with pytest.raises(RpcError) as twice:
        await rpc.call("dltest", "replay_dead_letter", ReplayDeadLetter(id=letter["id"], replayed_by="ops"))
    assert twice.value.code == "conflict"
    with pytest.raises(RpcError) as unknown:
        await rpc.call("dltest", "replay_dead_letter", ReplayDeadLetter(id=424242, replayed_by="ops"))
    assert unknown.value.code == "not_found"
    assert await handled(kit) == 1


async def test_listing_limits_are_validated(service: Any, rpc: RpcClient) -> None:
    with pytest.raises(RpcError) as failure:
        await rpc.call("dltest", "list_dead_letters", ListDeadLetters(limit=0))
    assert failure.value.code == "validation"
    assert failure.value.details == [{"field": "limit", "message": "must be between 1 and 500"}]
