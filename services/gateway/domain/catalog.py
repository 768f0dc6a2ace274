"""The API's representation of a dry run, which the gateway composes from three replies.

The catalog's envelopes (``QuotaProfileList``, ``ClassUpsert``...) are the policy
service's replies, defined once in :mod:`contracts.replies` and re-exported here.
"""

from __future__ import annotations

import msgspec

from contracts.models import BudgetCheck, BundlePreview, EnvironmentPlan, PolicyDecisionView, RequestSpec
from contracts.replies import (
    ClassUpsert,
    PolicyPackList,
    PolicyPackUpsert,
    QuotaProfileList,
    QuotaProfileUpsert,
)

__all__ = [
    "ClassUpsert",
    "DryRunPlan",
    "PolicyPackList",
    "PolicyPackUpsert",
    "QuotaProfileList",
    "QuotaProfileUpsert",
]


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
