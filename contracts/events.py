"""Integration events: the facts services publish on ``<prefix>.<type>``.

Each model is the ``data`` of an :class:`~contracts.envelope.Envelope`; the first paragraph
of its docstring says what the fact means (the generated catalog's summary). Models are
versioned (``__data_version__``); changes are additive (new optional fields only), a
breaking change is a new model with a new version registered beside the old one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from contracts.models import BudgetCheck, EnvironmentClass, EnvironmentPlan, PolicyReason, RequestSpec


class Attestation(msgspec.Struct, frozen=True, kw_only=True):
    """Proof that ``approver`` approved ``request_id`` at ``generation`` for ``class_name``.

    ``signature`` is HMAC-SHA256 (hex) by the approval service over the other fields,
    verified again before anything approval-gated is published.
    """

    request_id: str
    generation: int
    approver: str
    class_name: str = msgspec.field(name="class")
    decided_at: datetime
    signature: str


class RequestSubmitted(msgspec.Struct, frozen=True, kw_only=True):
    """An environment request passed validation and was stored; policy evaluation is next."""

    __data_version__ = 1
    request_id: str
    spec: RequestSpec
    created_by: str
    created_at: datetime
    # Added (optional): the creator's stable subject (the token's ``sub``). ``created_by`` is
    # the actor, which falls back to the subject when a token has no email claim, so one
    # person can appear as two actors; separation of duties compares subjects too.
    # Absent in events of older producers.
    created_by_subject: str | None = None


class RequestPolicyEvaluated(msgspec.Struct, frozen=True, kw_only=True):
    """The policy service decided whether the request may proceed, and resolved its plan
    (quota, limit ranges, policy packs, cost, approvals needed)."""

    __data_version__ = 1
    request_id: str
    outcome: Literal["allowed", "rejected"]
    reasons: list[PolicyReason] = []
    requires_approval: bool = False
    approvals_required: int = 0
    auto_reconcile: bool = False
    created_by: str = ""
    class_name: str = msgspec.field(name="class", default="")
    plan: EnvironmentPlan | None = None
    # Added (optional): the request's cost against its team's budget when policy evaluated it.
    budget: BudgetCheck | None = None
    # Added (optional): ``created_by_subject`` of the submission, passed on for the approval
    # service's separation of duties. Absent when the submission had none.
    created_by_subject: str | None = None


class RequestApproved(msgspec.Struct, frozen=True, kw_only=True):
    """The request may be reconciled: approved automatically or by signed approvals."""

    __data_version__ = 1
    request_id: str
    automatic: bool
    approvals: list[Attestation] = []
    approved_by: list[str] = []


class RequestApprovalRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """One approver's signed approval was accepted; request.approved follows at the quorum.

    The quorum is ``approvals_required`` distinct approvers. Carries no signature: the
    client's is never stored, and the attestation travels only in ``request.approved``."""

    __data_version__ = 1
    request_id: str
    approver: str
    generation: int
    decided_at: datetime
    approvals_received: int
    approvals_required: int


class RequestRejected(msgspec.Struct, frozen=True, kw_only=True):
    """An approver (or the policy outcome) rejected the request; nothing will be rendered."""

    __data_version__ = 1
    request_id: str
    rejected_by: str
    reasons: list[PolicyReason] = []
    # Added (optional): the approver's reason as they wrote it (``reasons`` carries it inside a
    # sentence); absent from older producers.
    reason: str | None = None


class RequestReconcileRequested(msgspec.Struct, frozen=True, kw_only=True):
    """Render and publish this generation of the request (automatically or by hand)."""

    __data_version__ = 1
    request_id: str
    generation: int
    spec: RequestSpec
    plan: EnvironmentPlan
    approvals: list[Attestation] = []
    requested_by: str
    reason: Literal["auto", "manual", "retry"] = "auto"


class RenderedFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    content: str


class RequestRendered(msgspec.Struct, frozen=True, kw_only=True):
    """The renderer produced the GitOps manifests for one generation of the request."""

    __data_version__ = 1
    request_id: str
    generation: int
    gitops_path: str
    namespace: str
    digest: str
    files: list[RenderedFile]
    spec: RequestSpec
    approvals: list[Attestation] = []
    estimated_monthly_cost_usd: float = 0.0
    requires_approval: bool = False
    # Added (optional): how many distinct approvers the plan requires (``plan.approvals_required``);
    # git-publisher publishes an approval-gated bundle only with that many valid attestations.
    # Absent in events of older renderers: then one suffices.
    approvals_required: int | None = None


class RequestPromotionOpened(msgspec.Struct, frozen=True, kw_only=True):
    """The manifests were pushed to a promotion branch and a pull request opened.

    Reserved for git-publisher's pull-request mode, which today reports the promotion in
    request.published (mode, promotion_branch, promotion_url)."""

    __data_version__ = 1
    request_id: str
    generation: int
    promotion_branch: str
    promotion_url: str


class RequestPublished(msgspec.Struct, frozen=True, kw_only=True):
    """The manifests of one generation are committed to the GitOps repository."""

    __data_version__ = 1
    request_id: str
    generation: int
    gitops_path: str
    namespace: str
    region: str
    commit_sha: str
    branch: str
    mode: Literal["direct", "pull_request"] = "direct"
    promotion_branch: str | None = None
    promotion_url: str | None = None
    files: list[RenderedFile] = []


class DriftItem(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    name: str
    field: str
    expected: Any = None
    actual: Any = None


class RequestBootstrapped(msgspec.Struct, frozen=True, kw_only=True):
    """The cluster side of a published generation was applied (or skipped) and checked for
    drift."""

    __data_version__ = 1
    request_id: str
    generation: int
    cluster_status: Literal["not_applied", "applied", "apply_failed", "deleted"]
    drift_status: Literal["not_checked", "in_sync", "drift_corrected", "drifted"]
    drift_summary: list[DriftItem] = []
    commit_sha: str | None = None
    # Added (optional): what the user should know about the apply, e.g. that the Argo CD
    # Application was not applied because the cluster has no Argo CD, or why it was rejected.
    notes: list[str] = []


class RequestDriftDetected(msgspec.Struct, frozen=True, kw_only=True):
    """A drift check compared the cluster with the published manifests."""

    __data_version__ = 1
    request_id: str
    generation: int
    drift_status: Literal["in_sync", "drift_corrected", "drifted"]
    drift_summary: list[DriftItem] = []


class RequestFailed(msgspec.Struct, frozen=True, kw_only=True):
    """A stage gave up on the request after its retries; the error says why."""

    __data_version__ = 1
    request_id: str
    generation: int
    stage: str
    error: str
    attempts: int


class RequestStageRetrying(msgspec.Struct, frozen=True, kw_only=True):
    """A stage could not reach a dependency and will retry at next_attempt_at; the request waits.

    The dependency is a git remote, a cluster or a database; ``request.failed`` follows only
    if the stage never can. Reported from a stage's second failed attempt on, at most once
    per attempt."""

    __data_version__ = 1
    request_id: str
    generation: int
    stage: str
    error: str
    attempt: int
    next_attempt_at: datetime


class RequestTeardownRequested(msgspec.Struct, frozen=True, kw_only=True):
    """The request was deleted or expired; its manifests and cluster objects must go."""

    __data_version__ = 1
    request_id: str
    generation: int
    spec: RequestSpec
    gitops_path: str
    namespace: str
    requested_by: str
    reason: Literal["deleted", "expired"] = "deleted"


class RequestExtended(msgspec.Struct, frozen=True, kw_only=True):
    """The request's TTL was changed within its class maximum.

    ``expires_at`` is the new expiry (None until the environment is first ready, when the
    TTL starts counting)."""

    __data_version__ = 1
    request_id: str
    ttl_hours: int
    previous_ttl_hours: int
    expires_at: datetime | None = None
    extended_by: str


class RequestUnpublished(msgspec.Struct, frozen=True, kw_only=True):
    """The request's manifests were removed from the GitOps repository."""

    __data_version__ = 1
    request_id: str
    generation: int
    gitops_path: str
    namespace: str
    region: str
    commit_sha: str | None = None
    branch: str


class RequestTornDown(msgspec.Struct, frozen=True, kw_only=True):
    """The request's namespaces and objects are gone from the cluster."""

    __data_version__ = 1
    request_id: str
    generation: int
    cluster_status: Literal["not_applied", "deleted"]


class ClassUpserted(msgspec.Struct, frozen=True, kw_only=True):
    """An environment class was created or changed; services refresh their copy."""

    __data_version__ = 1
    environment_class: EnvironmentClass = msgspec.field(name="class")
    revision: int
    updated_by: str
    updated_at: datetime


EventData = (
    RequestSubmitted
    | RequestPolicyEvaluated
    | RequestApproved
    | RequestApprovalRecorded
    | RequestRejected
    | RequestReconcileRequested
    | RequestRendered
    | RequestPromotionOpened
    | RequestPublished
    | RequestBootstrapped
    | RequestDriftDetected
    | RequestFailed
    | RequestStageRetrying
    | RequestTeardownRequested
    | RequestExtended
    | RequestUnpublished
    | RequestTornDown
    | ClassUpserted
)

# Event type -> model. The type is also the subject suffix: <prefix>.<type>.
EVENT_TYPES: dict[str, type[Any]] = {
    "request.submitted": RequestSubmitted,
    "request.policy_evaluated": RequestPolicyEvaluated,
    "request.approved": RequestApproved,
    "request.approval_recorded": RequestApprovalRecorded,
    "request.rejected": RequestRejected,
    "request.reconcile_requested": RequestReconcileRequested,
    "request.rendered": RequestRendered,
    "request.promotion_opened": RequestPromotionOpened,
    "request.published": RequestPublished,
    "request.bootstrapped": RequestBootstrapped,
    "request.drift_detected": RequestDriftDetected,
    "request.failed": RequestFailed,
    "request.stage_retrying": RequestStageRetrying,
    "request.teardown_requested": RequestTeardownRequested,
    "request.extended": RequestExtended,
    "request.unpublished": RequestUnpublished,
    "request.torn_down": RequestTornDown,
    "class.upserted": ClassUpserted,
}

EVENT_MODELS: dict[tuple[str, int], type[Any]] = {
    (name, model.__data_version__): model for name, model in EVENT_TYPES.items()
}

EVENT_TYPE_OF: dict[type[Any], str] = {model: name for name, model in EVENT_TYPES.items()}


# Event type -> the newest data_version this code can read; an event with a newer one comes
# from an upgraded producer and waits (parked) until this consumer is upgraded too.
LATEST_VERSIONS: dict[str, int] = {}
for _name, _version in EVENT_MODELS:
    LATEST_VERSIONS[_name] = max(_version, LATEST_VERSIONS.get(_name, 0))
