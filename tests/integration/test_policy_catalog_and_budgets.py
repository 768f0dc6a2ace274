"""The policy service with intake and approval on real NATS and Postgres: admin catalog edits,
seeding, team budgets and their ledger, decisions stored on the request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from contracts.events import RequestRejected, RequestTeardownRequested
from contracts.models import Actor, RequestSpec
from contracts.rpc import (
    CreateRequest,
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
from libs.rpc import RpcClient, RpcError
from tests.support.api_flows import PREVIEW
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.services import answering, catalog_replicated, running_service, running_services

pytestmark = pytest.mark.integration

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


async def settled(rpc: RpcClient, request_id: str) -> dict[str, Any]:
    async def decided() -> Any:
        current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
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
        dry_run = CreateRequest(body={**PREVIEW, "region": "eu-west-1"}, actor=ALICE, dry_run=True)
        with pytest.raises(RpcError) as refused:
            await rpc.call("intake", "create_request", dry_run)
        assert [d["field"] for d in refused.value.details] == ["region"]

        body = await class_body(rpc, "preview", allowed_regions=["us-east-1", "us-west-2", "eu-west-1"])
        started = time.monotonic()
        upserted = await rpc.call(
            "policy", "upsert_class", UpsertClass(name="preview", body=body, actor=ROOT)
        )
        assert (upserted["created"], upserted["revision"]) == (False, 2)

        async def accepted() -> Any:
            try:
                return await rpc.call("intake", "create_request", dry_run)
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
        assert upsert["revision"] == 3  # no re-seed bumped it in between


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


async def test_concurrent_requests_cannot_both_squeeze_under_the_budget(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    async with running_services(["policy", "intake", "approval"], platform_env):
        await catalog_replicated(rpc)
        await set_budget(rpc, 450)  # room for exactly three previews of $150
        ids = await asyncio.gather(*(create(rpc, app=f"app-{n}") for n in range(8)))
        outcomes = [(await settled(rpc, request_id))["policy_decision"]["outcome"] for request_id in ids]
        assert sorted(outcomes) == ["allowed"] * 3 + ["rejected"] * 5
        team = await rpc.call("policy", "get_team", GetTeam(team="payments", actor=ROOT))
        assert team["spend_usd"] == 450.0


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
        assert empty == {
            "team": "billing",
            "monthly_budget_usd": None,
            "spend_usd": 0.0,
            "remaining_usd": None,
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
        assert updated["monthly_budget_usd"] == 1234.5
        assert updated["budget_updated_by"] == "root@example.com"
        assert datetime.fromisoformat(updated["budget_updated_at"]) <= datetime.now(UTC)
        assert (await set_budget(rpc, None, team="billing"))["monthly_budget_usd"] is None
