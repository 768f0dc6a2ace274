"""Policy rules: quota formulas of SPEC.md and class checks."""

from __future__ import annotations

import pytest

from contracts.models import RequestSpec
from services.policy.adapters.catalog_files import seed_classes, seed_quota_profiles
from services.policy.domain.evaluation import evaluate

pytestmark = pytest.mark.unit

CLASSES = {c.name: c for c in seed_classes()}
PROFILES = {p.name: p for p in seed_quota_profiles()}


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("preview", ("10", "4", "4", "2", "4Gi", "4", "8Gi")),
        ("shared-staging", ("24", "10", "8", "8", "16Gi", "16", "32Gi")),
        ("production", ("64", "32", "24", "24", "48Gi", "48", "96Gi")),
    ],
)
def test_seed_class_quota_values_match_the_spec_table(class_name: str, expected: tuple[str, ...]) -> None:
    environment_class = CLASSES[class_name]
    quota = PROFILES[environment_class.quota_profile].resource_quota_for(environment_class.default_namespaces)
    keys = (
        "pods",
        "services",
        "persistentvolumeclaims",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    )
    assert tuple(quota[key] for key in keys) == expected


@pytest.mark.parametrize(
    ("profile", "default", "maximum"),
    [
        ("small", ("500m", "512Mi"), ("2", "2Gi")),
        ("medium", ("1", "1Gi"), ("4", "8Gi")),
        ("large", ("2", "2Gi"), ("8", "16Gi")),
    ],
)
def test_limit_ranges_match_the_spec(
    profile: str, default: tuple[str, str], maximum: tuple[str, str]
) -> None:
    limit_range = PROFILES[profile].limit_range
    assert (limit_range.default["cpu"], limit_range.default["memory"]) == default
    assert limit_range.default_request == limit_range.default
    assert (limit_range.max["cpu"], limit_range.max["memory"]) == maximum


def spec(**changes: object) -> RequestSpec:
    values: dict[str, object] = {
        "app": "api",
        "team": "payments",
        "class_name": "preview",
        "region": "us-east-1",
        "ttl_hours": 24,
        "owner": "alice",
        "repository": "https://github.com/example/api.git",
    }
    values.update(changes)
    return RequestSpec(**values)  # type: ignore[arg-type]


def test_allowed_preview_gets_its_plan() -> None:
    decision = evaluate(spec(), CLASSES["preview"], PROFILES["small"])
    assert decision.outcome == "allowed"
    assert decision.plan is not None
    assert decision.plan.policy_packs == ["baseline-security", "preview-networking", "cost-guardrails"]
    assert not decision.requires_approval


def test_production_requires_one_approval() -> None:
    decision = evaluate(spec(class_name="production", ttl_hours=12), CLASSES["production"], PROFILES["large"])
    assert (decision.outcome, decision.requires_approval, decision.approvals_required) == ("allowed", True, 1)


def test_class_rules_are_rechecked_with_reasons() -> None:
    decision = evaluate(spec(region="eu-west-1", ttl_hours=100), CLASSES["preview"], PROFILES["small"])
    assert decision.outcome == "rejected"
    assert [r.code for r in decision.reasons] == ["region_not_allowed", "ttl_exceeds_class_maximum"]


def test_unknown_class_is_rejected() -> None:
    assert evaluate(spec(class_name="gone"), None, None).reasons[0].code == "unknown_class"
