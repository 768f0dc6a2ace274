"""The policy service with intake and approval on real NATS and Postgres: admin catalog edits,
seeding, team budgets and their ledger, decisions stored on the request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from contracts.envelope import new_event
from contracts.events import ClassUpserted, RequestRejected, RequestSubmitted, RequestTeardownRequested
from contracts.models import Actor, RequestSpec
from contracts.rpc import (
    CreateRequest,
    DeleteRequest,
    GetClass,
    GetPolicyPack,
    GetQuotaProfile,
    GetRequest,
    GetTeam,
    SetTeamBudget,
    UpsertClass,
    UpsertPolicyPack,
    UpsertQuotaProfile,
)
from libs.bus import Subjects
from libs.database import Pool, open_pool
from libs.inbox import Tx
from libs.migrations import discover, migrate
from libs.outbox import Outbox
from libs.rpc import RpcClient, RpcError
from libs.service_kit import ServiceKit
from services.policy.adapters import repository
from services.policy.service_layer.handlers import PolicyService
from tests.support.api_flows import PREVIEW
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.services import answering, catalog_replicated, running_service, running_services

ALICE = Actor(subject="alice", actor="alice@example.com", role="requester", teams=["payments"])
ROOT = Actor(subject="root", actor="root@example.com", role="admin")
SETTLED = {"queued", "approved", "pending_approval", "rejected", "failed"}


@pytest.fixture
async def nc(platform_env: dict[str, str]) -> AsyncIterator[NatsClient]:
    client = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield client
    await client.close()


@pytest.fixture
def rpc(nc: NatsClient, platform_env: dict[str, str]) -> RpcClient:
    return RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)


async def class_body(rpc: RpcClient, name: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = await rpc.call("policy", "get_class", GetClass(name=name))
    body.pop("name")
    body.update(changes)
    return body


async def create(rpc: RpcClient, **changes: Any) -> str:
    created = await rpc.call(
        "intake", "create_request", CreateRequest(body={**PREVIEW, **changes}, actor=ALICE)
    )
    return str(created["request"]["id"])


async def settled(rpc: RpcClient, request_id: str, actor: Actor = ALICE) -> dict[str, Any]:
    async def decided() -> Any:
        current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=actor))
        return current if current["status"] in SETTLED else None

    result: dict[str, Any] = await wait_until(decided, what=f"{request_id} decided")
    return result


async def set_budget(rpc: RpcClient, monthly_usd: float | None, team: str = "payments") -> dict[str, Any]:
    reply: dict[str, Any] = await rpc.call(
        "policy", "set_team_budget", SetTeamBudget(team=team, body={"monthly_usd": monthly_usd}, actor=ROOT)
    )
    return reply


async def test_an_admin_class_edit_reaches_intake_within_a_second_and_decides_the_next_request(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake"], platform_env) as kits:
        await catalog_replicated(rpc)
        dry_run = CreateRequest(body={**PREVIEW, "region": "eu-west-1"}, actor=ALICE)
        with pytest.raises(RpcError) as refused:
            await rpc.call("intake", "validate_request", dry_run)
        assert [d["field"] for d in refused.value.details] == ["region"]

        body = await class_body(rpc, "preview", allowed_regions=["us-east-1", "us-west-2", "eu-west-1"])
        started = time.monotonic()
        upserted = await rpc.call(
            "policy", "upsert_class", UpsertClass(name="preview", body=body, actor=ROOT)
        )
        assert (upserted["created"], upserted["revision"]) == (False, 2)

        async def accepted() -> Any:
            try:
                return await rpc.call("intake", "validate_request", dry_run)
            except RpcError:
                return None

        validated = await wait_until(accepted, interval=0.01, what="intake accepts eu-west-1")
        assert time.monotonic() - started < 1.0
        assert validated["spec"]["region"] == "eu-west-1"

        # The edit is announced once, with its revision and author.
        events = await stream_events(
            kits["policy"].js,
            platform_env["PLATFORM_EVENTS_STREAM"],
            platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
            "class.upserted",
        )
        preview = [e.decode_data() for e in events if e.subject == "preview"]
        assert [(e.revision, e.updated_by) for e in preview] == [(1, "seed"), (2, "root@example.com")]
        assert preview[-1].environment_class.allowed_regions[-1] == "eu-west-1"


async def test_seeding_never_overwrites_an_admin_edit(platform_env: dict[str, str], rpc: RpcClient) -> None:
    async with running_service("policy", platform_env):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        body = await class_body(rpc, "preview", max_ttl_hours=48)
        await rpc.call("policy", "upsert_class", UpsertClass(name="preview", body=body, actor=ROOT))
        pack: dict[str, Any] = await rpc.call(
            "policy", "get_policy_pack", GetPolicyPack(name="audit-retention")
        )
        pack.pop("name")
        pack["metadata"]["retention-days"] = "730"
        await rpc.call(
            "policy", "upsert_policy_pack", UpsertPolicyPack(name="audit-retention", body=pack, actor=ROOT)
        )
        profile: dict[str, Any] = await rpc.call("policy", "get_quota_profile", GetQuotaProfile(name="small"))
        profile.pop("name")
        profile["resource_quota"]["pods"]["min"] = 12
        await rpc.call(
            "policy", "upsert_quota_profile", UpsertQuotaProfile(name="small", body=profile, actor=ROOT)
        )

    # A restart (or an upgrade shipping changed seeds) seeds again: nothing edited changes.
    async with running_service("policy", platform_env):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        assert (await rpc.call("policy", "get_class", GetClass(name="preview")))["max_ttl_hours"] == 48
        pack = await rpc.call("policy", "get_policy_pack", GetPolicyPack(name="audit-retention"))
        assert pack["metadata"]["retention-days"] == "730"
        profile = await rpc.call("policy", "get_quota_profile", GetQuotaProfile(name="small"))
        assert profile["resource_quota"]["pods"]["min"] == 12
        upsert = await rpc.call(
            "policy",
            "upsert_class",
            UpsertClass(name="preview", body=await class_body(rpc, "preview"), actor=ROOT),
        )
        # No re-seed bumped the revision in between, and the same content again is no edit.
        assert (upsert["revision"], upsert["unchanged"]) == (2, True)


async def test_an_upgrade_caps_the_unedited_seed_classes_and_leaves_edited_ones_alone(
    platform_env: dict[str, str], rpc: RpcClient, nc: NatsClient
) -> None:
    async with running_service("policy", platform_env):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        body = await class_body(rpc, "shared-staging", max_environments_per_team=None)
        await rpc.call("policy", "upsert_class", UpsertClass(name="shared-staging", body=body, actor=ROOT))
    # The classes as a release before the cap stored them.
    pool = await open_pool(platform_env["PLATFORM_POSTGRES_DSN"], "policy", "policy-test")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE environment_classes SET definition = definition - 'max_environments_per_team'"
        )
    await pool.close()

    async with running_service("policy", platform_env):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        preview = await rpc.call("policy", "get_class", GetClass(name="preview"))
        assert preview["max_environments_per_team"] == 50
        staging = await rpc.call("policy", "get_class", GetClass(name="shared-staging"))
        assert staging["max_environments_per_team"] is None  # an admin's class stays theirs

        async def announced() -> list[int]:
            events = await stream_events(
                nc.jetstream(),
                platform_env["PLATFORM_EVENTS_STREAM"],
                platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
                "class.upserted",
            )
            data = [event.decode_data() for event in events if event.subject == "preview"]
            return [upserted.revision for upserted in data if isinstance(upserted, ClassUpserted)]

        await wait_until(lambda: announced_is(announced, [1, 2]), what="the upgraded class announced")

    # A second start finds nothing left to upgrade.
    async with running_service("policy", platform_env):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        upsert = await rpc.call(
            "policy",
            "upsert_class",
            UpsertClass(name="preview", body=await class_body(rpc, "preview"), actor=ROOT),
        )
        assert (upsert["revision"], upsert["unchanged"]) == (2, True)


async def announced_is(announced: Callable[[], Awaitable[list[int]]], revisions: list[int]) -> bool:
    return await announced() == revisions


async def test_a_request_over_the_team_budget_is_rejected_with_every_reason(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        await set_budget(rpc, 200)
        first = await settled(rpc, await create(rpc, app="one"))
        assert first["status"] == "queued"
        assert first["policy_decision"]["budget"] == {
            "team": "payments",
            "monthly_budget_usd": 200.0,
            "active_spend_usd": 0.0,
            "request_cost_usd": 150.0,
            "projected_spend_usd": 150.0,
            "exceeded": False,
        }

        second = await settled(
            rpc, await create(rpc, app="two", repository="https://git.evil.example/x/y.git")
        )
        assert second["status"] == "rejected"
        decision = second["policy_decision"]
        assert decision["outcome"] == "rejected"
        assert [(r["code"], r["pack"], r["effect"]) for r in decision["reasons"]] == [
            ("repository_host_not_allowed", "baseline-security", "deny"),
            ("team_budget_exceeded", "cost-guardrails", "deny"),
        ]
        assert decision["budget"]["projected_spend_usd"] == 300.0
        assert "over its budget of $200.00" in second["last_error"]
        assert "repository host git.evil.example" in second["last_error"]

        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ALICE))
        assert (team["monthly_budget_usd"], team["spend_usd"], team["remaining_usd"]) == (200.0, 150.0, 50.0)
        assert [e["request_id"] for e in team["active_environments"]] == [first["id"]]


async def test_over_budget_with_the_approval_option_waits_for_approval(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        pack: dict[str, Any] = await rpc.call(
            "policy", "get_policy_pack", GetPolicyPack(name="cost-guardrails")
        )
        pack.pop("name")
        pack["rules"][0] = {"type": "team_budget", "on_exceed": "require_approval"}
        await rpc.call(
            "policy", "upsert_policy_pack", UpsertPolicyPack(name="cost-guardrails", body=pack, actor=ROOT)
        )
        await set_budget(rpc, 100)

        request = await settled(rpc, await create(rpc))
        assert request["status"] == "pending_approval"  # a preview, normally approved on the spot
        decision = request["policy_decision"]
        assert (decision["outcome"], decision["requires_approval"], decision["approvals_required"]) == (
            "allowed",
            True,
            1,
        )
        assert [(r["code"], r["effect"]) for r in decision["reasons"]] == [
            ("team_budget_exceeded", "require_approval")
        ]
        # Waiting for approval reserves the budget: an approval cannot push the team over it unseen.
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ALICE))
        assert team["spend_usd"] == 150.0


@contextlib.asynccontextmanager
async def policy_replicas(environment: dict[str, str], count: int = 2) -> AsyncIterator[list[ServiceKit]]:
    """``count`` policy services on the same database and stream, as replicas run in production:
    they share each durable consumer, so the events of one request spread over them."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_service("policy", environment)) for _ in range(count)]


async def test_concurrent_requests_cannot_both_squeeze_under_the_budget(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # Two policy replicas: the team's row lock, not the order within one process, serialises
    # the evaluations.
    async with policy_replicas(platform_env), running_services(["intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        await set_budget(rpc, 450)  # room for exactly three previews of $150
        ids = await asyncio.gather(*(create(rpc, app=f"app-{n}") for n in range(8)))
        outcomes = [(await settled(rpc, request_id))["policy_decision"]["outcome"] for request_id in ids]
        assert sorted(outcomes) == ["allowed"] * 3 + ["rejected"] * 5
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ROOT))
        assert team["spend_usd"] == 450.0


async def test_a_new_teams_first_requests_at_once_cannot_both_squeeze_under_the_default(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # No row for the team yet: the concurrent first evaluations create it, then queue on its lock.
    environment = {**platform_env, "PLATFORM_DEFAULT_TEAM_BUDGET_USD": "450"}
    async with policy_replicas(environment), running_services(["intake", "approval"], environment):
        await catalog_replicated(rpc)
        ids = await asyncio.gather(*(create(rpc, app=f"app-{n}") for n in range(8)))
        outcomes = [(await settled(rpc, request_id))["policy_decision"]["outcome"] for request_id in ids]
        assert sorted(outcomes) == ["allowed"] * 3 + ["rejected"] * 5
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ROOT))
        assert (team["spend_usd"], team["budget_source"]) == (450.0, "default")


async def test_a_team_without_a_budget_of_its_own_gets_the_default(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # Room for two previews of $150 under the default; no admin ever set payments a budget.
    environment = {**platform_env, "PLATFORM_DEFAULT_TEAM_BUDGET_USD": "300"}
    async with running_services(["policy", "intake", "approval"], environment):
        await catalog_replicated(rpc)
        first, second = [await settled(rpc, await create(rpc, app=f"app-{n}")) for n in range(2)]
        assert (first["status"], second["status"]) == ("queued", "queued")
        third = await settled(rpc, await create(rpc, app="app-3"))
        assert third["status"] == "rejected"
        assert [r["code"] for r in third["policy_decision"]["reasons"]] == ["team_budget_exceeded"]
        assert "over its budget of $300.00" in third["last_error"]
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ALICE))
        assert (team["monthly_budget_usd"], team["budget_source"], team["remaining_usd"]) == (
            300.0,
            "default",
            0.0,
        )
        # The team's own budget overrides the default, upwards too.
        assert (await set_budget(rpc, 450))["budget_source"] == "team"
        assert (await settled(rpc, await create(rpc, app="app-4")))["status"] == "queued"


async def test_without_a_default_budget_teams_have_none(platform_env: dict[str, str], rpc: RpcClient) -> None:
    environment = {**platform_env, "PLATFORM_DEFAULT_TEAM_BUDGET_USD": ""}
    async with running_service("policy", environment):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ALICE))
        assert (team["monthly_budget_usd"], team["budget_source"], team["remaining_usd"]) == (
            None,
            "none",
            None,
        )


async def test_a_team_cannot_hold_more_live_environments_of_a_class_than_it_caps(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # Two policy replicas evaluating at once: the team's row lock makes the count exact.
    async with policy_replicas(platform_env), running_services(["intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        body = await class_body(rpc, "preview", max_environments_per_team=2)
        await rpc.call("policy", "upsert_class", UpsertClass(name="preview", body=body, actor=ROOT))
        assert (await rpc.call("policy", "get_class", GetClass(name="preview")))[
            "max_environments_per_team"
        ] == 2
        ids = await asyncio.gather(*(create(rpc, app=f"app-{n}") for n in range(5)))
        decided = [await settled(rpc, request_id) for request_id in ids]
        assert sorted(r["status"] for r in decided) == ["queued"] * 2 + ["rejected"] * 3
        refused = next(r for r in decided if r["status"] == "rejected")
        assert [r["code"] for r in refused["policy_decision"]["reasons"]] == ["team_environment_limit"]
        assert (
            "team payments already has 2 live preview environments, the most class preview allows per team (2)"
            in refused["last_error"]
        )
        # Another team's allowance is its own.
        bob = Actor(subject="bob", actor="bob@example.com", role="requester", teams=["search"])
        other = await rpc.call(
            "intake", "create_request", CreateRequest(body={**PREVIEW, "team": "search"}, actor=bob)
        )
        assert (await settled(rpc, other["request"]["id"], bob))["status"] == "queued"
        # Deleting one of the team's environments frees its place.
        allowed = next(r["id"] for r in decided if r["status"] == "queued")
        await rpc.call("intake", "delete", DeleteRequest(id=allowed, actor=ALICE))
        await wait_until(
            lambda: team_spend_is(rpc, "payments", 150.0), what="the deleted environment released"
        )
        assert (await settled(rpc, await create(rpc, app="app-after")))["status"] == "queued"


async def team_spend_is(rpc: RpcClient, team: str, spend: float) -> bool:
    view = await rpc.call("policy", "get_team", GetTeam(team=team, actor=ROOT))
    return bool(view["spend_usd"] == spend)


async def test_batches_of_several_teams_on_two_replicas_keep_every_budget_exact(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    # Each replica evaluates a fetch in one transaction, taking the lock of every team in it:
    # batches spanning the same teams in other orders may deadlock, and are then evaluated one
    # by one. Either way every team ends with exactly what its budget allows.
    teams = [f"team-{n}" for n in range(4)]
    members = {
        team: Actor(subject=team, actor=f"{team}@example.com", role="requester", teams=[team])
        for team in teams
    }
    async with policy_replicas(platform_env), running_services(["intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        for team in teams:
            await set_budget(rpc, 450, team=team)  # room for exactly three previews of $150

        async def create_for(team: str, n: int) -> str:
            command = CreateRequest(body={**PREVIEW, "team": team, "app": f"app-{n}"}, actor=members[team])
            created = await rpc.call("intake", "create_request", command)
            return str(created["request"]["id"])

        made = await asyncio.gather(*(create_for(teams[n % 4], n) for n in range(24)))
        outcomes: dict[str, list[str]] = {team: [] for team in teams}
        for n, request_id in enumerate(made):
            team = teams[n % 4]
            decided = await settled(rpc, request_id, members[team])
            outcomes[team].append(decided["policy_decision"]["outcome"])
        for team in teams:
            assert sorted(outcomes[team]) == ["allowed"] * 3 + ["rejected"] * 3, team
            view = await rpc.call("policy", "get_team", GetTeam(team=team, actor=ROOT))
            assert view["spend_usd"] == 450.0, team


async def test_rejected_and_torn_down_environments_stop_counting(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake", "approval"], platform_env) as kits:
        await catalog_replicated(rpc)
        await set_budget(rpc, 300)
        first, second = [await settled(rpc, await create(rpc, app=app)) for app in ("one", "two")]
        assert (await settled(rpc, await create(rpc, app="three")))["status"] == "rejected"

        js, prefix = kits["policy"].js, platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"]
        await publish_event(
            js,
            prefix,
            first["id"],
            RequestRejected(request_id=first["id"], rejected_by="bob@example.com"),
            source="approval",
        )
        spec = msgspec.convert({**PREVIEW, "app": "two"}, RequestSpec)
        await publish_event(
            js,
            prefix,
            second["id"],
            RequestTeardownRequested(
                request_id=second["id"],
                generation=1,
                spec=spec,
                gitops_path="clusters/x",
                namespace="ns",
                requested_by="alice@example.com",
                reason="expired",
            ),
            source="intake",
        )

        async def released() -> Any:
            team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ROOT))
            return team if team["spend_usd"] == 0 else None

        team = await wait_until(released, what="both environments released")
        assert team["active_environments"] == []
        assert (await settled(rpc, await create(rpc, app="four")))["status"] == "queued"


# -- a release handled before the reservation it undoes ------------------------------------------------

SPEC = msgspec.convert(PREVIEW, RequestSpec)


def submitted(request_id: str) -> RequestSubmitted:
    return RequestSubmitted(
        request_id=request_id, spec=SPEC, created_by=ALICE.actor, created_at=datetime.now(UTC)
    )


def teardown(request_id: str) -> RequestTeardownRequested:
    return RequestTeardownRequested(
        request_id=request_id,
        generation=2,
        spec=SPEC,
        gitops_path=f"clusters/us-east-1/teams/payments/payments-api/{request_id}",
        namespace=f"payments-payments-api-{request_id[-8:]}",
        requested_by=ALICE.actor,
    )


@contextlib.asynccontextmanager
async def policy_service_layer(dsn: str) -> AsyncIterator[tuple[PolicyService, Pool]]:
    """The policy service layer on its migrated, seeded schema; the test calls the handlers
    itself, so it decides the order (and the overlap) of their transactions."""
    await migrate(dsn, "policy", discover("services.policy"))
    pool = await open_pool(dsn, "policy", "policy-test")
    service = PolicyService(pool=pool, outbox=Outbox("policy", "policy", Subjects("t.events", "t.rpc")))
    await service.seed_catalog()
    try:
        yield service, pool
    finally:
        await pool.close()


async def handle_submitted(service: PolicyService, pool: Pool, data: RequestSubmitted) -> None:
    envelope = new_event("request.submitted", "intake", data.request_id, data)
    async with pool.connection() as conn, conn.transaction():
        await service.on_request_submitted(envelope, data, Tx(conn, service.outbox))


async def handle_teardown(service: PolicyService, pool: Pool, data: RequestTeardownRequested) -> None:
    envelope = new_event("request.teardown_requested", "intake", data.request_id, data)
    async with pool.connection() as conn, conn.transaction():
        await service.on_teardown_requested(envelope, data, Tx(conn, service.outbox))


async def spend_and_active(pool: Pool) -> tuple[float, list[str]]:
    async with pool.connection() as conn:
        spend, _ = await repository.team_usage(conn, "payments", "preview")
        active = [e.request_id for e in await repository.active_environments(conn, "payments")]
    return spend, active


async def test_a_teardown_handled_before_the_evaluation_reserves_nothing(database: str) -> None:
    """Deleted right after it was created: the teardown reaches policy's teardowns consumer
    before the evaluate consumer has handled the submission. The later evaluation must not
    reserve the request's cost (it would never be released)."""
    async with policy_service_layer(database) as (service, pool):
        async with pool.connection() as conn, conn.transaction():
            await repository.set_team_budget(conn, "payments", 200.0, "root@example.com")
        deleted = "req-00000000000000d1"
        await handle_teardown(service, pool, teardown(deleted))
        await handle_submitted(service, pool, submitted(deleted))
        assert await spend_and_active(pool) == (0.0, [])

        # So the team's next request fits its $200 budget (with the leak: $150 + $150, rejected).
        following = "req-00000000000000d2"
        await handle_submitted(service, pool, submitted(following))
        assert await spend_and_active(pool) == (150.0, [following])
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT request_id, outcome FROM decisions ORDER BY request_id")
            assert [(r["request_id"], r["outcome"]) for r in await cursor.fetchall()] == [
                (deleted, "allowed"),
                (following, "allowed"),
            ]
        # A redelivered teardown changes nothing; the usual order still releases.
        await handle_teardown(service, pool, teardown(deleted))
        await handle_teardown(service, pool, teardown(following))
        assert await spend_and_active(pool) == (0.0, [])


@pytest.mark.parametrize("first", ["teardown", "evaluation"])
async def test_overlapping_release_and_reservation_end_released_whichever_commits_first(
    database: str, first: str
) -> None:
    """Two replicas, one handling the teardown and one the evaluation at the same time: the
    first transaction is still open when the second starts. Either way nothing stays reserved."""
    async with policy_service_layer(database) as (service, pool):
        request_id = "req-00000000000000e1"
        envelope_t = new_event("request.teardown_requested", "intake", request_id, teardown(request_id))
        envelope_s = new_event("request.submitted", "intake", request_id, submitted(request_id))

        async def second() -> None:
            if first == "teardown":
                await handle_submitted(service, pool, submitted(request_id))
            else:
                await handle_teardown(service, pool, teardown(request_id))

        async with pool.connection() as conn:
            async with conn.transaction():
                tx = Tx(conn, service.outbox)
                if first == "teardown":
                    await service.on_teardown_requested(envelope_t, teardown(request_id), tx)
                else:
                    await service.on_request_submitted(envelope_s, submitted(request_id), tx)
                other = asyncio.create_task(second())
                await asyncio.sleep(0.3)  # the other replica's transaction is under way
            await asyncio.wait_for(other, 10)
        assert await spend_and_active(pool) == (0.0, [])


async def test_requests_deleted_right_after_creation_leave_no_spend(
    platform_env: dict[str, str], rpc: RpcClient, nc: NatsClient
) -> None:
    """The reviewer's reproduction through the real services: a burst of create-then-delete,
    two policy replicas sharing the consumers. Every request is gone, so the team spends nothing."""
    async with policy_replicas(platform_env), running_services(["intake", "approval"], platform_env):
        await catalog_replicated(rpc)

        async def create_and_delete(n: int) -> str:
            request_id = await create(rpc, app=f"burst-{n}")
            await rpc.call("intake", "delete", DeleteRequest(id=request_id, actor=ALICE))
            return request_id

        ids = set(await asyncio.gather(*(create_and_delete(n) for n in range(40))))
        js = nc.jetstream()
        stream = platform_env["PLATFORM_EVENTS_STREAM"]
        prefix = platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"]

        async def policy_done() -> bool:
            # Every submission evaluated (the event is published only after its commit) and
            # every teardown handled (acknowledged only after its commit).
            evaluated = {
                e.subject for e in await stream_events(js, stream, prefix, "request.policy_evaluated")
            }
            teardowns = await js.consumer_info(stream, "policy-teardowns")
            return ids <= evaluated and teardowns.num_pending == 0 and teardowns.num_ack_pending == 0

        await wait_until(policy_done, timeout=60, interval=0.2, what="policy handled every event")
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ROOT))
        assert (team["spend_usd"], team["active_environments"]) == (0.0, [])


async def test_team_reads_are_scoped_for_requesters_and_budgets_are_validated(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_service("policy", platform_env):
        await wait_until(lambda: answering(rpc, "policy"), what="policy answering")
        with pytest.raises(RpcError) as forbidden:
            await rpc.call("policy", "get_team", GetTeam(team="billing", actor=ALICE))
        assert forbidden.value.code == "forbidden"
        viewer = Actor(subject="v", actor="v@example.com", role="viewer", teams=["payments"])
        empty = await rpc.call("policy", "get_team", GetTeam(team="billing", actor=viewer))
        # No budget of its own: the default for such teams applies (PLATFORM_DEFAULT_TEAM_BUDGET_USD).
        assert empty == {
            "team": "billing",
            "monthly_budget_usd": 50000.0,
            "budget_source": "default",
            "spend_usd": 0.0,
            "remaining_usd": 50000.0,
            "active_environments": [],
            "budget_updated_at": None,
            "budget_updated_by": None,
        }
        with pytest.raises(RpcError) as invalid:
            await rpc.call(
                "policy",
                "set_team_budget",
                SetTeamBudget(team="billing", body={"monthly_usd": "lots"}, actor=ROOT),
            )
        assert invalid.value.code == "validation"
        assert invalid.value.details == [{"field": "monthly_usd", "message": "must be a number"}]
        updated = await set_budget(rpc, 1234.5, team="billing")
        assert (updated["monthly_budget_usd"], updated["budget_source"]) == (1234.5, "team")
        assert updated["budget_updated_by"] == "root@example.com"
        assert datetime.fromisoformat(updated["budget_updated_at"]) <= datetime.now(UTC)
        # Removing the team's own budget puts it back on the default.
        removed = await set_budget(rpc, None, team="billing")
        assert (removed["monthly_budget_usd"], removed["budget_source"]) == (50000.0, "default")
