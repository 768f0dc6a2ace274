"""Value types shared by events and RPC messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec


class RequestSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What an app team asked for, after validation and defaults."""

    app: str
    team: str
    class_name: str = msgspec.field(name="class")
    region: str
    ttl_hours: int
    owner: str
    repository: str
    revision: str = "main"
    labels: dict[str, str] = {}


class EnvironmentClass(msgspec.Struct, frozen=True, kw_only=True):
    """A golden-path environment class (SPEC.md "EnvironmentClass")."""

    name: str
    description: str = ""
    allowed_regions: list[str]
    requires_approval: bool = False
    approvals_required: int = 0
    auto_reconcile: bool = True
    max_ttl_hours: int
    default_namespaces: int = 1
    quota_profile: str
    policy_packs: list[str] = []
    estimated_monthly_cost_usd: float = 0.0
    # Live (allowed, not yet torn down or rejected) environments of this class one team may
    # have at once; None: no cap.
    max_environments_per_team: int | None = None


class PolicyReason(msgspec.Struct, frozen=True, kw_only=True):
    """One finding of the policy evaluation: which rule, from which pack, and why."""

    code: str
    message: str
    pack: str | None = None
    effect: str = "deny"


class LimitRangeValues(msgspec.Struct, frozen=True, kw_only=True):
    default: dict[str, str]
    default_request: dict[str, str]
    max: dict[str, str]


class PackManifest(msgspec.Struct, frozen=True, kw_only=True):
    """An extra object a policy pack adds to the environment (namespace and labels are filled in)."""

    pack: str
    api_version: str = msgspec.field(name="apiVersion")
    kind: str
    name: str
    spec: dict[str, Any] = {}
    data: dict[str, str] | None = None


class EnvironmentPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the renderer needs beyond the request: resolved by the policy service."""

    class_name: str = msgspec.field(name="class")
    namespaces: int
    quota_profile: str
    resource_quota: dict[str, str]
    limit_range: LimitRangeValues
    policy_packs: list[str]
    pack_metadata: dict[str, str] = {}
    pack_manifests: list[PackManifest] = []
    estimated_monthly_cost_usd: float = 0.0
    requires_approval: bool = False
    approvals_required: int = 0
    # Added (optional): labels policy packs put on the namespace (e.g. Pod Security Admission).
    namespace_labels: dict[str, str] = {}


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """The caller as the gateway authenticated it."""

    subject: str
    actor: str
    role: str
    teams: list[str] | None = None


class ApprovalView(msgspec.Struct, frozen=True, kw_only=True):
    approver: str
    decided_at: datetime
    generation: int
    attestation: str | None = None


class EnvironmentRequestView(msgspec.Struct, kw_only=True):
    """The API representation of an environment request (GET /v1/environment-requests/{id})."""

    id: str
    app: str
    team: str
    class_name: str = msgspec.field(name="class")
    region: str
    ttl_hours: int
    owner: str
    repository: str
    revision: str
    labels: dict[str, str]
    status: str
    generation: int
    version: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    expires_at: datetime | None = None
    approved_at: datetime | None = None
    approved_by: str | None = None
    approvals: list[ApprovalView] = []
    # Added (optional): who ended the request in ``rejected``, when and why: an approver
    # (``request.rejected``), or ``system:policy`` for a policy denial; null otherwise.
    rejected_at: datetime | None = None
    rejected_by: str | None = None
    rejection_reason: str | None = None
    queued_at: datetime | None = None
    last_reconciled_at: datetime | None = None
    last_error: str | None = None
    # Added (optional): when a stage that cannot reach a dependency tries again (its error is in
    # ``last_error``); null when nothing is waiting for a retry.
    next_attempt_at: datetime | None = None
    namespace: str | None = None
    gitops_path: str | None = None
    git_commit_sha: str | None = None
    git_branch: str | None = None
    git_promotion_mode: str | None = None
    git_promotion_branch: str | None = None
    git_promotion_url: str | None = None
    cluster_status: str | None = None
    drift_status: str | None = None
    drift_summary: list[dict[str, Any]] = []
    quota_profile: str | None = None
    policy_packs: list[str] = []
    estimated_monthly_cost_usd: float | None = None
    policy_decision: dict[str, Any] | None = None
    # Added (optional): how a teardown ended. ``git_removal_commit_sha``: the commit that removed
    # the manifests from the GitOps repository (null when there was nothing to remove);
    # ``deleted_at``: when the request became ``deleted``; ``namespace_deleted``: true when the
    # platform deleted the namespace, false when cluster apply is off (``cluster_status``
    # ``not_applied``: the platform never touched the cluster; Argo CD prunes what it synced
    # once the manifests are gone). All null until then.
    git_removal_commit_sha: str | None = None
    deleted_at: datetime | None = None
    namespace_deleted: bool | None = None


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    type: str
    source: str
    time: datetime
    generation: int | None = None
    applied: bool
    status_after: str
    data: dict[str, Any]
    # Added (optional): which request the entry is about, for the cross-request event feed.
    request_id: str | None = None


# -- the policy catalog: quota profiles, policy packs, budgets, plans ----------------------------
# Data an admin edits through the API (PUT /v1/quota-profiles/{name}, /v1/policy-packs/{name},
# /v1/teams/{team}/budget) and the policy service evaluates; see docs/policy.md.


class QuotaFormula(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``max(min, per_namespace * N)`` followed by ``unit`` (e.g. ``Gi``); N is the class's
    ``default_namespaces``."""

    min: int = 0
    per_namespace: int = 0
    unit: str = ""


class QuotaProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """ResourceQuota formulas and LimitRange values (per container) of a quota profile."""

    name: str
    description: str = ""
    resource_quota: dict[str, QuotaFormula]
    limit_range: LimitRangeValues


RuleEffect = Literal["deny", "warn"]


class _PackRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    """A request rule of a policy pack; ``type`` selects the rule (a closed set)."""


class RequiredLabelsRule(_PackRule, frozen=True, tag="required_labels"):
    """The request must carry each of ``labels`` (label keys) with a non-empty value."""

    labels: list[str]
    effect: RuleEffect = "deny"


class AllowedRegionsRule(_PackRule, frozen=True, tag="allowed_regions"):
    """The request's region must be one of ``regions`` (narrows the class's regions)."""

    regions: list[str]
    effect: RuleEffect = "deny"


class ForbiddenRegionsRule(_PackRule, frozen=True, tag="forbidden_regions"):
    """The request's region must not be one of ``regions``."""

    regions: list[str]
    effect: RuleEffect = "deny"


class MaxTtlHoursRule(_PackRule, frozen=True, tag="max_ttl_hours"):
    """``ttl_hours`` must not exceed ``hours`` (a cap below the class maximum)."""

    hours: int
    effect: RuleEffect = "deny"


class MinApprovalsRule(_PackRule, frozen=True, tag="min_approvals"):
    """The request needs at least ``approvals`` approvals, whatever its class says."""

    approvals: int = 1


class AllowedRepositoryHostsRule(_PackRule, frozen=True, tag="allowed_repository_hosts"):
    """The app repository must be on one of ``hosts`` (https, ssh or scp-like URLs)."""

    hosts: list[str]
    effect: RuleEffect = "deny"


class PinnedRevisionRule(_PackRule, frozen=True, tag="pinned_revision"):
    """``revision`` must be immutable: a full commit SHA or a version tag (``v1.2.3``)."""

    effect: RuleEffect = "deny"


class MaxMonthlyCostRule(_PackRule, frozen=True, tag="max_monthly_cost_usd"):
    """The class's estimated monthly cost must not exceed ``usd``."""

    usd: float
    effect: RuleEffect = "deny"


class TeamBudgetRule(_PackRule, frozen=True, tag="team_budget"):
    """The team's active environments plus this request must stay within the team's monthly
    budget; otherwise the request is rejected or needs ``approvals`` approvals."""

    on_exceed: Literal["reject", "require_approval"] = "reject"
    approvals: int = 1


PackRule = (
    RequiredLabelsRule
    | AllowedRegionsRule
    | ForbiddenRegionsRule
    | MaxTtlHoursRule
    | MinApprovalsRule
    | AllowedRepositoryHostsRule
    | PinnedRevisionRule
    | MaxMonthlyCostRule
    | TeamBudgetRule
)


# The (apiVersion, kind) a pack's manifests may have: namespaced, expressible as spec/data,
# and with a schema to validate against. Cluster-scoped or RBAC objects would let a pack
# reach beyond the request's namespace. Policy refuses any other kind when a pack is saved
# (so an admin learns it then, not at the next render); the renderer refuses it in plan data.
PACK_KINDS = frozenset(
    {
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("v1", "ConfigMap"),
        ("v1", "LimitRange"),
        ("v1", "ResourceQuota"),
        ("policy/v1", "PodDisruptionBudget"),
    }
)


class PackManifestTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An object a pack adds to every environment of its classes (namespace and labels are
    filled in at render time)."""

    api_version: str = msgspec.field(name="apiVersion")
    kind: str
    name: str
    spec: dict[str, Any] = {}
    data: dict[str, str] | None = None


class PolicyPack(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A policy pack: request rules, extra manifests, namespace labels and ConfigMap metadata
    (written as ``<pack>.<key>`` into the ``platform-policy-pack`` ConfigMap)."""

    name: str
    description: str = ""
    rules: list[PackRule] = []
    manifests: list[PackManifestTemplate] = []
    namespace_labels: dict[str, str] = {}
    metadata: dict[str, str] = {}


class BudgetCheck(msgspec.Struct, frozen=True, kw_only=True):
    """A request's estimated cost against its team's monthly budget, as policy evaluated it.

    ``active_spend_usd`` is the team's active environments without this request;
    ``monthly_budget_usd`` is None when the team has no budget."""

    team: str
    monthly_budget_usd: float | None = None
    active_spend_usd: float
    request_cost_usd: float
    projected_spend_usd: float
    exceeded: bool


class TeamEnvironment(msgspec.Struct, frozen=True, kw_only=True):
    """An environment counted in its team's spend."""

    request_id: str
    class_name: str = msgspec.field(name="class")
    estimated_monthly_cost_usd: float
    since: datetime


class TeamBudgetView(msgspec.Struct, frozen=True, kw_only=True):
    """GET /v1/teams/{team}: the team's budget and the estimated spend of its active environments."""

    team: str
    # The budget that applies: the team's own, else the default for teams without one.
    monthly_budget_usd: float | None = None
    # Where monthly_budget_usd comes from: "team" (an admin set it), "default", "none".
    budget_source: Literal["team", "default", "none"] = "none"
    spend_usd: float
    remaining_usd: float | None = None
    active_environments: list[TeamEnvironment] = []
    budget_updated_at: datetime | None = None
    budget_updated_by: str | None = None


class PolicyDecisionView(msgspec.Struct, frozen=True, kw_only=True):
    """What policy decided for a request, with every reason."""

    outcome: Literal["allowed", "rejected"]
    reasons: list[PolicyReason] = []
    requires_approval: bool = False
    approvals_required: int = 0
    auto_reconcile: bool = False


class PolicyPlanView(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of policy.plan: the decision and plan for a request that is not stored."""

    request_id: str
    decision: PolicyDecisionView
    plan: EnvironmentPlan | None = None
    budget: BudgetCheck


class ValidatedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of intake.create_request with ``dry_run``: the request as it would be stored.

    ``placeholder_id`` is true when no Idempotency-Key was given, so the id (and the
    namespace and paths derived from it) is a stand-in for the one a real create gets."""

    request_id: str
    placeholder_id: bool
    spec: RequestSpec
    created_by: str


class ManifestFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    content: str


class BundlePreview(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of renderer.render: the files a reconcile of the request would commit."""

    request_id: str
    gitops_path: str
    namespace: str
    digest: str
    files: list[ManifestFile]


class DeadLetterView(msgspec.Struct, frozen=True, kw_only=True):
    """One dead letter as operators see it, without its payload: an item of the reply of
    ``<service>.list_dead_letters`` and the reply of ``<service>.replay_dead_letter``."""

    id: int
    consumer: str
    event_id: str | None
    event_type: str | None
    subject: str
    stream_seq: int | None
    error: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None = None
    # Added (optional): why it is a dead letter. ``failed`` (its handler gave up),
    # ``undecodable`` (it breaks its contract), ``parked`` (a newer data_version than the
    # consumer reads: replay it after the upgrade, it is not a failure), ``max_deliveries``
    # (the server stopped redelivering it: the process died on it every time) or ``outbox``
    # (consumer ``outbox``: the service's own event, which JetStream refuses for good, too
    # large or on a subject no stream takes; replay releases it to the relay once fixed).
    kind: str = "failed"
