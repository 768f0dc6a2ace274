"""The approval service with intake: a class that needs two distinct approvers.

The seed classes need one approval at most, so the test plays the policy service for a
class of its own: it announces the class (``class.upserted``) and the decision
(``request.policy_evaluated``) on the bus, as policy would. Everything else is the real
intake and approval services over real NATS and Postgres.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest

from contracts.attestation import sign_approval, verify_attestation
from contracts.events import ClassUpserted, RequestApprovalRecorded, RequestApproved, RequestPolicyEvaluated
from contracts.models import Actor, EnvironmentClass, EnvironmentPlan, LimitRangeValues
from contracts.rpc import ApproveRequest, CreateRequest, GetRequest, RejectRequest
from libs.rpc import RpcClient, RpcError
from tests.support.api_flows import request_body
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.isolation import TEST_APPROVAL_SECRET, TEST_ATTESTATION_SECRET
from tests.support.services import running_services

REGULATED = EnvironmentClass(
    name="regulated",
    allowed_regions=["us-east-1"],
    requires_approval=True,
    approvals_required=2,
    auto_reconcile=False,
    max_ttl_hours=24,
    quota_profile="large",
)
PLAN = EnvironmentPlan(
    class_name="regulated",
    namespaces=1,
    quota_profile="large",
    resource_quota={"pods": "40"},
    limit_range=LimitRangeValues(default={}, default_request={}, max={}),
    policy_packs=["baseline-security"],
    requires_approval=True,
    approvals_required=2,
)
ALICE = Actor(subject="alice", actor="alice@example.com", role="requester", teams=["payments"])
BOB = Actor(subject="bob", actor="bob@example.com", role="approver")
CAROL = Actor(subject="carol", actor="carol@example.com", role="approver")
BODY = request_body(
    app="vault", ttl_hours=12, repository="https://github.com/example/vault.git", **{"class": "regulated"}
)


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> AsyncIterator[RpcClient]:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=10)
    await nc.close()


def without_email(actor: Actor) -> Actor:
    """``actor``'s account as a token without the email claim shows it: the subject is the actor."""
    return Actor(subject=actor.subject, actor=actor.subject, role="approver")


def approval(request_id: str, actor: Actor) -> ApproveRequest:
    signature = sign_approval(
        TEST_APPROVAL_SECRET, request_id=request_id, actor=actor.actor, class_name="regulated"
    )
    return ApproveRequest(id=request_id, actor=actor, signature=signature)


async def pending_request(rpc: RpcClient, js: Any, prefix: str) -> str:
    """A stored request in ``pending_approval`` for the two-approver class."""
    await publish_event(
        js,
        prefix,
        "regulated",
        ClassUpserted(
            environment_class=REGULATED, revision=99, updated_by="test", updated_at=datetime.now(UTC)
        ),
        source="policy",
    )

    async def created() -> Any:
        # Refused as an unknown class until intake has replicated it.
        try:
            return await rpc.call("intake", "create_request", CreateRequest(body=BODY, actor=ALICE))
        except RpcError as exc:
            if exc.code != "validation":
                raise
            return None

    request_id = str((await wait_until(created, what="class replicated to intake"))["request"]["id"])
    await publish_event(
        js,
        prefix,
        request_id,
        RequestPolicyEvaluated(
            request_id=request_id,
            outcome="allowed",
            requires_approval=True,
            approvals_required=2,
            auto_reconcile=False,
            created_by=ALICE.actor,
            class_name="regulated",
            plan=PLAN,
            created_by_subject=ALICE.subject,
        ),
        source="policy",
    )

    async def pending() -> bool:
        view = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
        return bool(view["status"] == "pending_approval")

    await wait_until(pending, what="pending_approval")
    return request_id


async def test_two_distinct_approvers_are_needed(platform_env: dict[str, str], rpc: RpcClient) -> None:
    prefix = platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"]
    async with running_services(["intake", "approval"], platform_env) as kits:
        js = kits["intake"].js
        request_id = await pending_request(rpc, js, prefix)

        first = await rpc.call("approval", "approve", approval(request_id, BOB))
        assert first == {
            "request_id": request_id,
            "approver": BOB.actor,
            "approvals_received": 1,
            "approvals_required": 2,
            "status": "pending",
        }
        with pytest.raises(RpcError) as twice:
            await rpc.call("approval", "approve", approval(request_id, BOB))
        assert twice.value.code == "conflict"
        assert "1 of 2" in twice.value.message
        with pytest.raises(RpcError) as own:
            await rpc.call("approval", "approve", approval(request_id, ALICE))
        assert own.value.code == "forbidden"
        # The same people with tokens lacking the email claim (the actor falls back to the
        # subject): still the creator, still an approver who has approved.
        with pytest.raises(RpcError) as own_subject:
            await rpc.call("approval", "approve", approval(request_id, without_email(ALICE)))
        assert own_subject.value.code == "forbidden"
        with pytest.raises(RpcError) as twice_subject:
            await rpc.call("approval", "approve", approval(request_id, without_email(BOB)))
        assert twice_subject.value.code == "conflict"

        async def shows_bob() -> Any:
            view = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
            return view if view["approvals"] else None

        view = await wait_until(shows_bob, what="first approval visible")
        assert view["status"] == "pending_approval"
        assert [a["approver"] for a in view["approvals"]] == [BOB.actor]

        second = await rpc.call("approval", "approve", approval(request_id, CAROL))
        assert (second["approvals_received"], second["status"]) == (2, "approved")

        async def approved() -> Any:
            current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=BOB))
            return current if current["status"] == "approved" else None

        view = await wait_until(approved, what="approved")
        assert view["approved_by"] == "bob@example.com, carol@example.com"
        assert sorted(a["approver"] for a in view["approvals"]) == [BOB.actor, CAROL.actor]
        assert all(a["attestation"] for a in view["approvals"])  # an approver reads them

        events = [
            e
            for e in await stream_events(js, platform_env["PLATFORM_EVENTS_STREAM"], prefix, "request.>")
            if e.subject == request_id
        ]
        recorded = [e.decode_data() for e in events if e.type == "request.approval_recorded"]
        assert [
            (r.approver, r.approvals_received) for r in recorded if isinstance(r, RequestApprovalRecorded)
        ] == [
            (BOB.actor, 1),
            (CAROL.actor, 2),
        ]
        [decision] = [e.decode_data() for e in events if e.type == "request.approved"]
        assert isinstance(decision, RequestApproved)
        assert decision.approved_by == [BOB.actor, CAROL.actor]
        assert len(decision.approvals) == 2
        for attestation in decision.approvals:
            assert attestation.class_name == "regulated"
            # Signed with the server-side attestation key, which approvers do not hold.
            assert verify_attestation(TEST_ATTESTATION_SECRET, attestation)
            assert not verify_attestation(TEST_APPROVAL_SECRET, attestation)
        timeline = await rpc.call("intake", "list_events", GetRequest(id=request_id, actor=ALICE))
        types = [entry["type"] for entry in timeline["items"]]
        assert types.count("request.approval_recorded") == 2
        assert types[-1] == "request.approved"
        # A requester reads the approvals without their attestations.
        requester_view = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
        assert len(requester_view["approvals"]) == 2
        assert all(a["attestation"] is None for a in requester_view["approvals"])

        with pytest.raises(RpcError) as after:
            await rpc.call(
                "approval", "reject", RejectRequest(id=request_id, actor=BOB, body={"reason": "late"})
            )
        assert after.value.code == "conflict"


async def test_approvals_are_unavailable_without_a_secret(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    env = {k: v for k, v in platform_env.items() if k != "PLATFORM_APPROVAL_HMAC_SECRET"}
    async with running_services(["approval"], env):
        with pytest.raises(RpcError) as failure:
            await rpc.call("approval", "approve", approval("req-00000000000000ab", BOB))
    assert failure.value.code == "unavailable"
    assert "not configured" in failure.value.message
