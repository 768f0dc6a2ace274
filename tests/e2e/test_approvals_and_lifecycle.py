"""Approvals, reconcile, extend, delete and expiry through the real stack (seven processes, HTTP)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from contracts.attestation import verify_attestation
from contracts.events import RequestApproved, RequestPolicyEvaluated, RequestSubmitted
from tests.support.api_flows import SIGNATURE_HEADER, approve, create, events_of, example, signature
from tests.support.gateway import mint
from tests.support.isolation import TEST_APPROVAL_SECRET, TEST_ATTESTATION_SECRET, TEST_JWT_SECRET
from tests.support.stack import RunningStack

ALICE = "alice@example.com"  # requester, payments
BOB = "bob@example.com"  # approver
CAROL = "carol@example.com"  # approver
ROOT = "root@example.com"  # admin
SECRET_LIKE = ("nats://", "127.0.0.1", "postgresql://", "Traceback", TEST_APPROVAL_SECRET)


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    # A fast sweeper so the expiry test does not wait a minute.
    return {"PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def alice(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client(ALICE, "requester", ["payments"]) as client:
        yield client


@pytest.fixture(scope="module")
def bob(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client(BOB, "approver") as client:
        yield client


@pytest.fixture(scope="module")
def viewer(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client("vic@example.com", "viewer") as client:
        yield client


@pytest.fixture(scope="module")
def admin(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client(ROOT, "admin") as client:
        yield client


def pending_production(stack: RunningStack, alice: httpx.Client, **overrides: Any) -> str:
    request_id = str(create(alice, example("production", **overrides))["id"])
    stack.wait_for_status(alice, request_id, {"pending_approval"})
    return request_id


def ready_preview(stack: RunningStack, alice: httpx.Client, app: str) -> dict[str, Any]:
    request_id = create(alice, example("preview", app=app))["id"]
    ready = stack.wait_for_status(alice, request_id, {"ready", "failed"})
    assert ready["status"] == "ready", ready["last_error"]
    return ready


def timeline_types(client: httpx.Client, request_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/v1/environment-requests/{request_id}/events").json()["items"]]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code", "details", "type", "title", "status", "detail", "instance"}
    assert body["code"] == code
    assert not any(marker in response.text for marker in SECRET_LIKE)
    return body


# -- the production flow --------------------------------------------------------------------------


def test_production_needs_a_signed_approval_then_an_explicit_reconcile(
    stack: RunningStack,
    stack_env: dict[str, str],
    alice: httpx.Client,
    bob: httpx.Client,
    viewer: httpx.Client,
) -> None:
    request_id = pending_production(stack, alice)

    approved = approve(bob, request_id, BOB)
    assert approved.status_code == 200, approved.text
    view = approved.json()
    assert view["status"] == "approved"  # the reply already shows the decision
    assert view["approved_by"] == BOB
    assert [a["approver"] for a in view["approvals"]] == [BOB]
    attestation = view["approvals"][0]["attestation"]
    assert len(attestation) == 64  # approvers and admins see the attestation ...

    # ... viewers and requesters never do, and nobody ever sees the client's signature.
    client_signature = signature(request_id, BOB)
    for reader in (viewer, alice):
        seen = reader.get(f"/v1/environment-requests/{request_id}")
        assert seen.json()["approvals"][0]["attestation"] is None
        timeline = reader.get(f"/v1/environment-requests/{request_id}/events")
        assert attestation not in timeline.text
        assert client_signature not in seen.text + timeline.text
    assert client_signature not in bob.get(f"/v1/environment-requests/{request_id}/events").text

    # Production does not reconcile by itself; an approver asks, right after approving.
    reconcile = bob.post(f"/v1/environment-requests/{request_id}/reconcile")
    assert reconcile.status_code == 202, reconcile.text
    assert reconcile.json()["status"] == "queued"
    ready = stack.wait_for_status(bob, request_id, {"ready", "failed"})
    assert ready["status"] == "ready", ready["last_error"]
    assert ready["generation"] == 1

    # The attestation travels in request.approved, verifies, and ends up in the commit.
    [approved_event] = events_of(stack_env, request_id, "approved")
    data = approved_event.decode_data()
    assert isinstance(data, RequestApproved)
    assert data.automatic is False
    assert data.approved_by == [BOB]
    [carried] = data.approvals
    assert (carried.request_id, carried.approver, carried.class_name) == (request_id, BOB, "production")
    assert verify_attestation(TEST_ATTESTATION_SECRET, carried)
    assert not verify_attestation(TEST_APPROVAL_SECRET, carried)  # approvers cannot make one
    assert carried.signature == attestation
    message = stack.git("log", "-1", "--format=%B", ready["git_commit_sha"])
    assert f"Approved-by: {BOB}" in message
    assert f"Approval-Attestation: {attestation}" in message

    assert timeline_types(bob, request_id)[:5] == [
        "request.submitted",
        "request.policy_evaluated",
        "request.approval_recorded",
        "request.approved",
        "request.reconcile_requested",
    ]


def test_approve_right_after_create_waits_for_the_policy_decision(
    stack: RunningStack, alice: httpx.Client, bob: httpx.Client
) -> None:
    # The original API answered create with the request already pending; scripts that
    # approve immediately must keep working.
    request_id = create(alice, example("production", app="ledger-fast"))["id"]
    response = approve(bob, request_id, BOB)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"


WRONG_KEY = "not-the-approval-secret-0123456789"
BAD_SIGNATURES: dict[str, Callable[[str], dict[str, str]]] = {
    "missing": lambda _: {},
    "empty": lambda _: {SIGNATURE_HEADER: ""},
    "not hex": lambda _: {SIGNATURE_HEADER: "not-hex"},
    "uppercase hex": lambda rid: {SIGNATURE_HEADER: signature(rid, BOB).upper()},
    "another request": lambda _: {SIGNATURE_HEADER: signature("req-0000000000000000", BOB)},
    "another actor": lambda rid: {SIGNATURE_HEADER: signature(rid, CAROL)},
    "another class": lambda rid: {SIGNATURE_HEADER: signature(rid, BOB, class_name="preview")},
    "wrong key": lambda rid: {SIGNATURE_HEADER: signature(rid, BOB, secret=WRONG_KEY)},
}


@pytest.mark.parametrize("why", list(BAD_SIGNATURES))
def test_a_bad_approval_signature_is_401_and_changes_nothing(
    stack: RunningStack, alice: httpx.Client, bob: httpx.Client, why: str
) -> None:
    request_id = pending_production(stack, alice, app="ledger-sig")
    response = bob.post(
        f"/v1/environment-requests/{request_id}/approve", headers=BAD_SIGNATURES[why](request_id)
    )
    body = assert_error(response, 401, "unauthorized")
    assert "signature" in body["error"].lower()
    assert bob.get(f"/v1/environment-requests/{request_id}").json()["status"] == "pending_approval"
    assert "request.approval_recorded" not in timeline_types(bob, request_id)


def test_nobody_approves_a_request_they_created(stack: RunningStack, admin: httpx.Client) -> None:
    request_id = create(admin, example("production", app="ledger-own"))["id"]
    stack.wait_for_status(admin, request_id, {"pending_approval"})
    response = approve(admin, request_id, ROOT)
    body = assert_error(response, 403, "forbidden")
    assert "created this request" in body["error"]
    assert admin.get(f"/v1/environment-requests/{request_id}").json()["status"] == "pending_approval"


def test_a_token_without_the_email_claim_is_still_the_creator(
    stack: RunningStack, stack_env: dict[str, str], bob: httpx.Client
) -> None:
    """The reviewer's reproduction: the actor is the email claim falling back to ``sub``, so
    one person's second token without ``email`` is another actor. The subject, carried from
    the create through policy to approval, still makes it the creator."""

    def client(role: str, **claims: Any) -> httpx.Client:
        token = mint(role, secret=TEST_JWT_SECRET, ttl=600, **claims)
        return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    with client("admin", sub="u-1234", email="dana@example.com") as with_email:
        request_id = create(with_email, example("production", app="ledger-sub"))["id"]
        stack.wait_for_status(with_email, request_id, {"pending_approval"})
    with client("admin", sub="u-1234", email=None) as without_email:
        assert without_email.get("/v1/whoami").json()["actor"] == "u-1234"
        response = approve(without_email, request_id, "u-1234")
        body = assert_error(response, 403, "forbidden")
        assert "created this request" in body["error"]
        assert (
            without_email.get(f"/v1/environment-requests/{request_id}").json()["status"] == "pending_approval"
        )
    # The submission carried the subject, and policy passed it on to approval.
    [submitted] = [e.decode_data() for e in events_of(stack_env, request_id, "submitted")]
    [evaluated] = [e.decode_data() for e in events_of(stack_env, request_id, "policy_evaluated")]
    assert isinstance(submitted, RequestSubmitted)
    assert isinstance(evaluated, RequestPolicyEvaluated)
    assert submitted.created_by_subject == evaluated.created_by_subject == "u-1234"
    # Someone else still approves it.
    assert approve(bob, request_id, BOB).json()["status"] == "approved"


def test_approving_twice_or_after_rejection_is_409(
    stack: RunningStack, alice: httpx.Client, bob: httpx.Client, admin: httpx.Client
) -> None:
    request_id = pending_production(stack, alice, app="ledger-twice")
    assert approve(bob, request_id, BOB).status_code == 200
    again = approve(bob, request_id, BOB)
    assert "approved" in assert_error(again, 409, "conflict")["error"]
    assert_error(approve(admin, request_id, ROOT), 409, "conflict")
    assert_error(
        bob.post(f"/v1/environment-requests/{request_id}/reject", json={"reason": "too late"}),
        409,
        "conflict",
    )


def test_reject_ends_the_request_with_the_reason_in_its_timeline(
    stack: RunningStack, alice: httpx.Client, bob: httpx.Client
) -> None:
    request_id = pending_production(stack, alice, app="ledger-reject")
    path = f"/v1/environment-requests/{request_id}/reject"
    assert_error(bob.post(path, json={"reason": "  "}), 422, "validation")
    assert_error(bob.post(path, json={"reason": "x", "severity": "high"}), 422, "validation")
    assert_error(
        bob.post(path, content=b"not json", headers={"Content-Type": "application/json"}), 400, "validation"
    )
    assert_error(alice.post(path, json={"reason": "mine"}), 403, "forbidden")  # requesters cannot reject

    rejected = bob.post(path, json={"reason": "no change ticket"})
    assert rejected.status_code == 200, rejected.text
    view = rejected.json()
    assert view["status"] == "rejected"
    assert "no change ticket" in view["last_error"]
    assert BOB in view["last_error"]
    # Who, when and why, on the request itself (not only in its timeline).
    stored = bob.get(f"/v1/environment-requests/{request_id}").json()
    for shown in (view, stored):
        assert shown["rejected_by"] == BOB
        assert shown["rejection_reason"] == "no change ticket"
        assert shown["rejected_at"] is not None
    entries = bob.get(f"/v1/environment-requests/{request_id}/events").json()["items"]
    [rejection] = [e for e in entries if e["type"] == "request.rejected"]
    assert rejection["data"]["rejected_by"] == BOB
    assert rejection["status_after"] == "rejected"

    assert_error(approve(bob, request_id, BOB), 409, "conflict")
    assert_error(bob.post(f"/v1/environment-requests/{request_id}/reconcile"), 409, "conflict")


# -- reconcile ------------------------------------------------------------------------------------


def test_reconcile_rules(stack: RunningStack, alice: httpx.Client, bob: httpx.Client) -> None:
    pending = pending_production(stack, alice, app="ledger-rec")
    body = assert_error(bob.post(f"/v1/environment-requests/{pending}/reconcile"), 409, "conflict")
    assert (
        body["error"]
        == f"request {pending} is pending approval; it must be approved before it can be reconciled"
    )
    # A requester may not reconcile a class that needs approval, even once approved.
    assert approve(bob, pending, BOB).status_code == 200
    body = assert_error(alice.post(f"/v1/environment-requests/{pending}/reconcile"), 403, "forbidden")
    assert "approval" in body["error"]

    # ... but may re-run its own team's preview.
    ready = ready_preview(stack, alice, "web-rec")
    again = alice.post(f"/v1/environment-requests/{ready['id']}/reconcile")
    assert again.status_code == 202, again.text
    assert again.json()["generation"] == 2
    assert again.json()["status"] == "queued"
    busy = alice.post(f"/v1/environment-requests/{ready['id']}/reconcile")
    if busy.status_code != 202:  # the pipeline may already be done: then it is ready again
        assert_error(busy, 409, "conflict")
    final = stack.wait_for_status(alice, ready["id"], {"ready", "failed"})
    assert final["status"] == "ready"
    assert final["generation"] in (2, 3)
    assert final["expires_at"] == ready["expires_at"]  # re-running does not reset the TTL


def test_concurrent_transitions_have_exactly_one_winner(stack: RunningStack, alice: httpx.Client) -> None:
    ready = ready_preview(stack, alice, "web-race")
    path = f"/v1/environment-requests/{ready['id']}/reconcile"
    headers = dict(alice.headers)

    def post(_: int) -> int:
        return httpx.post(stack.api_url + path, headers=headers, timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        statuses = sorted(pool.map(post, range(4)))
    assert statuses == [202, 409, 409, 409]
    stack.wait_for_status(alice, ready["id"], {"ready"})

    # Optimistic concurrency for clients: If-Match with a version that is no longer current.
    current = alice.get(f"/v1/environment-requests/{ready['id']}").json()
    stale = current["version"] - 1
    response = alice.patch(
        f"/v1/environment-requests/{ready['id']}", json={"ttl_hours": 48}, headers={"If-Match": f'"{stale}"'}
    )
    assert "version" in assert_error(response, 409, "conflict")["error"]
    response = alice.patch(
        f"/v1/environment-requests/{ready['id']}",
        json={"ttl_hours": 48},
        headers={"If-Match": f'"{current["version"]}"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == current["version"] + 1


# -- extend, delete, expiry ------------------------------------------------------------------------


def test_extend_within_the_class_maximum(
    stack: RunningStack, alice: httpx.Client, viewer: httpx.Client
) -> None:
    ready = ready_preview(stack, alice, "web-extend")
    path = f"/v1/environment-requests/{ready['id']}"
    before = datetime.now(UTC)
    extended = alice.patch(path, json={"ttl_hours": 72})
    assert extended.status_code == 200, extended.text
    view = extended.json()
    assert view["ttl_hours"] == 72
    expires_at = datetime.fromisoformat(view["expires_at"])
    assert before + timedelta(hours=72) - timedelta(minutes=1) < expires_at < before + timedelta(hours=73)

    too_long = assert_error(alice.patch(path, json={"ttl_hours": 73}), 422, "validation")
    assert too_long["details"] == [
        {"field": "ttl_hours", "message": "must be between 1 and 72 for class preview"}
    ]
    fields = {
        d["field"]
        for d in assert_error(alice.patch(path, json={"ttl": 2, "app": "x"}), 422, "validation")["details"]
    }
    assert fields == {"ttl", "app", "ttl_hours"}
    assert_error(viewer.patch(path, json={"ttl_hours": 2}), 403, "forbidden")
    with stack.client("sam@example.com", "requester", ["search"]) as other_team:
        assert_error(other_team.patch(path, json={"ttl_hours": 2}), 403, "forbidden")
    extension = [e for e in alice.get(f"{path}/events").json()["items"] if e["type"] == "request.extended"]
    assert [(e["data"]["previous_ttl_hours"], e["data"]["ttl_hours"]) for e in extension] == [(24, 72)]


def test_delete_tears_the_environment_down(stack: RunningStack, alice: httpx.Client) -> None:
    ready = ready_preview(stack, alice, "web-delete")
    path = f"/v1/environment-requests/{ready['id']}"
    project_file = f"{ready['gitops_path']}/argocd-appproject.yaml"
    assert project_file in stack.git("ls-tree", "-r", "--name-only", "main").split()

    deleting = alice.delete(path)
    assert deleting.status_code == 202, deleting.text
    assert deleting.json()["status"] == "deleting"
    assert deleting.json()["generation"] == 2
    assert_error(alice.delete(path), 409, "conflict")

    gone = stack.wait_for_status(alice, ready["id"], {"deleted", "failed"})
    assert gone["status"] == "deleted", gone["last_error"]
    # The environment's Argo CD project goes with it: nothing is left granting its repository.
    assert ready["gitops_path"] not in stack.git("ls-tree", "-r", "--name-only", "main")
    assert timeline_types(alice, ready["id"])[-3:] == [
        "request.teardown_requested",
        "request.unpublished",
        "request.torn_down",
    ]
    # A normal teardown reads as one: every step applied, and the record says what happened.
    teardown = alice.get(f"{path}/events").json()["items"][-3:]
    assert [(e["applied"], e["status_after"]) for e in teardown] == [
        (True, "deleting"),
        (True, "deleting"),
        (True, "deleted"),
    ]
    assert gone["cluster_status"] == "not_applied"  # this stack runs with cluster apply off
    assert gone["namespace_deleted"] is False
    assert gone["deleted_at"] is not None
    removal = gone["git_removal_commit_sha"]
    assert stack.git("cat-file", "-t", removal).strip() == "commit"
    assert ready["gitops_path"] not in stack.git("ls-tree", "-r", "--name-only", removal)
    assert ready["gitops_path"] in stack.git("ls-tree", "-r", "--name-only", f"{removal}^")
    for response in (
        alice.delete(path),
        alice.patch(path, json={"ttl_hours": 2}),
        alice.post(f"{path}/reconcile"),
    ):
        assert_error(response, 409, "conflict")


def test_a_request_deleted_before_approval_ends_deleted(
    stack: RunningStack, alice: httpx.Client, bob: httpx.Client
) -> None:
    request_id = pending_production(stack, alice, app="ledger-drop")
    assert alice.delete(f"/v1/environment-requests/{request_id}").status_code == 202
    assert stack.wait_for_status(alice, request_id, {"deleted", "failed"})["status"] == "deleted"
    assert_error(approve(bob, request_id, BOB), 409, "conflict")


def test_ready_environments_expire_after_their_ttl(
    stack: RunningStack, stack_env: dict[str, str], alice: httpx.Client
) -> None:
    ready = ready_preview(stack, alice, "web-expire")
    # Travel in time: the TTL is hours; the sweeper runs every half second in this stack.
    with psycopg.connect(stack_env["PLATFORM_POSTGRES_DSN"], autocommit=True) as conn:
        conn.execute(
            "UPDATE intake.requests SET expires_at = now() - interval '1 minute' WHERE id = %s", [ready["id"]]
        )
    gone = stack.wait_for_status(alice, ready["id"], {"deleted", "failed"}, timeout=30)
    assert gone["status"] == "deleted", gone["last_error"]
    entries = alice.get(f"/v1/environment-requests/{ready['id']}/events").json()["items"]
    [teardown] = [e for e in entries if e["type"] == "request.teardown_requested"]
    assert (teardown["data"]["reason"], teardown["data"]["requested_by"]) == ("expired", "system:expiry")
    assert teardown["status_after"] == "expiring"


# -- the event feed --------------------------------------------------------------------------------


def test_the_event_feed_follows_every_visible_request(stack: RunningStack, alice: httpx.Client) -> None:
    end = alice.get("/v1/events", params={"after": "end"}).json()
    assert end["items"] == []
    request_id = create(alice, example("preview", app="web-feed"))["id"]
    stack.wait_for_status(alice, request_id, {"ready"})
    page = alice.get("/v1/events", params={"after": end["next_cursor"]}).json()
    mine = [e for e in page["items"] if e["request_id"] == request_id]
    assert [e["type"] for e in mine][:3] == [
        "request.submitted",
        "request.policy_evaluated",
        "request.approved",
    ]
    position = tuple(map(int, page["next_cursor"].split(".")))
    assert position > tuple(map(int, end["next_cursor"].split(".")))
    # Resuming from the returned cursor repeats nothing.
    later = alice.get("/v1/events", params={"after": page["next_cursor"]}).json()
    assert not {e["event_id"] for e in later["items"]} & {e["event_id"] for e in page["items"]}
    with stack.client("sam@example.com", "requester", ["search"]) as other_team:
        theirs = other_team.get("/v1/events", params={"request_id": request_id}).json()
    assert theirs["items"] == []
    assert_error(alice.get("/v1/events", params={"after": "abc"}), 422, "validation")


def test_the_approve_reply_always_shows_the_decision(
    stack: RunningStack, alice: httpx.Client, bob: httpx.Client
) -> None:
    # Regression: intake applies request.approval_recorded and request.approved one after
    # the other; answering after the first showed `pending_approval` for a met quorum.
    request_ids = [create(alice, example("production", app=f"ledger-q{i}"))["id"] for i in range(8)]
    for request_id in request_ids:
        stack.wait_for_status(alice, request_id, {"pending_approval"})
    statuses = [approve(bob, request_id, BOB).json()["status"] for request_id in request_ids]
    assert statuses == ["approved"] * len(request_ids)
