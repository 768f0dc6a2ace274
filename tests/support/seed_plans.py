"""The seed classes' requests and plans as the policy service computes them (SPEC.md tables).

:func:`seed_plan` is written out literally rather than computed, so renderer tests check the
SPEC's numbers; :func:`catalog_plan` is what the policy domain computes from the shipped
catalog (with the packs' manifests), for golden files and property tests.
"""

from __future__ import annotations

import functools

from contracts.models import (
    EnvironmentClass,
    EnvironmentPlan,
    LimitRangeValues,
    PolicyPack,
    QuotaProfile,
    RequestSpec,
)
from services.policy.adapters.catalog_files import seed_classes, seed_policy_packs, seed_quota_profiles
from services.policy.domain.budgets import TeamSpend
from services.policy.domain.evaluation import evaluate

REQUEST_ID = "req-0123456789abcdef"

QUOTAS = {
    "preview": {
        "pods": "10",
        "services": "4",
        "persistentvolumeclaims": "4",
        "requests.cpu": "2",
        "requests.memory": "4Gi",
        "limits.cpu": "4",
        "limits.memory": "8Gi",
    },
    "shared-staging": {
        "pods": "24",
        "services": "10",
        "persistentvolumeclaims": "8",
        "requests.cpu": "8",
        "requests.memory": "16Gi",
        "limits.cpu": "16",
        "limits.memory": "32Gi",
    },
    "production": {
        "pods": "64",
        "services": "32",
        "persistentvolumeclaims": "24",
        "requests.cpu": "24",
        "requests.memory": "48Gi",
        "limits.cpu": "48",
        "limits.memory": "96Gi",
    },
}

# (default = defaultRequest, max) per profile.
LIMITS = {
    "small": ({"cpu": "500m", "memory": "512Mi"}, {"cpu": "2", "memory": "2Gi"}),
    "medium": ({"cpu": "1", "memory": "1Gi"}, {"cpu": "4", "memory": "8Gi"}),
    "large": ({"cpu": "2", "memory": "2Gi"}, {"cpu": "8", "memory": "16Gi"}),
}

CLASSES = {
    # class: (region, namespaces, quota profile, policy packs, cost, requires approval)
    "preview": (
        "us-east-1",
        1,
        "small",
        ["baseline-security", "preview-networking", "cost-guardrails"],
        150.0,
        False,
    ),
    "shared-staging": (
        "us-east-1",
        2,
        "medium",
        ["baseline-security", "shared-services", "cost-guardrails"],
        700.0,
        False,
    ),
    "production": (
        "us-west-2",
        4,
        "large",
        ["baseline-security", "zero-trust-networking", "audit-retention", "sox-controls"],
        2400.0,
        True,
    ),
}


def seed_spec(seed_class: str, /, **changes: object) -> RequestSpec:
    """A request for ``seed_class`` by the payments team; ``changes`` override fields."""
    region = CLASSES[seed_class][0]
    values: dict[str, object] = {
        "app": "payments-api",
        "team": "payments",
        "class_name": seed_class,
        "region": region,
        "ttl_hours": 24,
        "owner": "alice@example.com",
        "repository": "https://github.com/example/payments-api.git",
        "revision": "main",
        "labels": {"cost-center": "cc-42"},
    }
    values.update(changes)
    return RequestSpec(**values)  # type: ignore[arg-type]


def seed_plan(seed_class: str, /, **changes: object) -> EnvironmentPlan:
    """The policy service's plan for ``seed_class``; ``changes`` override fields."""
    _, namespaces, profile, packs, cost, requires_approval = CLASSES[seed_class]
    default, maximum = LIMITS[profile]
    values: dict[str, object] = {
        "class_name": seed_class,
        "namespaces": namespaces,
        "quota_profile": profile,
        "resource_quota": dict(QUOTAS[seed_class]),
        "limit_range": LimitRangeValues(
            default=dict(default), default_request=dict(default), max=dict(maximum)
        ),
        "policy_packs": list(packs),
        "estimated_monthly_cost_usd": cost,
        "requires_approval": requires_approval,
        "approvals_required": 1 if requires_approval else 0,
    }
    values.update(changes)
    return EnvironmentPlan(**values)  # type: ignore[arg-type]


@functools.cache
def seed_catalog() -> tuple[dict[str, EnvironmentClass], dict[str, QuotaProfile], dict[str, PolicyPack]]:
    """The policy service's shipped catalog (read once: property tests plan many requests)."""
    return (
        {c.name: c for c in seed_classes()},
        {p.name: p for p in seed_quota_profiles()},
        {p.name: p for p in seed_policy_packs()},
    )


def catalog_plan(seed_class: str, spec: RequestSpec | None = None) -> EnvironmentPlan:
    """The plan the policy service computes for ``seed_class`` from the shipped seed catalog
    (quota profile, policy packs' manifests, namespace labels and metadata), team without budget."""
    classes, profiles, packs = seed_catalog()
    request = spec or seed_spec(seed_class)
    environment_class = classes[seed_class]
    profile = profiles[environment_class.quota_profile]
    decision = evaluate(request, environment_class, profile, packs, TeamSpend(request.team, None, 0.0))
    assert decision.plan is not None, decision.reasons
    return decision.plan
