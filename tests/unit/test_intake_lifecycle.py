"""The request lifecycle rules of intake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.events import (
    DriftItem,
    RequestApprovalRecorded,
    RequestApproved,
    RequestBootstrapped,
    RequestDriftDetected,
    RequestExtended,
    RequestFailed,
    RequestPolicyEvaluated,
    RequestPublished,
    RequestReconcileRequested,
    RequestRejected,
    RequestRendered,
    RequestTeardownRequested,
    RequestTornDown,
    RequestUnpublished,
)
from contracts.models import EnvironmentPlan, LimitRangeValues, PolicyReason, RequestSpec
from libs.errors import Conflict, Forbidden
from services.intake.domain.model import EnvironmentRequest, OutOfOrder, Status

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SPEC = RequestSpec(
    app="api",
    team="payments",
    class_name="preview",
    region="us-east-1",
    ttl_hours=24,
    owner="alice",
    repository="https://github.com/example/api.git",
)
PLAN = EnvironmentPlan(
    class_name="preview",
    namespaces=1,
    quota_profile="small",
    resource_quota={"pods": "10"},
    limit_range=LimitRangeValues(default={}, default_request={}, max={}),
    policy_packs=["baseline-security"],
    estimated_monthly_cost_usd=150,
)


def evaluated(
    outcome: str = "allowed", requires_approval: bool = False, auto_reconcile: bool = True
) -> RequestPolicyEvaluated:
    return RequestPolicyEvaluated(
        request_id="req-1",
        outcome=outcome,
        requires_approval=requires_approval,
        auto_reconcile=auto_reconcile,
        plan=PLAN,
        reasons=[PolicyReason(code="x", message="over budget")] if outcome == "rejected" else [],
    )


def submitted() -> EnvironmentRequest:
    request = EnvironmentRequest.submit(SPEC, "alice", NOW, request_id="req-1")
    request.outgoing.clear()
    return request


def queued() -> EnvironmentRequest:
    request = submitted()
    request.apply(evaluated(), NOW)
    request.apply(RequestApproved(request_id="req-1", automatic=True, approved_by=["system"]), NOW)
    return request


def test_submit_emits_request_submitted_with_a_well_formed_id() -> None:
    request = EnvironmentRequest.submit(SPEC, "alice", NOW)
    assert request.id.startswith("req-")
    assert len(request.id) == 20
    assert request.status is Status.SUBMITTED
    assert [type(e).__name__ for e in request.outgoing] == ["RequestSubmitted"]


def test_auto_reconcile_class_is_queued_at_generation_one_after_approval() -> None:
    request = queued()
    assert request.status is Status.QUEUED
    # The approval itself reached "approved" (what its timeline entry shows); the queueing
    # that follows automatically is the reconcile's own step.
    assert request.reached is Status.APPROVED
    assert request.generation == 1
    assert isinstance(request.outgoing[-1], RequestReconcileRequested)
    assert request.outgoing[-1].generation == 1


def test_class_without_auto_reconcile_stops_at_approved() -> None:
    request = submitted()
    request.apply(evaluated(requires_approval=True, auto_reconcile=False), NOW)
    assert request.status is Status.PENDING_APPROVAL
    request.apply(RequestApproved(request_id="req-1", automatic=False, approved_by=["bob"]), NOW)
    assert request.status is Status.APPROVED
    assert request.generation == 0
    assert request.outgoing == []


def test_policy_rejection_records_the_reasons() -> None:
    request = submitted()
    request.apply(evaluated(outcome="rejected"), NOW)
    assert request.status is Status.REJECTED
    assert request.last_error == "over budget"
    assert (request.rejected_by, request.rejected_at, request.rejection_reason) == (
        "system:policy",
        NOW,
        "over budget",
    )


def pending() -> EnvironmentRequest:
    request = submitted()
    request.apply(evaluated(requires_approval=True, auto_reconcile=False), NOW)
    assert request.status is Status.PENDING_APPROVAL
    return request


def test_an_approvers_rejection_is_recorded_on_the_request() -> None:
    request = pending()
    later = NOW + timedelta(minutes=5)
    stated = [PolicyReason(code="rejected_by_approver", message="rejected by bob: no change ticket")]
    assert request.apply(
        RequestRejected(request_id="req-1", rejected_by="bob", reasons=stated, reason="no change ticket"),
        later,
    )
    assert request.status is Status.REJECTED
    assert (request.rejected_by, request.rejected_at, request.rejection_reason) == (
        "bob",
        later,
        "no change ticket",
    )
    assert request.last_error == "rejected by bob: no change ticket"


def test_a_rejection_from_an_older_approval_service_keeps_its_reason() -> None:
    request = pending()
    stated = [PolicyReason(code="rejected_by_approver", message="rejected by bob: no change ticket")]
    request.apply(RequestRejected(request_id="req-1", rejected_by="bob", reasons=stated), NOW)
    assert (request.rejected_by, request.rejection_reason) == ("bob", "rejected by bob: no change ticket")


def test_requests_that_were_not_rejected_have_no_rejection() -> None:
    request = queued()
    assert (request.rejected_by, request.rejected_at, request.rejection_reason) == (None, None, None)
    # A late rejection of a request already approved changes nothing.
    assert not request.apply(RequestRejected(request_id="req-1", rejected_by="bob"), NOW)
    assert request.rejected_by is None


def test_approval_before_policy_decision_is_retried_later() -> None:
    with pytest.raises(OutOfOrder):
        submitted().apply(RequestApproved(request_id="req-1", automatic=True), NOW)


def test_pipeline_moves_forward_and_ready_sets_expiry() -> None:
    request = queued()
    assert request.apply(
        RequestRendered(
            request_id="req-1", generation=1, gitops_path="p", namespace="ns", digest="d", files=[], spec=SPEC
        ),
        NOW,
    )
    assert request.status is Status.RECONCILING
    later = NOW + timedelta(seconds=5)
    request.apply(
        RequestBootstrapped(
            request_id="req-1", generation=1, cluster_status="not_applied", drift_status="not_checked"
        ),
        later,
    )
    assert request.status is Status.READY
    assert request.expires_at == later + timedelta(hours=24)


def test_late_event_records_facts_but_never_moves_status_back() -> None:
    request = queued()
    request.apply(
        RequestBootstrapped(
            request_id="req-1", generation=1, cluster_status="not_applied", drift_status="not_checked"
        ),
        NOW,
    )
    published = RequestPublished(
        request_id="req-1",
        generation=1,
        gitops_path="p",
        namespace="ns",
        region="us-east-1",
        commit_sha="abc",
        branch="main",
    )
    assert request.apply(published, NOW)
    assert request.status is Status.READY
    assert request.git_commit_sha == "abc"


def test_events_of_an_old_generation_are_ignored() -> None:
    request = queued()
    stale = RequestFailed(request_id="req-1", generation=0, stage="renderer", error="boom", attempts=5)
    other = RequestPublished(
        request_id="req-1",
        generation=7,
        gitops_path="p",
        namespace="ns",
        region="r",
        commit_sha="x",
        branch="main",
    )
    assert not request.apply(stale, NOW)
    assert not request.apply(other, NOW)
    assert request.status is Status.QUEUED


def test_failure_in_the_pipeline_marks_the_request_failed() -> None:
    request = queued()
    request.apply(
        RequestFailed(
            request_id="req-1", generation=1, stage="git_publisher", error="push rejected", attempts=5
        ),
        NOW,
    )
    assert request.status is Status.FAILED
    assert request.last_error == "git_publisher: push rejected"


# -- commands: reconcile, extend, delete, expiry ----------------------------------------------------


def ready(request: EnvironmentRequest | None = None) -> EnvironmentRequest:
    request = request or queued()
    request.apply(
        RequestBootstrapped(
            request_id="req-1",
            generation=request.generation,
            cluster_status="not_applied",
            drift_status="not_checked",
        ),
        NOW,
    )
    request.outgoing.clear()
    return request


def production() -> EnvironmentRequest:
    request = submitted()
    request.apply(evaluated(requires_approval=True, auto_reconcile=False), NOW)
    return request


def approved_production() -> EnvironmentRequest:
    request = production()
    request.apply(
        RequestApprovalRecorded(
            request_id="req-1",
            approver="bob",
            generation=0,
            decided_at=NOW,
            approvals_received=1,
            approvals_required=1,
        ),
        NOW,
    )
    request.apply(RequestApproved(request_id="req-1", automatic=False, approved_by=["bob"]), NOW)
    return request


def test_each_approval_shows_up_before_the_quorum() -> None:
    request = production()
    recorded = RequestApprovalRecorded(
        request_id="req-1",
        approver="bob",
        generation=0,
        decided_at=NOW,
        approvals_received=1,
        approvals_required=2,
    )
    assert request.apply(recorded, NOW)
    assert not request.apply(recorded, NOW)  # the same approver once
    assert request.status is Status.PENDING_APPROVAL
    assert [a["approver"] for a in request.approvals] == ["bob"]


def test_a_manual_reconcile_starts_the_next_generation() -> None:
    request = approved_production()
    request.reconcile(actor="bob", role="approver", now=NOW)
    assert (request.status, request.generation) == (Status.QUEUED, 1)
    [event] = request.outgoing
    assert isinstance(event, RequestReconcileRequested)
    assert (event.generation, event.requested_by, event.reason) == (1, "bob", "manual")


def test_reconciling_a_failed_request_is_a_retry() -> None:
    request = queued()
    request.apply(RequestFailed(request_id="req-1", generation=1, stage="x", error="y", attempts=5), NOW)
    request.outgoing.clear()
    request.reconcile(actor="alice", role="requester", now=NOW)
    assert request.outgoing[-1].reason == "retry"  # type: ignore[union-attr]
    assert request.generation == 2


def _rejected() -> EnvironmentRequest:
    request = submitted()
    request.apply(evaluated(outcome="rejected"), NOW)
    return request


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (production, "approved before"),
        (queued, "already in progress"),
        (_rejected, "rejected requests"),
    ],
)
def test_reconcile_is_409_outside_approved_ready_failed(make: Any, fragment: str) -> None:
    request = make()
    with pytest.raises(Conflict, match=fragment):
        request.reconcile(actor="bob", role="approver", now=NOW)


def test_requesters_reconcile_only_classes_without_approval() -> None:
    with pytest.raises(Forbidden, match="needs approval"):
        approved_production().reconcile(actor="alice", role="requester", now=NOW)
    preview = ready()
    preview.reconcile(actor="alice", role="requester", now=NOW)
    assert preview.status is Status.QUEUED


def test_a_failed_unapproved_request_cannot_skip_its_approval() -> None:
    request = production()
    request.apply(
        RequestFailed(request_id="req-1", generation=0, stage="approval", error="x", attempts=5), NOW
    )
    assert request.status is Status.FAILED
    with pytest.raises(Conflict, match="needs an approval"):
        request.reconcile(actor="bob", role="approver", now=NOW)


def test_extending_moves_the_expiry_from_now() -> None:
    request = ready()
    later = NOW + timedelta(hours=10)
    request.extend(ttl_hours=48, actor="alice", now=later)
    assert request.spec.ttl_hours == 48
    assert request.expires_at == later + timedelta(hours=48)
    [event] = request.outgoing
    assert isinstance(event, RequestExtended)
    assert (event.previous_ttl_hours, event.ttl_hours, event.extended_by) == (24, 48, "alice")


def test_extending_before_ready_only_changes_the_ttl() -> None:
    request = queued()
    request.extend(ttl_hours=2, actor="alice", now=NOW)
    assert (request.spec.ttl_hours, request.expires_at) == (2, None)


def test_delete_starts_a_teardown_generation() -> None:
    request = ready()
    request.namespace, request.gitops_path = (
        "payments-api-89abcdef",
        "clusters/us-east-1/teams/payments/api/req-1",
    )
    request.delete(actor="alice", now=NOW)
    assert (request.status, request.generation) == (Status.DELETING, 2)
    [event] = request.outgoing
    assert isinstance(event, RequestTeardownRequested)
    assert (event.generation, event.reason, event.requested_by) == (2, "deleted", "alice")
    assert (event.namespace, event.gitops_path) == (request.namespace, request.gitops_path)
    with pytest.raises(Conflict, match="already being torn down"):
        request.delete(actor="alice", now=NOW)
    for command in (
        lambda: request.extend(ttl_hours=2, actor="alice", now=NOW),
        lambda: request.reconcile(actor="bob", role="approver", now=NOW),
    ):
        with pytest.raises(Conflict):
            command()


def test_a_never_rendered_request_is_torn_down_where_it_would_have_been() -> None:
    request = EnvironmentRequest.submit(SPEC, "alice", NOW, request_id="req-0123456789abcdef")
    request.outgoing.clear()
    request.delete(actor="alice", now=NOW)
    [event] = request.outgoing
    assert isinstance(event, RequestTeardownRequested)
    assert event.gitops_path == "clusters/us-east-1/teams/payments/api/req-0123456789abcdef"
    assert event.namespace == "payments-api-89abcdef"


def test_torn_down_ends_deleted_and_stale_generations_do_not() -> None:
    request = ready()
    request.delete(actor="alice", now=NOW)
    assert not request.apply(RequestTornDown(request_id="req-1", generation=1, cluster_status="deleted"), NOW)
    assert request.apply(RequestTornDown(request_id="req-1", generation=2, cluster_status="deleted"), NOW)
    assert (request.status, request.cluster_status) == (Status.DELETED, "deleted")
    with pytest.raises(Conflict, match="already deleted"):
        request.delete(actor="alice", now=NOW)


def unpublished(generation: int = 2, commit_sha: str | None = "c0ffee" * 6 + "c0ff") -> RequestUnpublished:
    return RequestUnpublished(
        request_id="req-1",
        generation=generation,
        gitops_path="clusters/us-east-1/teams/payments/api/req-1",
        namespace="payments-api-req-1",
        region="us-east-1",
        commit_sha=commit_sha,
        branch="main",
    )


def test_a_normal_teardown_is_recorded_step_by_step_with_cluster_apply_off() -> None:
    request = ready()
    request.delete(actor="alice", now=NOW)
    assert not request.apply(unpublished(generation=1), NOW)  # the old generation's: stale
    assert request.apply(unpublished(), NOW)  # progress of this teardown, so applied
    assert request.git_removal_commit_sha == "c0ffee" * 6 + "c0ff"
    assert request.status is Status.DELETING
    later = NOW + timedelta(seconds=3)
    assert request.apply(
        RequestTornDown(request_id="req-1", generation=2, cluster_status="not_applied"), later
    )
    assert request.status is Status.DELETED
    # Apply off: nothing of ours was in the cluster, which the record says in so many words.
    assert (request.cluster_status, request.namespace_deleted, request.deleted_at) == (
        "not_applied",
        False,
        later,
    )
    assert request.last_error is None


def test_a_teardown_with_cluster_apply_on_says_the_namespace_was_deleted() -> None:
    request = ready()
    request.delete(actor="alice", now=NOW)
    request.apply(unpublished(commit_sha=None), NOW)  # nothing left to remove from git
    request.apply(RequestTornDown(request_id="req-1", generation=2, cluster_status="deleted"), NOW)
    assert (request.git_removal_commit_sha, request.namespace_deleted) == (None, True)


def test_later_drift_scans_show_on_the_ready_request() -> None:
    request = ready()
    item = DriftItem(
        kind="ResourceQuota", name="platform-defaults", field="spec.hard.pods", expected="10", actual="50"
    )
    drifted = RequestDriftDetected(
        request_id="req-1", generation=1, drift_status="drifted", drift_summary=[item]
    )
    assert request.apply(drifted, NOW)
    assert request.drift_status == "drifted"
    assert request.drift_summary == [
        {
            "kind": "ResourceQuota",
            "name": "platform-defaults",
            "field": "spec.hard.pods",
            "expected": "10",
            "actual": "50",
        }
    ]
    assert request.apply(RequestDriftDetected(request_id="req-1", generation=1, drift_status="in_sync"), NOW)
    assert (request.drift_status, request.drift_summary) == ("in_sync", [])
    # A scan of an older generation says nothing about the environment in place now.
    assert not request.apply(
        RequestDriftDetected(request_id="req-1", generation=0, drift_status="drifted"), NOW
    )


def test_a_failed_teardown_is_reported_and_can_be_retried() -> None:
    request = ready()
    request.delete(actor="alice", now=NOW)
    request.apply(
        RequestFailed(request_id="req-1", generation=2, stage="git_publisher", error="push", attempts=5), NOW
    )
    assert request.status is Status.FAILED
    assert request.last_error == "teardown failed in git_publisher: push"
    request.outgoing.clear()
    request.delete(actor="alice", now=NOW)
    assert (request.status, request.generation) == (Status.DELETING, 3)


def test_expiry_only_for_ready_or_failed_environments_past_their_ttl() -> None:
    request = ready()
    assert request.expires_at is not None
    assert not request.expire(request.expires_at - timedelta(seconds=1))
    assert request.expire(request.expires_at)
    assert request.status is Status.EXPIRING
    [event] = request.outgoing
    assert isinstance(event, RequestTeardownRequested)
    assert (event.reason, event.requested_by) == ("expired", "system:expiry")
    assert not queued().expire(NOW + timedelta(days=365))  # no expiry before it was ever ready


# -- findings of the correctness review ------------------------------------------------------------


def bootstrapped(generation: int = 1, cluster_status: str = "not_applied") -> RequestBootstrapped:
    return RequestBootstrapped(
        request_id="req-1", generation=generation, cluster_status=cluster_status, drift_status="not_checked"
    )


def test_a_bundle_the_cluster_refused_is_failed_not_ready() -> None:
    request = queued()
    request.apply(bootstrapped(cluster_status="apply_failed"), NOW)
    assert request.status is Status.FAILED
    assert request.cluster_status == "apply_failed"
    assert request.expires_at is None
    # The request.failed that follows adds the details without changing the status.
    details = RequestFailed(
        request_id="req-1",
        generation=1,
        stage="cluster_bootstrapper",
        error="ResourceQuota refused (422)",
        attempts=1,
    )
    assert request.apply(details, NOW)
    assert request.status is Status.FAILED
    assert request.last_error == "cluster_bootstrapper: ResourceQuota refused (422)"


def published_event(generation: int = 1) -> RequestPublished:
    return RequestPublished(
        request_id="req-1",
        generation=generation,
        gitops_path="clusters/us-east-1/teams/payments/api/req-1",
        namespace="payments-api-req1",
        region="us-east-1",
        commit_sha="abc",
        branch="main",
    )


def test_a_first_run_that_failed_after_publishing_expires_like_a_ready_one() -> None:
    """Its Git files and the part of the namespace the cluster took are removed by the sweeper."""
    request = queued()
    request.apply(published_event(), NOW)
    request.apply(bootstrapped(cluster_status="apply_failed"), NOW)
    assert request.status is Status.FAILED
    assert request.expires_at == NOW + timedelta(hours=24)
    request.outgoing.clear()
    assert not request.expire(NOW + timedelta(hours=23))
    assert request.expire(NOW + timedelta(hours=24))
    assert request.status is Status.EXPIRING
    [event] = request.outgoing
    assert isinstance(event, RequestTeardownRequested)
    assert (event.gitops_path, event.namespace) == (
        "clusters/us-east-1/teams/payments/api/req-1",
        "payments-api-req1",
    )


def test_a_failure_before_anything_was_rendered_never_expires() -> None:
    request = queued()
    request.apply(
        RequestFailed(request_id="req-1", generation=1, stage="renderer", error="x", attempts=5), NOW
    )
    assert (request.status, request.expires_at) == (Status.FAILED, None)


def test_a_retry_that_becomes_ready_gets_the_whole_ttl_from_then() -> None:
    request = queued()
    request.apply(published_event(), NOW)
    request.apply(
        RequestFailed(request_id="req-1", generation=1, stage="cluster_bootstrapper", error="x", attempts=5),
        NOW,
    )
    assert request.expires_at == NOW + timedelta(hours=24)
    later = NOW + timedelta(hours=20)
    request.reconcile(actor="alice", role="requester", now=later)
    request.apply(published_event(2), later)
    request.apply(bootstrapped(2), later)
    assert request.status is Status.READY
    assert request.expires_at == later + timedelta(hours=24)


def test_a_replayed_stage_resumes_a_failed_generation_and_sets_the_ttl() -> None:
    """After an operator replays the renderer's dead letter, the pipeline completes."""
    request = queued()
    request.apply(
        RequestFailed(request_id="req-1", generation=1, stage="renderer", error="x", attempts=5), NOW
    )
    assert request.status is Status.FAILED
    request.apply(
        RequestRendered(
            request_id="req-1", generation=1, gitops_path="p", namespace="ns", digest="d", files=[], spec=SPEC
        ),
        NOW,
    )
    assert request.status is Status.RECONCILING
    assert request.last_error is None
    later = NOW + timedelta(minutes=1)
    request.apply(bootstrapped(), later)
    assert request.status is Status.READY
    assert request.expires_at == later + timedelta(hours=24)


def test_an_earlier_stage_does_not_resume_a_later_stage_failure() -> None:
    request = queued()
    request.apply(
        RequestFailed(request_id="req-1", generation=1, stage="git_publisher", error="x", attempts=5), NOW
    )
    late_render = RequestRendered(
        request_id="req-1", generation=1, gitops_path="p", namespace="ns", digest="d", files=[], spec=SPEC
    )
    request.apply(late_render, NOW)
    assert request.status is Status.FAILED


def test_a_failed_teardown_is_not_expired_again_and_again() -> None:
    request = ready()
    request.expire(NOW + timedelta(days=2))
    request.apply(
        RequestFailed(
            request_id="req-1", generation=request.generation, stage="git_publisher", error="push", attempts=5
        ),
        NOW + timedelta(days=2),
    )
    assert request.status is Status.FAILED
    assert not request.is_expired(NOW + timedelta(days=3))
    request.delete(actor="alice", now=NOW + timedelta(days=3))  # the user retries it
    assert request.status is Status.DELETING


def test_stalled_work_is_asked_for_again_as_a_new_generation() -> None:
    request = queued()
    request.outgoing.clear()
    request.retry_stalled(NOW)
    assert (request.status, request.generation) == (Status.QUEUED, 2)
    [again] = request.outgoing
    assert isinstance(again, RequestReconcileRequested)
    assert (again.generation, again.reason, again.requested_by) == (2, "retry", "system:anti-entropy")

    deleting = ready()
    deleting.delete(actor="alice", now=NOW)
    deleting.outgoing.clear()
    deleting.retry_stalled(NOW)
    [teardown] = deleting.outgoing
    assert isinstance(teardown, RequestTeardownRequested)
    assert deleting.status is Status.DELETING
    assert teardown.generation == deleting.generation
