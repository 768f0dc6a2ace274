"""The environment request and its lifecycle (pure rules, no I/O).

Intake is the single writer of a request's status; the other services report facts as
events. :meth:`EnvironmentRequest.apply` decides what each fact means for the record:

- a pipeline event counts only for the request's current ``generation``; facts it
  carries (commit, namespace, cluster state) are recorded, but the status only moves
  forward (``queued → reconciling → awaiting_promotion → ready``);
- anything late or duplicated is kept in the timeline and leaves the status alone.

Commands from users (reconcile, extend, delete) and the expiry sweeper are methods too:
each checks the transition is legal from the current status (:class:`~libs.errors.Conflict`
otherwise, a 409 at the API) and stages the event that announces it in ``outgoing``.
Teardown (``delete``, ``expire``) starts a new generation, so late pipeline events of the
environment being removed can no longer move the status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

import msgspec

from contracts.events import (
    Attestation,
    EventData,
    RequestApprovalRecorded,
    RequestApproved,
    RequestBootstrapped,
    RequestDriftDetected,
    RequestExtended,
    RequestFailed,
    RequestPolicyEvaluated,
    RequestPromotionOpened,
    RequestPublished,
    RequestReconcileRequested,
    RequestRejected,
    RequestRendered,
    RequestStageRetrying,
    RequestSubmitted,
    RequestTeardownRequested,
    RequestTornDown,
    RequestUnpublished,
)
from contracts.models import EnvironmentPlan, RequestSpec
from libs.environment_layout import gitops_path, namespace_name
from libs.errors import Conflict, Forbidden


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
TEARING_DOWN = frozenset({Status.EXPIRING, Status.DELETING})
# A manual reconcile starts from a settled state: approved and never run, ready, or failed.
RECONCILABLE = frozenset({Status.APPROVED, Status.READY, Status.FAILED})
# Environments the expiry sweeper tears down once ``expires_at`` has passed (it is set
# when the environment is first ready, or when a run fails after rendering, which may have
# left a GitOps directory and part of a namespace; a failed *teardown* is left to the user,
# or the sweeper would retry it forever).
EXPIRABLE = frozenset({Status.READY, Status.FAILED})
EXPIRY_ACTOR = "system:expiry"
# Work that stopped moving is asked for again after a deadline (DESIGN.md section 4: a
# lost event costs time, never a stuck environment). Awaiting promotion waits for people.
STALLED = frozenset({Status.QUEUED, Status.RECONCILING, Status.EXPIRING, Status.DELETING})
ANTI_ENTROPY_ACTOR = "system:anti-entropy"
# The events a request emits (``outgoing``): intake publishes them, and records each in the
# timeline as it stages it, so its consumer does not take them back from the stream.
OWN_EVENTS = (RequestSubmitted, RequestReconcileRequested, RequestTeardownRequested, RequestExtended)
# Who rejected a request the policy service denied (``rejected_by`` on the record).
POLICY_ACTOR = "system:policy"


class FailureKind(StrEnum):
    PIPELINE = "pipeline"
    TEARDOWN = "teardown"
    BEFORE_RECONCILE = "before_reconcile"


# Which pipeline stage reports which event, in pipeline order. A request that failed at a
# stage resumes when that stage (or a later one) reports progress for the same generation,
# e.g. after an operator replayed the dead-lettered event.
STAGE_RANK = {"renderer": 1, "git_publisher": 2, "cluster_bootstrapper": 3}
# Roles (as the gateway resolved them) with special rules in the lifecycle.
REQUESTER_ROLE = "requester"


class OutOfOrder(Exception):
    """An event arrived before one it depends on; retrying later will apply it.

    Transient (the consumer retries it for the retry window, not a few quick attempts): the
    event it waits for may be delayed by a crash or an outage for longer than those attempts
    last, and giving up would leave the request stuck where it is.
    """

    transient = True


def new_request_id() -> str:
    return "req-" + secrets.token_hex(8)


# The id a dry run without an Idempotency-Key shows: the manifests of such a plan name a
# namespace and paths no real request gets.
PLACEHOLDER_REQUEST_ID = "req-0000000000000000"


def request_id_for(actor: str, idempotency_key: str | None, secret: bytes) -> str:
    """The id of the request ``actor`` creates with ``idempotency_key`` (random without a key).

    Derived from both, so a dry run with the key shows exactly the namespace, paths and
    manifests the real create with that key will commit; keyed with the installation's
    ``secret`` (an HMAC), so nobody who knows an actor and a key they use can tell the id
    of their request before they see it.
    """
    if not idempotency_key:
        return new_request_id()
    # JSON keeps the pair unambiguous whatever characters either part contains.
    digest = hmac.new(secret, json.dumps([actor, idempotency_key]).encode(), hashlib.sha256).hexdigest()
    return "req-" + digest[:16]


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
    rejected_at: datetime | None = None
    rejected_by: str | None = None
    rejection_reason: str | None = None
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
    failure_kind: str | None = None
    failed_stage: str | None = None
    # Set while a stage waits to retry a dependency it could not reach (request.stage_retrying);
    # ``last_error`` then says why. Cleared when a stage reports progress.
    next_attempt_at: datetime | None = None
    # When the anti-entropy found the request stalled, it had last changed at this time; kept
    # across its retries (a re-drive is not progress) until the request leaves the statuses it
    # re-drives or someone starts new work. Null while the request moves by itself.
    stalled_since: datetime | None = None
    # The end of a teardown, as reported: the commit that removed the environment's manifests
    # from the GitOps repository (request.unpublished; null if there was nothing to remove),
    # when it ended, and whether the platform deleted the namespace (false: cluster apply is
    # off, the platform never touched the cluster).
    git_removal_commit_sha: str | None = None
    deleted_at: datetime | None = None
    namespace_deleted: bool | None = None
    # What the stage-latency histograms measure from, kept with the record so observing a
    # stage reads nothing: the times the current generation's pipeline events happened
    # ("generation" says which generation they belong to). Written by
    # services.intake.adapters.metrics; not shown.
    stage_marks: dict[str, Any] = field(default_factory=dict, repr=False)
    # The status the event being applied led to, before anything that follows from it
    # automatically in the same step (an auto_reconcile class is queued as soon as it is
    # approved): what the timeline shows for that event. Not stored.
    reached: Status | None = field(default=None, repr=False, compare=False)
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
        self.reached = None
        if handler is None:
            return False
        changed: bool = handler(self, data, now)
        if self.reached is None:
            self.reached = self.status
        if changed:
            self.updated_at = now
        if self.status not in STALLED:
            self.stalled_since = None
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
            # The request's cost against its team's monthly budget (null from older producers).
            "budget": msgspec.to_builtins(data.budget) if data.budget is not None else None,
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
            denial = "; ".join(r.message for r in data.reasons if r.effect == "deny") or "rejected by policy"
            self._reject(by=POLICY_ACTOR, reason=denial, now=now)
            self.last_error = denial
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
            # The approval is a step of its own in the timeline (status_after "approved"); the
            # reconcile it starts shows as request.reconcile_requested ("queued").
            self.reached = Status.APPROVED
            self.start_reconcile(requested_by="system", reason="auto", now=now)
        return True

    def _rejected(self, data: RequestRejected, now: datetime) -> bool:
        if self.status not in BEFORE_APPROVAL:
            return False
        stated = "; ".join(r.message for r in data.reasons)
        # The approver's own words; older producers only put them inside ``reasons``.
        self._reject(by=data.rejected_by, reason=data.reason or stated or None, now=now)
        self.last_error = stated or f"rejected by {data.rejected_by}"
        return True

    def _reject(self, *, by: str, reason: str | None, now: datetime) -> None:
        self.status = Status.REJECTED
        self.rejected_at = now
        self.rejected_by = by
        self.rejection_reason = reason

    def _is_current(self, generation: int) -> bool:
        return generation == self.generation and self.generation > 0

    def _resumes(self, stage: str) -> bool:
        """A pipeline failure of this generation is overtaken by later progress of ``stage``."""
        return (
            self.status is Status.FAILED
            and self.failure_kind == FailureKind.PIPELINE
            and STAGE_RANK.get(stage, 0) >= STAGE_RANK.get(self.failed_stage or "", 0)
        )

    def _advance(self, target: Status, stage: str) -> None:
        if self._resumes(stage):
            self.status = target
            self.failure_kind = self.failed_stage = None
            self.last_error = None
        elif self.status in PIPELINE_RANK and PIPELINE_RANK[target] > PIPELINE_RANK[self.status]:
            self.status = target

    def _clear_retry(self) -> None:
        """A stage made progress: whatever was waiting for a retry is over."""
        if self.next_attempt_at is not None:
            self.next_attempt_at = None
            if self.status is not Status.FAILED:
                self.last_error = None

    def _stage_retrying(self, data: RequestStageRetrying, now: datetime) -> bool:
        # Shown while the work of this generation is still under way; the status stays.
        if not self._is_current(data.generation) or self.status not in IN_PIPELINE | TEARING_DOWN:
            return False
        self.last_error = f"{data.stage}: {data.error}"
        self.next_attempt_at = data.next_attempt_at
        return True

    def _unpublished(self, data: RequestUnpublished, now: datetime) -> bool:
        """The teardown's GitOps step is done: recorded on the request, so the timeline shows
        it as applied (it is progress of the teardown, not a stray event)."""
        if not self._is_current(data.generation) or self.status not in TEARING_DOWN:
            return False
        self._clear_retry()
        self.git_removal_commit_sha = data.commit_sha
        return True

    def _drift_detected(self, data: RequestDriftDetected, now: datetime) -> bool:
        """A later drift scan of the environment in place: the request shows its latest result."""
        if not self._is_current(data.generation) or self.status is not Status.READY:
            return False
        self.drift_status = data.drift_status
        self.drift_summary = [
            {"kind": d.kind, "name": d.name, "field": d.field, "expected": d.expected, "actual": d.actual}
            for d in data.drift_summary
        ]
        return True

    def _fail(self, kind: FailureKind, stage: str, message: str, now: datetime) -> None:
        self.next_attempt_at = None
        self.status = Status.FAILED
        self.failure_kind = kind
        self.failed_stage = stage
        self.last_error = message
        if kind is FailureKind.PIPELINE and self.gitops_path is not None and self.expires_at is None:
            # Rendered, so files may be in Git and objects in the cluster (a bundle the cluster
            # refused half-way): the TTL runs from the failure, and the sweeper removes them
            # unless the user retries or extends first.
            self.expires_at = now + timedelta(hours=self.spec.ttl_hours)

    def _rendered(self, data: RequestRendered, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self.namespace = data.namespace
        self.gitops_path = data.gitops_path
        self._clear_retry()
        self._advance(Status.RECONCILING, "renderer")
        return True

    def _promotion_opened(self, data: RequestPromotionOpened, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self.git_promotion_mode = "pull_request"
        self.git_promotion_branch = data.promotion_branch
        self.git_promotion_url = data.promotion_url
        self._clear_retry()
        self._advance(Status.AWAITING_PROMOTION, "git_publisher")
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
        self._clear_retry()
        self._advance(Status.RECONCILING, "git_publisher")
        return True

    def _bootstrapped(self, data: RequestBootstrapped, now: datetime) -> bool:
        if not self._is_current(data.generation):
            return False
        self._clear_retry()
        self.cluster_status = data.cluster_status
        self.drift_status = data.drift_status
        self.drift_summary = [
            {"kind": d.kind, "name": d.name, "field": d.field, "expected": d.expected, "actual": d.actual}
            for d in data.drift_summary
        ]
        if data.cluster_status == "apply_failed":
            # The cluster refused the bundle: not ready, whatever came before. The
            # request.failed that follows carries the details.
            if self.status in IN_PIPELINE or self._resumes("cluster_bootstrapper"):
                self._fail(
                    FailureKind.PIPELINE,
                    "cluster_bootstrapper",
                    "cluster_bootstrapper: the cluster refused the bundle",
                    now,
                )
            return True
        if self.status in IN_PIPELINE or self._resumes("cluster_bootstrapper"):
            first_ready = self.last_reconciled_at is None
            self.status = Status.READY
            self.failure_kind = self.failed_stage = None
            self.last_reconciled_at = now
            self.last_error = None
            if first_ready or self.expires_at is None:
                # The TTL counts from the moment the environment is first usable (an expiry a
                # failed earlier run started is replaced, never shortening the environment).
                self.expires_at = now + timedelta(hours=self.spec.ttl_hours)
        return True

    def _failed(self, data: RequestFailed, now: datetime) -> bool:
        current = self._is_current(data.generation)
        if current and self.status in IN_PIPELINE:
            self._fail(FailureKind.PIPELINE, data.stage, f"{data.stage}: {data.error}", now)
        elif current and self.status in TEARING_DOWN:
            self._fail(
                FailureKind.TEARDOWN, data.stage, f"teardown failed in {data.stage}: {data.error}", now
            )
        elif data.generation == 0 and self.status in BEFORE_APPROVAL | {Status.APPROVED}:
            self._fail(FailureKind.BEFORE_RECONCILE, data.stage, f"{data.stage}: {data.error}", now)
        elif current and self.status is Status.FAILED and self.failed_stage == data.stage:
            # The details of a failure already recorded (e.g. after an apply_failed report).
            self.last_error = f"{data.stage}: {data.error}"
        else:
            return False
        return True

    def _approval_recorded(self, data: RequestApprovalRecorded, now: datetime) -> bool:
        # Progress towards the quorum, shown on the request until request.approved replaces
        # it with the attested list.
        if self.status is not Status.PENDING_APPROVAL:
            return False
        if any(approval.get("approver") == data.approver for approval in self.approvals):
            return False
        self.approvals.append(
            {
                "approver": data.approver,
                "decided_at": data.decided_at.isoformat(),
                "generation": data.generation,
            }
        )
        return True

    def _torn_down(self, data: RequestTornDown, now: datetime) -> bool:
        if not self._is_current(data.generation) or self.status not in TEARING_DOWN:
            return False
        self.next_attempt_at = None
        self.status = Status.DELETED
        self.cluster_status = data.cluster_status
        self.deleted_at = now
        # "not_applied": cluster apply is off, so there was no namespace of ours to delete.
        self.namespace_deleted = data.cluster_status == "deleted"
        self.last_error = None
        return True

    # -- commands ----------------------------------------------------------------------------

    def reconcile(self, *, actor: str, role: str, now: datetime) -> None:
        """A user's reconcile: approved, ready or failed requests only, then ``queued``.

        Requesters may only reconcile requests of classes without approval; approvers and
        admins any (the gateway has already checked the role may reconcile at all).
        """
        if role == REQUESTER_ROLE and self.requires_approval:
            raise Forbidden(
                f"requesters cannot reconcile {self.spec.class_name} requests (the class needs approval); "
                "ask an approver or admin"
            )
        if self.status not in RECONCILABLE:
            raise Conflict(f"request {self.id} is {_said(self.status)}; {_why_not_reconcilable(self.status)}")
        if self.plan is None:
            raise Conflict(f"request {self.id} has no policy plan to reconcile; create a new request")
        if self.requires_approval and self.approved_at is None:
            raise Conflict(f"request {self.id} needs an approval before it can be reconciled")
        reason = "retry" if self.status is Status.FAILED else "manual"
        self.start_reconcile(requested_by=actor, reason=reason, now=now)

    def extend(self, *, ttl_hours: int, actor: str, now: datetime) -> None:
        """Set ``ttl_hours`` (already checked against the class maximum) and move ``expires_at``.

        Once the environment exists the new TTL counts from now: an extension never ends an
        environment earlier than asked for, and each one is bounded by the class maximum.
        """
        if self.status in TEARING_DOWN | {Status.DELETED, Status.REJECTED}:
            raise Conflict(f"request {self.id} is {_said(self.status)} and cannot be extended")
        previous = self.spec.ttl_hours
        self.spec = msgspec.structs.replace(self.spec, ttl_hours=ttl_hours)
        if self.expires_at is not None:
            self.expires_at = now + timedelta(hours=ttl_hours)
        self.updated_at = now
        self.outgoing.append(
            RequestExtended(
                request_id=self.id,
                ttl_hours=ttl_hours,
                previous_ttl_hours=previous,
                expires_at=self.expires_at,
                extended_by=actor,
            )
        )

    def delete(self, *, actor: str, now: datetime) -> None:
        """A user's delete: ``deleting`` and a teardown of whatever was published."""
        if self.status is Status.DELETED:
            raise Conflict(f"request {self.id} is already deleted")
        if self.status in TEARING_DOWN:
            raise Conflict(f"request {self.id} is already being torn down ({self.status})")
        self._start_teardown(Status.DELETING, requested_by=actor, reason="deleted", now=now)

    def is_expired(self, now: datetime) -> bool:
        if self.status is Status.FAILED and self.failure_kind != FailureKind.PIPELINE:
            return False
        return self.status in EXPIRABLE and self.expires_at is not None and self.expires_at <= now

    def retry_stalled(self, now: datetime) -> None:
        """Ask again for work that stopped moving, as a new generation (anti-entropy).

        A lost event (a crash of a JetStream node before it synced, an operator purging a
        stream) would otherwise leave the request queued or tearing down forever. The new
        generation makes every late event of the old one stale; each stage is idempotent.
        The request stays stalled since its last change before the first retry, however often
        it is retried (and re-run through stages it had passed), so a stuck one keeps aging.
        """
        stalled_since = self.stalled_since or self.updated_at
        if self.status in (Status.QUEUED, Status.RECONCILING) and self.plan is not None:
            self.start_reconcile(requested_by=ANTI_ENTROPY_ACTOR, reason="retry", now=now)
        elif self.status in TEARING_DOWN:
            reason: Literal["deleted", "expired"] = "expired" if self.status is Status.EXPIRING else "deleted"
            self._start_teardown(self.status, requested_by=ANTI_ENTROPY_ACTOR, reason=reason, now=now)
        self.stalled_since = stalled_since

    def expire(self, now: datetime) -> bool:
        """The sweeper's teardown of an environment past ``expires_at``; False if not due."""
        if not self.is_expired(now):
            return False
        self._start_teardown(Status.EXPIRING, requested_by=EXPIRY_ACTOR, reason="expired", now=now)
        return True

    def _start_teardown(
        self, status: Status, *, requested_by: str, reason: Literal["deleted", "expired"], now: datetime
    ) -> None:
        # A new generation: pipeline events of the environment being removed are now stale.
        self.generation += 1
        self.status = status
        self.last_error = None
        self.next_attempt_at = None
        self.failure_kind = self.failed_stage = None
        self.updated_at = now
        self.stalled_since = None
        spec = self.spec
        self.outgoing.append(
            RequestTeardownRequested(
                request_id=self.id,
                generation=self.generation,
                spec=spec,
                # Known once rendered; computed otherwise, so a render still in flight when the
                # request was deleted is removed too.
                gitops_path=self.gitops_path or gitops_path(spec.region, spec.team, spec.app, self.id),
                namespace=self.namespace or namespace_name(spec.team, spec.app, self.id),
                requested_by=requested_by,
                reason=reason,
            )
        )

    def start_reconcile(self, requested_by: str, reason: str, now: datetime) -> None:
        """Begin a new generation of the pipeline and ask the renderer for it."""
        assert self.plan is not None
        self.generation += 1
        self.status = Status.QUEUED
        self.queued_at = now
        self.last_error = None
        self.next_attempt_at = None
        self.failure_kind = self.failed_stage = None
        self.updated_at = now
        self.stalled_since = None
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


def _said(status: Status) -> str:
    """A status in a sentence: "pending approval", not the field value ``pending_approval``."""
    return status.value.replace("_", " ")


def _why_not_reconcilable(status: Status) -> str:
    if status in BEFORE_APPROVAL:
        return "it must be approved before it can be reconciled"
    if status in IN_PIPELINE:
        return "a reconcile is already in progress"
    if status is Status.REJECTED:
        return "rejected requests cannot be reconciled; create a new request"
    return "it is being torn down or gone"


_APPLIERS: dict[type[Any], Any] = {
    RequestPolicyEvaluated: EnvironmentRequest._policy_evaluated,
    RequestApprovalRecorded: EnvironmentRequest._approval_recorded,
    RequestApproved: EnvironmentRequest._approved,
    RequestRejected: EnvironmentRequest._rejected,
    RequestRendered: EnvironmentRequest._rendered,
    RequestPromotionOpened: EnvironmentRequest._promotion_opened,
    RequestPublished: EnvironmentRequest._published,
    RequestBootstrapped: EnvironmentRequest._bootstrapped,
    RequestFailed: EnvironmentRequest._failed,
    RequestTornDown: EnvironmentRequest._torn_down,
    RequestStageRetrying: EnvironmentRequest._stage_retrying,
    RequestUnpublished: EnvironmentRequest._unpublished,
    RequestDriftDetected: EnvironmentRequest._drift_detected,
}
