"""Intake, policy and approval together: a request travels from RPC to reconcile_requested."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import pytest

from contracts.envelope import encode_envelope, new_event
from contracts.events import RequestExtended, RequestFailed
from contracts.models import Actor
from contracts.rpc import CreateRequest, GetRequest, ListClasses, ListRequests
from libs.outbox import Outbox
from libs.rpc import RpcClient, RpcError
from libs.telemetry import REGISTRY
from services.intake.adapters import metrics
from services.intake.service_layer.handlers import IntakeService
from tests.support.alerts import alert_expr, evaluate, registry_samples
from tests.support.api_flows import PREVIEW
from tests.support.bus import stream_events, wait_until
from tests.support.seed_plans import QUOTAS
from tests.support.services import catalog_replicated, queued_preview, running_services

ALICE = Actor(subject="alice", actor="alice@example.com", role="requester", teams=["payments"])


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> Any:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)
    await nc.close()


async def test_preview_request_is_evaluated_approved_and_queued(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake", "approval"], platform_env) as kits:
        await catalog_replicated(rpc)
        classes = await rpc.call("policy", "list_classes", ListClasses())
        assert [c["name"] for c in classes["items"]] == ["preview", "production", "shared-staging"]

        created = await rpc.call("intake", "create_request", CreateRequest(body=PREVIEW, actor=ALICE))
        assert created["created"] is True
        request = created["request"]
        assert request["status"] == "submitted"
        assert request["created_by"] == "alice@example.com"

        async def queued() -> Any:
            current = await rpc.call("intake", "get_request", GetRequest(id=request["id"], actor=ALICE))
            return current if current["status"] == "queued" else None

        current = await wait_until(queued, what="request queued")
        assert current["generation"] == 1
        assert current["quota_profile"] == "small"
        assert current["policy_packs"] == ["baseline-security", "preview-networking", "cost-guardrails"]
        assert current["estimated_monthly_cost_usd"] == 150
        assert current["approved_by"] == "system:auto-approval"
        assert current["policy_decision"]["outcome"] == "allowed"

        js = kits["intake"].js
        events = await stream_events(
            js,
            platform_env["PLATFORM_EVENTS_STREAM"],
            platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
            "request.>",
        )
        types = [e.type for e in events if e.subject == request["id"]]
        assert types == [
            "request.submitted",
            "request.policy_evaluated",
            "request.approved",
            "request.reconcile_requested",
        ]
        reconcile = events[types.index("request.reconcile_requested")].decode_data()
        assert reconcile.plan.resource_quota == QUOTAS["preview"]

        timeline = await rpc.call("intake", "list_events", GetRequest(id=request["id"], actor=ALICE))
        assert [entry["type"] for entry in timeline["items"]] == types
        # Each entry is the event itself: its id and its time to the microsecond, however the
        # row was written (a projected event's entry goes in with the record's update).
        ours = [e for e in events if e.subject == request["id"]]
        assert [(entry["event_id"], entry["time"]) for entry in timeline["items"]] == [
            (e.id, e.time.isoformat().replace("+00:00", "Z")) for e in ours
        ]
        # The automatic approval is a step of its own: "approved", then the reconcile queues it.
        assert [(entry["status_after"], entry["applied"]) for entry in timeline["items"]] == [
            ("submitted", True),
            ("submitted", True),
            ("approved", True),
            ("queued", True),
        ]


@dataclass
class OlderReplica:
    """Stages events into intake's outbox as a replica of the release before did: without a
    timeline entry (its consumer recorded them on the way back)."""

    pool: Any
    outbox: Outbox
    rpc: RpcClient
    request_id: str

    async def stage(self, data: Any = None, *, age_seconds: float = 0) -> str:
        extended = RequestExtended(
            request_id=self.request_id, ttl_hours=48, previous_ttl_hours=24, extended_by="bob@example.com"
        )
        async with self.pool.connection() as conn, conn.transaction():
            envelope = await self.outbox.add(conn, self.request_id, data or extended)
        await self.age(envelope.id, age_seconds)
        return envelope.id

    async def age(self, event_id: str, seconds: float) -> None:
        """As if the row had been staged ``seconds`` ago (its transaction's start, as now() says)."""
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE outbox SET created_at = now() - make_interval(secs => %s) WHERE event_id = %s",
                [seconds, event_id],
            )

    async def timeline(self, event_type: str = "request.extended") -> list[dict[str, Any]]:
        reply = await self.rpc.call("intake", "list_events", GetRequest(id=self.request_id, actor=ALICE))
        return [entry for entry in reply["items"] if entry["type"] == event_type]


@contextlib.asynccontextmanager
async def older_replica(platform_env: dict[str, str], rpc: RpcClient) -> AsyncIterator[OlderReplica]:
    """A queued preview request, intake (sweeper off: the tests run its passes), and an older replica."""
    environment = {**platform_env, "PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS": "0"}
    async with running_services(["policy", "intake", "approval"], environment) as kits:
        request_id = (await queued_preview(rpc, ALICE))["id"]
        pool = kits["intake"].pool
        async with pool.connection() as conn:
            # A pass stops at the first row younger than a minute (the request's own events):
            # as if they had been staged two minutes ago.
            await conn.execute("UPDATE outbox SET created_at = created_at - interval '2 minutes'")
        yield OlderReplica(pool, kits["intake"].outbox, rpc, request_id)


async def test_own_events_an_earlier_release_staged_without_an_entry_are_recorded(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    """Intake records its own events as it stages them, and its consumer no longer takes them
    back. A release before recorded them only on the way back, so during a rolling upgrade
    what its replicas stage is found in the outbox and recorded by the sweeper's pass."""
    async with older_replica(platform_env, rpc) as older:
        service = IntakeService(pool=older.pool, outbox=older.outbox)
        first = await older.stage(age_seconds=120)
        second = await older.stage()  # staged just now: not settled yet

        assert await service.record_staged_events() == 1
        [entry] = await older.timeline()
        assert (entry["event_id"], entry["applied"], entry["status_after"]) == (first, True, "queued")

        # The unsettled one is checked once it has settled, and nothing is recorded twice.
        await older.age(second, 120)
        assert await service.record_staged_events() == 1
        assert await service.record_staged_events() == 0
        assert [entry["event_id"] for entry in await older.timeline()] == [first, second]
        # Events from this release were recorded when staged: the pass found nothing else.
        [submitted] = await older.timeline("request.submitted")
        assert (submitted["applied"], submitted["status_after"]) == (True, "submitted")


async def test_an_unsettled_row_holds_back_the_rows_staged_after_it(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # R is staged (inserted) first, by a transaction that began 30 s ago; S after it, by one
    # that began 61 s ago. S has settled, R has not: passing S would pass R by for good.
    async with older_replica(platform_env, rpc) as older:
        service = IntakeService(pool=older.pool, outbox=older.outbox)
        r = await older.stage(age_seconds=30)
        s = await older.stage(age_seconds=61)

        assert await service.record_staged_events() == 0
        await older.age(r, 61)
        assert await service.record_staged_events() == 2
        assert {entry["event_id"] for entry in await older.timeline()} == {r, s}


async def test_the_first_pass_looks_back_thirty_minutes(platform_env: dict[str, str], rpc: RpcClient) -> None:
    async with older_replica(platform_env, rpc) as older:
        long_ago = await older.stage(age_seconds=2 * 3600)  # its own release recorded it then
        recent = await older.stage(age_seconds=600)

        assert await IntakeService(pool=older.pool, outbox=older.outbox).record_staged_events() == 1
        assert [entry["event_id"] for entry in await older.timeline()] == [recent]
        assert long_ago != recent


async def test_a_redriven_copy_of_another_services_event_is_not_recorded_by_the_pass(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # A dead letter's redrive stages a copy in intake's outbox (a fresh row id, the event
    # unchanged); the event is another service's, which intake's consumer projects.
    async with older_replica(platform_env, rpc) as older:
        failed = RequestFailed(
            request_id=older.request_id, generation=1, stage="renderer", error="boom", attempts=5
        )
        envelope = new_event("request.failed", "renderer", older.request_id, failed)
        async with older.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO outbox (event_id, event_type, subject, ordering_key, payload, created_at)"
                " VALUES (gen_random_uuid(), %s, %s, %s, %s, now() - interval '5 minutes')",
                ["request.failed", "copy", older.request_id, encode_envelope(envelope)],
            )

        assert await IntakeService(pool=older.pool, outbox=older.outbox).record_staged_events() == 0
        assert await older.timeline("request.failed") == []


async def test_a_staged_event_that_cannot_be_recorded_is_passed_by(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with older_replica(platform_env, rpc) as older:
        service = IntakeService(pool=older.pool, outbox=older.outbox)
        unreadable = await older.stage(age_seconds=120)
        async with older.pool.connection() as conn:
            # Its payload no longer decodes (a foreign writer, a damaged row).
            await conn.execute(
                "UPDATE outbox SET payload = %s WHERE event_id = %s", [b"{not json", unreadable]
            )
        good = await older.stage(age_seconds=120)

        assert await service.record_staged_events() == 1
        assert await service.record_staged_events() == 0
        assert [entry["event_id"] for entry in await older.timeline()] == [good]


async def test_production_request_waits_for_approval(platform_env: dict[str, str], rpc: RpcClient) -> None:
    async with running_services(["policy", "intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        body = {**PREVIEW, "class": "production", "ttl_hours": 12}
        created = await rpc.call("intake", "create_request", CreateRequest(body=body, actor=ALICE))

        async def pending() -> Any:
            current = await rpc.call(
                "intake", "get_request", GetRequest(id=created["request"]["id"], actor=ALICE)
            )
            return current if current["status"] == "pending_approval" else None

        current = await wait_until(pending, what="pending_approval")
        assert current["quota_profile"] == "large"
        assert current["generation"] == 0


async def test_invalid_request_names_every_field(platform_env: dict[str, str], rpc: RpcClient) -> None:
    async with running_services(["policy", "intake"], platform_env):
        await catalog_replicated(rpc)
        body = {**PREVIEW, "team": "../etc", "ttl_hours": 500, "region": "eu-west-1", "colour": "red"}
        with pytest.raises(RpcError) as failure:
            await rpc.call("intake", "create_request", CreateRequest(body=body, actor=ALICE))
        assert failure.value.code == "validation"
        assert {d["field"] for d in failure.value.details} == {"team", "ttl_hours", "region", "colour"}
        listed = await rpc.call("intake", "list_requests", ListRequests(actor=ALICE))
        assert listed == {"items": [], "next_cursor": None}


async def test_a_dry_run_from_a_gateway_that_predates_validate_request_stores_nothing(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    """Released gateways ask create_request with dry_run for a plan: during a rolling deploy
    they must still get the validated request back, never a created one."""
    async with running_services(["policy", "intake"], platform_env):
        await catalog_replicated(rpc)
        old_gateway_message = {
            "body": PREVIEW,
            "actor": msgspec.to_builtins(ALICE),
            "idempotency_key": "k-dry",
            "dry_run": True,
        }
        validated = await rpc.call("intake", "create_request", old_gateway_message)
        assert "created" not in validated
        assert validated["placeholder_id"] is False
        assert validated["spec"]["app"] == PREVIEW["app"]
        listed = await rpc.call("intake", "list_requests", ListRequests(actor=ALICE))
        assert listed == {"items": [], "next_cursor": None}
        created = await rpc.call(
            "intake", "create_request", CreateRequest(body=PREVIEW, actor=ALICE, idempotency_key="k-dry")
        )
        assert created["request"]["id"] == validated["request_id"]


async def test_idempotency_key_returns_the_first_request(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake"], platform_env):
        await catalog_replicated(rpc)
        command = CreateRequest(body=PREVIEW, actor=ALICE, idempotency_key="k-1")
        first = await rpc.call("intake", "create_request", command)
        second = await rpc.call("intake", "create_request", command)
        assert first["created"]
        assert not second["created"]
        assert second["request"]["id"] == first["request"]["id"]
        different = msgspec.structs.replace(command, body={**PREVIEW, "ttl_hours": 12})
        with pytest.raises(RpcError) as failure:
            await rpc.call("intake", "create_request", different)
        assert failure.value.code == "conflict"


async def test_a_request_stuck_in_the_pipeline_is_asked_for_again(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    """Anti-entropy: no renderer answers (as if its event were lost); past the deadline intake
    asks again as a new generation, and the new request.reconcile_requested is on the stream."""
    async with running_services(["policy", "intake", "approval"], platform_env) as kits:
        request_id = (await queued_preview(rpc, ALICE))["id"]
        service = IntakeService(pool=kits["intake"].pool, outbox=kits["intake"].outbox)
        assert await service.retry_stalled(deadline_seconds=3600) == 0  # not stalled yet
        await asyncio.sleep(0.2)
        assert await service.retry_stalled(deadline_seconds=0.1) == 1
        current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
        assert (current["status"], current["generation"]) == ("queued", 2)

        async def second_request() -> Any:
            events = await stream_events(
                kits["intake"].js,
                platform_env["PLATFORM_EVENTS_STREAM"],
                platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
                "request.reconcile_requested",
            )
            return [
                e.decode_data() for e in events if e.subject == request_id and e.decode_data().generation == 2
            ]

        [again] = await wait_until(second_request, what="second reconcile_requested published")
        assert (again.reason, again.requested_by) == ("retry", "system:anti-entropy")


async def test_anti_entropy_postponed_by_a_backlog_that_never_drains_runs_anyway_after_three_deadlines(
    platform_env: dict[str, str], rpc: RpcClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer that stays behind (scaled to zero, wedged) postpones anti-entropy for at most
    three deadlines; then the stuck request is asked for again, with a warning saying why so late."""
    async with running_services(["policy", "intake", "approval"], platform_env) as kits:
        await catalog_replicated(rpc)
        created = await rpc.call("intake", "create_request", CreateRequest(body=PREVIEW, actor=ALICE))
        request_id = created["request"]["id"]

        async def generation() -> int:
            current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
            return int(current["generation"]) if current["status"] == "queued" else 0

        await wait_until(generation, what="request queued")

        async def always_behind(deadline_seconds: float) -> list[str]:
            return ["renderer-requests"]

        service = IntakeService(pool=kits["intake"].pool, outbox=kits["intake"].outbox)
        stopping = asyncio.Event()
        started = asyncio.get_running_loop().time()
        sweeping = asyncio.create_task(
            service.run_sweepers(
                stopping, interval=0.05, batch=10, deadline_seconds=0.3, backlog=always_behind
            )
        )
        try:
            await wait_until(lambda: _at_least(generation, 2), timeout=15, what="asked for again")
        finally:
            stopping.set()
            await sweeping
        assert asyncio.get_running_loop().time() - started >= 3 * 0.3  # postponed until then
        [warning] = [
            r for r in caplog.records if r.getMessage().startswith("anti-entropy postponed too long")
        ]
        assert warning.levelname == "WARNING"
        assert warning.fields["consumers"] == ["renderer-requests"]  # type: ignore[attr-defined]


async def _at_least(read: Any, value: int) -> bool:
    return bool(await read() >= value)


async def test_a_request_retried_by_anti_entropy_keeps_aging_until_the_stuck_alert_fires(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    """Each retry asks again but is not progress: the oldest-age gauge counts from the last
    change before the first retry, so PlatformRequestsStuck fires for a request nothing renders."""
    stuck = alert_expr("PlatformRequestsStuck")
    async with running_services(["policy", "intake", "approval"], platform_env) as kits:
        request_id = (await queued_preview(rpc, ALICE))["id"]  # no renderer runs: it stays queued
        pool = kits["intake"].pool
        service = IntakeService(pool=pool, outbox=kits["intake"].outbox)

        async def queued_age() -> float:
            await metrics.refresh(pool)
            age = REGISTRY.get_sample_value("platform_requests_oldest_age_seconds", {"status": "queued"})
            assert age is not None
            return age

        async def retried() -> None:
            # A pass skips a row another transaction holds (SKIP LOCKED), and intake's consumer
            # holds this one while it records the previous retry's event: ask until it is taken.
            taken = await wait_until(lambda: service.retry_stalled(deadline_seconds=0.1), what="a retry")
            assert taken == 1

        ages = []
        for _ in range(3):
            await asyncio.sleep(0.3)
            await retried()
            ages.append(await queued_age())
        generation = (await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE)))[
            "generation"
        ]
        assert generation == 4
        # Every retry just set updated_at, yet the age grew by the time between retries.
        assert ages[0] >= 0.3
        assert ages[2] - ages[0] >= 0.6, ages
        assert not evaluate(stuck, registry_samples(REGISTRY))

        # The request last changed an hour before the anti-entropy first found it stalled (and
        # the last retry is past the deadline, however quickly this test got here).
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE requests SET stalled_since = stalled_since - interval '1 hour',"
                " updated_at = updated_at - interval '1 second' WHERE id = %s",
                [request_id],
            )
        await retried()
        assert await queued_age() > 3600
        assert ("queued",) in evaluate(stuck, registry_samples(REGISTRY))
