"""Consumers in production: outages, poison messages, upgrades, lost and changed consumers.

Each test runs a real :class:`ServiceKit` (migrations, durable consumer, relay, RPC) against
the test's own stream and looks at what an operator would: rows listed by
``list_dead_letters``, events on the stream, the durable consumer's info on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.envelope import cloudevents_headers, encode_envelope, new_event
from contracts.events import RequestStageRetrying, RequestTornDown
from contracts.rpc import ListDeadLetters
from libs.bus import StreamBacklog, apply_stream_config, ensure_stream, stream_config
from libs.errors import TransientError
from libs.inbox import Tx, supports_filter_subjects
from libs.rpc import RpcClient
from libs.service_kit import ServiceKit
from libs.settings import PlatformSettings, load_settings
from libs.telemetry import CONSUMER_PENDING, REGISTRY
from tests.support.alerts import alert_expr, evaluate, registry_samples
from tests.support.bus import consumer_settled, publish_event, stream_events, wait_until

SERVICE = "ops"
CONSUMER = "ops-work"


class Dependency:
    """A handler's dependency: raises ``failure()`` for the first ``failures`` calls, then works."""

    def __init__(self, failures: int = 0, failure: Callable[[], Exception] | None = None) -> None:
        self.failures = failures
        self.failure = failure or (lambda: TransientError("the git remote is unreachable"))
        self.calls = 0
        self.hang = False

    async def __call__(self, envelope: Any, data: Any, tx: Tx) -> None:
        self.calls += 1
        if self.hang:
            self.hang = False
            await asyncio.Event().wait()  # stuck until cancelled
        if self.calls <= self.failures:
            raise self.failure()
        await tx.conn.execute("INSERT INTO handled (event_id) VALUES (%s)", [envelope.id])


def fact(n: int = 1) -> RequestTornDown:
    return RequestTornDown(request_id=f"req-{n:016x}", generation=3, cluster_status="deleted")


class Harness:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.kits: list[ServiceKit] = []

    @property
    def prefix(self) -> str:
        return self.env["PLATFORM_EVENTS_SUBJECT_PREFIX"]

    @property
    def stream(self) -> str:
        return self.env["PLATFORM_EVENTS_STREAM"]

    async def start(
        self,
        dependency: Dependency,
        *,
        types: tuple[str, ...] = ("request.torn_down",),
        start: bool = True,
        **overrides: str,
    ) -> ServiceKit:
        settings = load_settings(PlatformSettings, {**self.env, **overrides})
        kit = await ServiceKit.open(service=SERVICE, schema=SERVICE, settings=settings, package=None)
        async with kit.pool.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS handled (event_id uuid PRIMARY KEY)")
        kit.consume("work", "request.>", dict.fromkeys(types, dependency))
        self.kits.append(kit)
        if start:
            await kit.start()
        return kit

    async def stop(self, kit: ServiceKit) -> None:
        await kit.stop()
        self.kits.remove(kit)

    async def handled(self, kit: ServiceKit) -> int:
        async with kit.pool.connection() as conn:
            row = await (await conn.execute("SELECT count(*) AS n FROM handled")).fetchone()
        return int(row["n"]) if row else 0


@pytest.fixture
async def harness(platform_env: dict[str, str]) -> AsyncIterator[Harness]:
    env = {
        **platform_env,
        "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS": "0.05",
        "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS": "0.2",
        "PLATFORM_OUTBOX_POLL_SECONDS": "0.1",
        "PLATFORM_CONSUMER_START_LOOKBACK_SECONDS": "0",
    }
    running = Harness(env)
    yield running
    for kit in list(running.kits):
        with contextlib.suppress(Exception):
            await kit.stop()


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> AsyncIterator[RpcClient]:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)
    await nc.close()


async def dead_letters(rpc: RpcClient) -> list[dict[str, Any]]:
    page = await rpc.call(SERVICE, "list_dead_letters", ListDeadLetters(include_replayed=True))
    return list(page["items"])


async def caught_up(kit: ServiceKit) -> bool:
    return await consumer_settled(kit.js, kit.settings.stream_name, CONSUMER)


# -- 6: outages of minutes ----------------------------------------------------------------------


async def test_an_unreachable_dependency_is_retried_past_max_attempts_and_reported(
    harness: Harness, rpc: RpcClient
) -> None:
    dependency = Dependency(failures=6)
    kit = await harness.start(
        dependency, PLATFORM_RECONCILE_MAX_ATTEMPTS="3", PLATFORM_RECONCILE_RETRY_FOR_SECONDS="60"
    )
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())

    await wait_until(lambda: harness.handled(kit), what="handled once the dependency is back")
    assert dependency.calls == 7
    assert await dead_letters(rpc) == []

    async def reports() -> list[RequestStageRetrying]:
        events = await stream_events(kit.js, harness.stream, harness.prefix, "request.stage_retrying")
        return [event.decode_data() for event in events]  # type: ignore[misc]

    retrying = await wait_until(lambda: _at_least(reports, 5), what="retries reported")
    # From the second failed attempt on, once per attempt; the first one stays quiet.
    assert [report.attempt for report in retrying] == [2, 3, 4, 5, 6]
    assert {(r.request_id, r.generation, r.stage, r.error) for r in retrying} == {
        (fact().request_id, 3, SERVICE, "the git remote is unreachable")
    }
    assert all(report.next_attempt_at > datetime(2020, 1, 1, tzinfo=UTC) for report in retrying)
    assert await stream_events(kit.js, harness.stream, harness.prefix, "request.failed") == []


async def _at_least(read: Callable[[], Any], count: int) -> Any:
    items = await read()
    return items if len(items) >= count else None


async def test_an_error_retrying_cannot_fix_fails_after_max_attempts(
    harness: Harness, rpc: RpcClient
) -> None:
    dependency = Dependency(failures=100, failure=lambda: ValueError("the manifest is invalid"))
    kit = await harness.start(
        dependency, PLATFORM_RECONCILE_MAX_ATTEMPTS="3", PLATFORM_RECONCILE_RETRY_FOR_SECONDS="3600"
    )
    before = registry_samples(REGISTRY)
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())

    [letter] = await wait_until(lambda: dead_letters(rpc), what="dead-lettered")
    assert (letter["attempts"], letter["kind"]) == (3, "failed")
    assert dependency.calls == 3
    assert await stream_events(kit.js, harness.stream, harness.prefix, "request.stage_retrying") == []
    # Over the scrapes before and after, the dead-letter alert names the consumer.
    assert evaluate(alert_expr("PlatformDeadLetters"), registry_samples(REGISTRY), before=before) == {
        (CONSUMER,): 1
    }


async def test_a_consumer_far_behind_the_stream_fires_the_lag_alert(harness: Harness) -> None:
    lagging = alert_expr("PlatformConsumerLagging")
    dependency = Dependency()
    kit = await harness.start(dependency, start=False, PLATFORM_RECONCILE_WORKERS="1")
    await kit.consumers[0].provision()  # the durable is there; its service was down meanwhile
    for n in range(520):
        await publish_event(kit.js, harness.prefix, fact(n).request_id, fact(n))
    CONSUMER_PENDING.labels(CONSUMER).set(0)
    assert not evaluate(lagging, registry_samples(REGISTRY))

    await kit.start()  # the consumer reports its lag with its first fetch

    async def firing() -> dict[tuple[str, ...], float]:
        return evaluate(lagging, registry_samples(REGISTRY))

    fired = await wait_until(firing, what="the lag alert")
    assert list(fired) == [(CONSUMER,)]
    assert fired[(CONSUMER,)] > 500


# -- 16: rolling upgrades -----------------------------------------------------------------------


def filters(config: Any) -> list[str]:
    """A durable's filter subjects, however the server holds them (one, or a list)."""
    return sorted(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))


def handled_filters(kit: ServiceKit, prefix: str, *types: str) -> list[str]:
    """What the durable filters on: one subject per handled type and its own redrives on NATS
    2.10+, else the one filter covering both, the whole stream."""
    if supports_filter_subjects(kit.nc):
        return sorted([*(f"{prefix}.{event_type}" for event_type in types), f"{prefix}.replay.{CONSUMER}.>"])
    return [f"{prefix}.>"]


async def test_the_durable_receives_only_the_types_it_has_handlers_for(harness: Harness) -> None:
    dependency = Dependency()
    kit = await harness.start(dependency, types=("request.torn_down", "request.unpublished"))
    info = await kit.js.consumer_info(harness.stream, CONSUMER)
    assert filters(info.config) == handled_filters(
        kit, harness.prefix, "request.torn_down", "request.unpublished"
    )
    other = RequestStageRetrying(
        request_id="req-1", generation=1, stage="x", error="y", attempt=2, next_attempt_at=datetime.now(UTC)
    )
    await publish_event(kit.js, harness.prefix, "req-1", other)
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())
    await wait_until(lambda: harness.handled(kit), what="handled")
    await wait_until(lambda: caught_up(kit), what="caught up")
    info = await kit.js.consumer_info(harness.stream, CONSUMER)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert dependency.calls == 1
    if supports_filter_subjects(kit.nc):
        # Only the handled event was ever delivered: the other one never reached the consumer.
        assert info.delivered.consumer_seq == 1
    else:
        # A server before 2.10 delivers both; the other one is acknowledged without a handler.
        assert info.delivered.consumer_seq == 2
    assert dependency.calls == 1


async def test_an_event_of_a_newer_version_is_parked_not_failed(harness: Harness, rpc: RpcClient) -> None:
    dependency = Dependency()
    kit = await harness.start(dependency)
    newer = msgspec.structs.replace(
        new_event("request.torn_down", "test", fact().request_id, fact()), data_version=2
    )
    await publish_event(kit.js, harness.prefix, fact().request_id, fact(), envelope=newer)

    [letter] = await wait_until(lambda: dead_letters(rpc), what="parked")
    assert letter["kind"] == "parked"
    assert letter["error"].startswith("parked: newer version")
    assert letter["event_id"] == newer.id
    await wait_until(lambda: caught_up(kit), what="acknowledged")
    assert dependency.calls == 0
    # Not a failure: nothing reports the request as failed.
    assert await stream_events(kit.js, harness.stream, harness.prefix, "request.failed") == []


async def test_a_new_consumer_starts_with_new_events_and_an_existing_one_keeps_its_place(
    harness: Harness,
) -> None:
    nc = await nats.connect(harness.env["PLATFORM_NATS_URL"])
    js = nc.jetstream()
    settings = load_settings(PlatformSettings, harness.env)
    await ensure_stream(js, settings)
    await publish_event(js, harness.prefix, fact(1).request_id, fact(1))  # history before the subscriber
    await nc.close()

    dependency = Dependency()
    kit = await harness.start(dependency)
    await publish_event(kit.js, harness.prefix, fact(2).request_id, fact(2))
    await wait_until(lambda: harness.handled(kit), what="new event handled")
    await wait_until(lambda: caught_up(kit), what="caught up")
    assert dependency.calls == 1  # the event from before the consumer existed was not replayed
    await harness.stop(kit)

    # A restart with other settings (and a registration asking for everything) keeps the place.
    kit = await harness.start(Dependency(), PLATFORM_RECONCILE_TIMEOUT_SECONDS="7")
    info = await kit.js.consumer_info(harness.stream, CONSUMER)
    assert DeliverPolicy(info.config.deliver_policy) is DeliverPolicy.NEW
    assert info.config.ack_wait == 7
    # Settled: the server has nothing left to deliver, so a replay would have been handled by now.
    await wait_until(lambda: caught_up(kit), what="the restarted durable settled")
    assert await harness.handled(kit) == 1


async def test_replicas_starting_together_share_one_durable(harness: Harness) -> None:
    """Two replicas that both find no durable create it at once; with a start-time lookback each
    asks for a different start, and the server refuses the second create. The loser must adopt
    the winner's consumer and run, not exit (it used to crash every replica start-up race)."""
    settings = load_settings(PlatformSettings, harness.env)
    nc = await nats.connect(harness.env["PLATFORM_NATS_URL"])
    await ensure_stream(nc.jetstream(), settings)
    await nc.close()
    lookback = {"PLATFORM_CONSUMER_START_LOOKBACK_SECONDS": "300"}
    first = await harness.start(Dependency(), start=False, **lookback)
    second = await harness.start(Dependency(), start=False, **lookback)
    # Both look up the missing durable before either creates it, as two processes do.
    await asyncio.gather(first.start(), second.start())
    await publish_event(first.js, harness.prefix, fact(1).request_id, fact(1))
    # Both replicas share one schema: the table counts the event once, whichever replica took it.
    await wait_until(lambda: harness.handled(first), what="the event handled by one of the replicas")
    await wait_until(lambda: caught_up(first), what="the shared durable caught up")
    assert await harness.handled(second) == 1


# -- 12: consumer and stream configuration ------------------------------------------------------


async def test_restart_brings_the_durable_in_line_with_the_settings(harness: Harness) -> None:
    kit = await harness.start(Dependency(), PLATFORM_RECONCILE_TIMEOUT_SECONDS="30")
    before = (await kit.js.consumer_info(harness.stream, CONSUMER)).config
    assert (before.ack_wait, before.max_deliver) == (30, kit.retry.server_max_deliver)
    assert before.max_deliver > kit.retry.last_attempt > 0  # finite, with headroom
    await harness.stop(kit)

    kit = await harness.start(
        Dependency(),
        types=("request.torn_down", "request.unpublished"),
        PLATFORM_RECONCILE_TIMEOUT_SECONDS="45",
        PLATFORM_RECONCILE_WORKERS="32",
        PLATFORM_RECONCILE_RETRY_FOR_SECONDS="7200",
    )
    after = (await kit.js.consumer_info(harness.stream, CONSUMER)).config
    assert after.ack_wait == 45
    assert after.max_ack_pending == 128
    assert after.max_deliver == kit.retry.server_max_deliver > before.max_deliver
    assert filters(after) == handled_filters(kit, harness.prefix, "request.torn_down", "request.unpublished")


async def test_a_durable_of_an_earlier_version_takes_its_redrives_after_a_restart(harness: Harness) -> None:
    """An upgrade from the version whose durables filtered on their types only: the restart
    adds the durable's redrive subject (on a server before 2.10 by recreating the durable
    where it had acknowledged), keeps its place, and a redrive reaches it."""
    settings = load_settings(PlatformSettings, harness.env)
    nc = await nats.connect(harness.env["PLATFORM_NATS_URL"])
    js = nc.jetstream()
    try:
        await ensure_stream(js, settings)
        await publish_event(js, harness.prefix, fact(1).request_id, fact(1))  # before the durable
        earlier = ConsumerConfig(
            durable_name=CONSUMER,
            filter_subject=f"{harness.prefix}.request.torn_down",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
        )
        await js.add_consumer(harness.stream, earlier)
        await publish_event(js, harness.prefix, fact(2).request_id, fact(2))  # while it was down
    finally:
        await nc.close()
    kit = await harness.start(Dependency())
    info = await kit.js.consumer_info(harness.stream, CONSUMER)
    assert filters(info.config) == handled_filters(kit, harness.prefix, "request.torn_down")
    redriven = new_event("request.torn_down", "test", fact(3).request_id, fact(3))
    await kit.js.publish(
        kit.subjects.replay(CONSUMER, redriven.type),
        encode_envelope(redriven),
        headers=cloudevents_headers(redriven),
    )

    async def both() -> bool:
        return await harness.handled(kit) == 2

    await wait_until(both, what="the event from while it was down and the redrive handled")
    await wait_until(lambda: caught_up(kit), what="caught up")
    assert await harness.handled(kit) == 2  # its place kept: nothing from before it existed


async def test_service_start_creates_a_missing_stream_but_only_migrate_changes_one(
    harness: Harness,
) -> None:
    settings = load_settings(PlatformSettings, harness.env)
    nc = await nats.connect(settings.nats_url.reveal())
    js = nc.jetstream()
    try:
        assert await ensure_stream(js, settings) is True
        operator_changed = dataclasses.replace(
            stream_config(settings), max_age=3 * 24 * 3600, duplicate_window=600
        )
        await js.update_stream(operator_changed)

        kit = await harness.start(Dependency())
        info = await js.stream_info(settings.stream_name)
        assert (info.config.max_age, info.config.duplicate_window) == (3 * 24 * 3600, 600)
        await harness.stop(kit)

        await apply_stream_config(js, settings)
        info = await js.stream_info(settings.stream_name)
        assert (info.config.max_age, info.config.duplicate_window) == (
            settings.stream_max_age_days * 24 * 3600,
            settings.stream_duplicate_window_seconds,
        )
    finally:
        await nc.close()


# -- 11: lost consumer or stream ----------------------------------------------------------------


async def test_a_deleted_consumer_is_recreated_and_consuming_goes_on(harness: Harness) -> None:
    dependency = Dependency()
    kit = await harness.start(dependency)
    await publish_event(kit.js, harness.prefix, fact(1).request_id, fact(1))
    await wait_until(lambda: harness.handled(kit), what="first handled")

    await kit.js.delete_consumer(harness.stream, CONSUMER)
    await publish_event(kit.js, harness.prefix, fact(2).request_id, fact(2))

    async def both() -> bool:
        return await harness.handled(kit) == 2

    await wait_until(both, what="handled after the consumer was recreated")
    info = await kit.js.consumer_info(harness.stream, CONSUMER)
    assert filters(info.config) == handled_filters(kit, harness.prefix, "request.torn_down")


async def test_a_deleted_stream_is_recreated_and_consuming_goes_on(harness: Harness) -> None:
    dependency = Dependency()
    kit = await harness.start(dependency)
    await kit.js.delete_stream(harness.stream)

    async def recreated() -> bool:
        with contextlib.suppress(Exception):
            await kit.js.consumer_info(harness.stream, CONSUMER)
            return True
        return False

    await wait_until(recreated, what="stream and consumer recreated")
    await publish_event(kit.js, harness.prefix, fact(3).request_id, fact(3))
    await wait_until(lambda: harness.handled(kit), what="handled on the recreated stream")


# -- 13: the server gives up on a message ------------------------------------------------------


async def test_a_message_the_process_dies_on_is_dead_lettered_from_the_advisory(
    harness: Harness, rpc: RpcClient
) -> None:
    dependency = Dependency()
    kit = await harness.start(
        dependency,
        start=False,
        PLATFORM_RECONCILE_MAX_ATTEMPTS="1",
        PLATFORM_RECONCILE_RETRY_FOR_SECONDS="0",
        PLATFORM_RECONCILE_TIMEOUT_SECONDS="1",
    )
    consumer = kit.consumers[0]
    assert kit.retry.server_max_deliver == 4
    # A replica that takes the message and dies before it can finish or dead-letter it, every
    # time: its pulls are never acknowledged. The surviving replica only watches.
    await consumer.provision()
    await consumer.watch_advisories()
    await kit.relay.start()
    await kit.rpc.start()
    envelope = await publish_event(kit.js, harness.prefix, fact().request_id, fact())
    crashing = await kit.js.pull_subscribe_bind(durable=CONSUMER, stream=harness.stream)
    for _ in range(4):
        [message] = await crashing.fetch(1, timeout=5)
        assert message.data  # taken, then the process "dies"
    # The server gives up when it would deliver a fifth time (a replica is pulling). (A
    # server before 2.10 may deliver the give-up's own report: its durables take every type.)
    with contextlib.suppress(TimeoutError):
        again = await crashing.fetch(1, timeout=3)
        assert [m for m in again if m.metadata.sequence.stream == message.metadata.sequence.stream] == []

    [letter] = await wait_until(lambda: dead_letters(rpc), timeout=30, what="dead letter from the advisory")
    assert (letter["kind"], letter["event_id"], letter["attempts"]) == ("max_deliveries", envelope.id, 4)
    assert "stopped redelivering" in letter["error"]
    failed = [
        e.decode_data()
        for e in await stream_events(kit.js, harness.stream, harness.prefix, "request.failed")
        if e.source == SERVICE
    ]
    assert [(f.request_id, f.attempts) for f in failed] == [(fact().request_id, 4)]  # type: ignore[union-attr]
    await crashing.unsubscribe()


# -- 7: a handler past its deadline -----------------------------------------------------------


async def test_a_handler_past_its_deadline_is_cancelled_and_the_event_retried(harness: Harness) -> None:
    dependency = Dependency()
    dependency.hang = True
    kit = await harness.start(
        dependency, PLATFORM_RECONCILE_TIMEOUT_SECONDS="1", PLATFORM_RECONCILE_HANDLER_TIMEOUT_SECONDS="0.5"
    )
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())
    await wait_until(lambda: harness.handled(kit), what="handled on the next attempt")
    assert dependency.calls == 2
    await wait_until(lambda: caught_up(kit), what="acknowledged")


# -- 14: anti-entropy waits for a backlog ---------------------------------------------------------


async def test_a_consumer_behind_events_older_than_the_deadline_is_reported_as_backlog(
    harness: Harness,
) -> None:
    dependency = Dependency()
    kit = await harness.start(dependency, start=False)
    await kit.consumers[0].provision()  # the durable exists, but nobody consumes yet
    backlog = StreamBacklog(kit.js, harness.stream, durables=(CONSUMER,))
    assert await backlog.behind(0.3) == ["(unknown)"]  # no history of the stream yet: wait
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())
    await asyncio.sleep(0.4)
    await backlog.behind(0.3)  # the event is now older than the deadline ...
    await asyncio.sleep(0.4)
    assert await backlog.behind(0.3) == [CONSUMER]  # ... and still undelivered: queued, not stuck

    await kit.start()
    await wait_until(lambda: harness.handled(kit), what="handled")
    assert await backlog.behind(0.3) == []


@pytest.mark.parametrize("tap", ["debug-tap", f"{SERVICE}-tap"])
async def test_a_durable_of_no_platform_consumer_does_not_postpone_anti_entropy(
    harness: Harness, tap: str
) -> None:
    kit = await harness.start(Dependency())
    # An operator's debugging tap, a downstream tool's durable named like the service's (the
    # subscriber may name its durables anything but the platform's), the durable of a
    # consumer an upgrade renamed: it exists, nobody pulls from it, and it would otherwise
    # postpone anti-entropy for ever.
    await kit.js.add_consumer(harness.stream, ConsumerConfig(durable_name=tap, ack_policy=AckPolicy.EXPLICIT))
    backlog = StreamBacklog(kit.js, harness.stream, durables=(CONSUMER,))
    assert await backlog.behind(0.3) == ["(unknown)"]
    await publish_event(kit.js, harness.prefix, fact().request_id, fact())
    await wait_until(lambda: harness.handled(kit), what="the service's consumer handled everything")
    await backlog.behind(0.3)
    await asyncio.sleep(0.4)  # the event is now older than the deadline; only the tap has it pending
    info = await kit.js.consumer_info(harness.stream, tap)
    assert info.num_pending == 1
    assert await backlog.behind(0.3) == []
