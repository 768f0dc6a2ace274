"""The request lifecycle rules of intake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import (
    RequestApproved,
    RequestBootstrapped,
    RequestFailed,
    RequestPolicyEvaluated,
    RequestPublished,
    RequestReconcileRequested,
    RequestRendered,
)
from contracts.models import EnvironmentPlan, LimitRangeValues, PolicyReason, RequestSpec
from services.intake.domain.model import EnvironmentRequest, OutOfOrder, Status

pytestmark = pytest.mark.unit

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
