"""The environment request and its lifecycle (pure rules, no I/O).

Intake is the single writer of a request's status; the other services report facts as
events. :meth:`EnvironmentRequest.apply` decides what each fact means for the record:

- a pipeline event counts only for the request's current ``generation``; facts it
  carries (commit, namespace, cluster state) are recorded, but the status only moves
  forward (``queued → reconciling → awaiting_promotion → ready``);
- anything late or duplicated is kept in the timeline and leaves the status alone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from contracts.events import (
    Attestation,
    EventData,
    RequestApproved,
    RequestBootstrapped,
    RequestFailed,
    RequestPolicyEvaluated,
    RequestPromotionOpened,
    RequestPublished,
    RequestReconcileRequested,
    RequestRejected,
    RequestRendered,
    RequestSubmitted,
)
from contracts.models import EnvironmentPlan, RequestSpec


class Status(StrEnum):
    SUBMITTED = "submitted"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    QUEUED = "queued"
    RECONCILING = "reconciling"
    AWAITING_PROMOTION = "awaiting_promotion"
    READY = "ready"
    FAILED = "failed"
    EXPIRING = "expiring"
    DELETING = "deleting"
    DELETED = "deleted"


# Order of the reconcile pipeline: an event may only move a request to a later stage.
PIPELINE_RANK = {
    Status.QUEUED: 1,
    Status.RECONCILING: 2,
    Status.AWAITING_PROMOTION: 3,
    Status.READY: 4,
}
IN_PIPELINE = frozenset(PIPELINE_RANK) - {Status.READY}
BEFORE_APPROVAL = frozenset({Status.SUBMITTED, Status.PENDING_APPROVAL})


class OutOfOrder(Exception):
    """An event arrived before one it depends on; retrying later will apply it."""


def new_request_id() -> str:
    return "req-" + secrets.token_hex(8)


@dataclass
class EnvironmentRequest:
    id: str
    spec: RequestSpec
    status: Status
    created_at: datetime
    created_by: str
    updated_at: datetime
    generation: int = 0
    version: int = 1
    expires_at: datetime | None = None
    approved_at: datetime | None = None
    approved_by: str | None = None
    approvals: list[dict[str, Any]] = field(default_factory=list)
    queued_at: datetime | None = None
    last_reconciled_at: datetime | None = None
    last_error: str | None = None
    namespace: str | None = None
    gitops_path: str | None = None
    git_commit_sha: str | None = None
    git_branch: str | None = None
    git_promotion_mode: str | None = None
    git_promotion_branch: str | None = None
    git_promotion_url: str | None = None
    cluster_status: str | None = None
    drift_status: str | None = None
    drift_summary: list[dict[str, Any]] = field(default_factory=list)
    quota_profile: str | None = None
    policy_packs: list[str] = field(default_factory=list)
    estimated_monthly_cost_usd: float | None = None
    policy_decision: dict[str, Any] | None = None
    requires_approval: bool = False
    approvals_required: int = 0
    auto_reconcile: bool = False
    plan: EnvironmentPlan | None = None
    attestations: list[Attestation] = field(default_factory=list)
    # Events this change produces; the service layer stages them in the outbox.
    outgoing: list[EventData] = field(default_factory=list, repr=False)

    @classmethod
    def submit(
        cls, spec: RequestSpec, created_by: str, now: datetime, request_id: str | None = None
    ) -> EnvironmentRequest:
        request = cls(
            id=request_id or new_request_id(),
            spec=spec,
            status=Status.SUBMITTED,
            created_at=now,
            created_by=created_by,
            updated_at=now,
        )
        request.outgoing.append(
            RequestSubmitted(request_id=request.id, spec=spec, created_by=created_by, created_at=now)
        )
        return request

    # -- facts reported by other services -------------------------------------------------

    def apply(self, data: EventData, now: datetime) -> bool:
        """Apply one event; True when it changed the record (False: timeline only)."""
        handler = _APPLIERS.get(type(data))
        if handler is None:
            return False
        changed: bool = handler(self, data, now)
        if changed:
            self.updated_at = now
        return changed

    def _policy_evaluated(self, data: RequestPolicyEvaluated, now: datetime) -> bool:
        if self.status is not Status.SUBMITTED or self.policy_decision is not None:
            return False
        self.policy_decision = {
            "outcome": data.outcome,
            "requires_approval": data.requires_approval,
            "approvals_required": data.approvals_required,
            "reasons": [
                {"code": r.code, "message": r.message, "pack": r.pack, "effect": r.effect}
                for r in data.reasons
            ],
            "evaluated_at": now.isoformat(),
        }
        self.requires_approval = data.requires_approval
        self.approvals_required = data.approvals_required
        self.auto_reconcile = data.auto_reconcile
        if data.plan is not None:
            self.plan = data.plan
            self.quota_profile = data.plan.quota_profile
            self.policy_packs = list(data.plan.policy_packs)
            self.estimated_monthly_cost_usd = data.plan.estimated_monthly_cost_usd
        if data.outcome == "rejected":
            self.status = Status.REJECTED
            self.last_error = (
                "; ".join(r.message for r in data.reasons if r.effect == "deny") or "rejected by policy"
            )
        elif data.requires_approval:
            self.status = Status.PENDING_APPROVAL
        return True

    def _approved(self, data: RequestApproved, now: datetime) -> bool:
        if self.status not in BEFORE_APPROVAL:
            return False
        if self.plan is None:
            # Approval is a reaction to the policy decision, so that event is on its way.
            raise OutOfOrder(f"{self.id}: approval arrived before the policy decision")
        self.status = Status.APPROVED
        self.approved_at = now
        self.attestations = list(data.approvals)
        self.approved_by = ", ".join(data.approved_by) if data.approved_by else None
        self.approvals = [
            {"approver": a.approver, "decided_at": a.decided_at.isoformat(), "generation": a.generation}
            for a in data.approvals
        ]
        if self.auto_reconcile:
            self.start_reconcile(requested_by="system", reason="auto", now=now)
        return True

    def _rejected(self, data: RequestRejected, now: datetime) -> bool:
        if self.status not in BEFORE_APPROVAL:
            return False
        self.status = Status.REJECTED
        self.last_error = "; ".join(r.message for r in data.reasons) or f"rejected by {data.rejected_by}"
        return True

    def _is_current(self, generation: int) -> bool:
        return generation == self.generation and self.generation > 0

    def _advance(self, target: Status) -> None:
        if self.status in PIPELINE_RANK and PIPELINE_RANK[target] > PIPELINE_RANK[self.status]:
            self.status = target

    def _rendered(self, data: RequestRendered, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self.namespace = data.namespace
        self.gitops_path = data.gitops_path
        self._advance(Status.RECONCILING)
        return True

    def _promotion_opened(self, data: RequestPromotionOpened, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self.git_promotion_mode = "pull_request"
        self.git_promotion_branch = data.promotion_branch
        self.git_promotion_url = data.promotion_url
        self._advance(Status.AWAITING_PROMOTION)
        return True

    def _published(self, data: RequestPublished, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self.git_commit_sha = data.commit_sha
        self.git_branch = data.branch
        self.git_promotion_mode = data.mode
        self.git_promotion_branch = data.promotion_branch
        self.git_promotion_url = data.promotion_url
        self.namespace = data.namespace
        self.gitops_path = data.gitops_path
        self._advance(Status.RECONCILING)
        return True

    def _bootstrapped(self, data: RequestBootstrapped, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self.cluster_status = data.cluster_status
        self.drift_status = data.drift_status
        self.drift_summary = [
            {"kind": d.kind, "name": d.name, "field": d.field, "expected": d.expected, "actual": d.actual}
            for d in data.drift_summary
        ]
        if self.status in IN_PIPELINE:
            self.status = Status.READY
            self.last_reconciled_at = now
            self.last_error = None
            if self.expires_at is None:
                # The TTL counts from the moment the environment is first usable.
                self.expires_at = now + timedelta(hours=self.spec.ttl_hours)
        return True

    def _failed(self, data: RequestFailed, now: datetime) -> bool:
        in_pipeline = self._is_current(data.generation) and self.status in IN_PIPELINE
        before_reconcile = data.generation == 0 and self.status in BEFORE_APPROVAL | {Status.APPROVED}
        if not (in_pipeline or before_reconcile):
            return False
        self.status = Status.FAILED
        self.last_error = f"{data.stage}: {data.error}"
        return True

    # -- commands ----------------------------------------------------------------------------

    def start_reconcile(self, requested_by: str, reason: str, now: datetime) -> None:
        """Begin a new generation of the pipeline and ask the renderer for it."""
        assert self.plan is not None
        self.generation += 1
        self.status = Status.QUEUED
        self.queued_at = now
        self.last_error = None
        self.updated_at = now
        self.outgoing.append(
            RequestReconcileRequested(
                request_id=self.id,
                generation=self.generation,
                spec=self.spec,
                plan=self.plan,
                approvals=self.attestations,
                requested_by=requested_by,
                reason=reason,  # type: ignore[arg-type]
            )
        )


_APPLIERS: dict[type[Any], Any] = {
    RequestPolicyEvaluated: EnvironmentRequest._policy_evaluated,
    RequestApproved: EnvironmentRequest._approved,
    RequestRejected: EnvironmentRequest._rejected,
    RequestRendered: EnvironmentRequest._rendered,
    RequestPromotionOpened: EnvironmentRequest._promotion_opened,
    RequestPublished: EnvironmentRequest._published,
    RequestBootstrapped: EnvironmentRequest._bootstrapped,
    RequestFailed: EnvironmentRequest._failed,
}
