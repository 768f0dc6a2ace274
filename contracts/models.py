"""Value types shared by events and RPC messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    drift_summary: list[dict[str, Any]] = []
    quota_profile: str | None = None
    policy_packs: list[str] = []
    estimated_monthly_cost_usd: float | None = None
    policy_decision: dict[str, Any] | None = None


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    type: str
    source: str
    time: datetime
    generation: int | None = None
    applied: bool
    status_after: str
    data: dict[str, Any]
