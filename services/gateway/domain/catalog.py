"""The API's representations of the policy catalog, team budgets and dry-run plans.

The items are the contracts' models (``EnvironmentClass``, ``QuotaProfile``,
``PolicyPack``, ``TeamBudgetView``, ``PolicyPlanView``, ``BundlePreview``); these Structs
are the envelopes the policy service replies with and the gateway serves.
"""

from __future__ import annotations

import msgspec

from contracts.models import (
    BudgetCheck,
    BundlePreview,
    EnvironmentClass,
    EnvironmentPlan,
    PolicyDecisionView,
    PolicyPack,
    QuotaProfile,
    RequestSpec,
)


class QuotaProfileList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[QuotaProfile]


class PolicyPackList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PolicyPack]


class ClassUpsert(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``policy.upsert_class``: ``revision`` travels in ``class.upserted``."""

    created: bool
    revision: int
    environment_class: EnvironmentClass = msgspec.field(name="class")


class QuotaProfileUpsert(msgspec.Struct, frozen=True, kw_only=True):
    created: bool
    profile: QuotaProfile


class PolicyPackUpsert(msgspec.Struct, frozen=True, kw_only=True):
    created: bool
    pack: PolicyPack


class DryRunPlan(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/environment-requests?dry_run=true``: what creating the request would do.

    Nothing is stored and no event is published. ``request_id`` is the id a create with the
    same Idempotency-Key gets (``placeholder_id`` is true without a key: the namespace and
    paths in the manifests then belong to no real request). ``manifests`` are the exact files
    a reconcile would commit; null when the decision is a rejection (nothing would be
    committed) or when they cannot be rendered (``render_error`` says why).
    """

    dry_run: bool = True
    request_id: str
    placeholder_id: bool
    request: RequestSpec
    decision: PolicyDecisionView
    plan: EnvironmentPlan | None = None
    budget: BudgetCheck
    manifests: BundlePreview | None = None
    render_error: str | None = None
