"""What admins send for classes, quota profiles, policy packs and budgets: every failing field named.

A document's own rules are its :mod:`contracts.inputs` model's; what needs the URL's name,
the rest of the catalog or the Kubernetes quantity grammar is the policy domain's. An admin
gets one answer either way, so the cases go through both, as the policy service does. The
seed catalog passes the same validation (it is loaded through it), and every seed pack
manifest passes the Kubernetes schemas the policy service checks admin packs against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pydantic
import pytest
import yaml

from contracts.inputs import (
    MAX_USD,
    EnvironmentClassInput,
    PolicyPackInput,
    QuotaProfileInput,
    TeamBudgetInput,
)
from contracts.models import EnvironmentClass, PolicyPack, QuotaProfile, TeamBudgetRule
from libs.errors import ValidationFailed, validation_failed
from libs.kubernetes_schemas import KubernetesSchemas
from services.policy.adapters.catalog_files import seed_classes, seed_policy_packs, seed_quota_profiles
from services.policy.domain.catalog_validation import (
    check_team,
    environment_class,
    policy_pack,
    quota_profile,
)
from services.policy.service_layer.catalog import pack_schema_problems

PROFILES = frozenset({"small", "medium", "large"})
PACKS = frozenset(pack.name for pack in seed_policy_packs())
CATALOG = Path(__file__).resolve().parents[2] / "services" / "policy" / "catalog"


InputT = TypeVar("InputT", bound=pydantic.BaseModel)


def validated(model: type[InputT], body: Any) -> InputT:
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise validation_failed(exc) from None


def parse_class(
    name: str, body: Any, *, quota_profiles: frozenset[str], policy_packs: frozenset[str]
) -> EnvironmentClass:
    return environment_class(
        name, validated(EnvironmentClassInput, body), quota_profiles=quota_profiles, policy_packs=policy_packs
    )


def parse_quota_profile(name: str, body: Any) -> QuotaProfile:
    return quota_profile(name, validated(QuotaProfileInput, body))


def parse_policy_pack(name: str, body: Any) -> PolicyPack:
    return policy_pack(name, validated(PolicyPackInput, body))


def parse_budget(team: str, body: Any) -> float | None:
    check_team(team)
    return validated(TeamBudgetInput, body).monthly_usd


def failing(call: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
    """field -> message of the ValidationFailed ``call`` raises."""
    with pytest.raises(ValidationFailed) as caught:
        call(*args, **kwargs)
    details = caught.value.details
    assert isinstance(details, list)
    fields = {detail["field"]: detail["message"] for detail in details}
    for field in fields:
        assert field in caught.value.message
    return fields


def class_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "allowed_regions": ["us-east-1"],
        "max_ttl_hours": 48,
        "quota_profile": "small",
        "policy_packs": ["baseline-security"],
        "estimated_monthly_cost_usd": 99.5,
    }
    body.update(changes)
    return body


# -- the seed catalog ------------------------------------------------------------------------------------


def test_the_seed_classes_are_the_spec_table() -> None:
    rows = {
        c.name: (
            c.allowed_regions,
            c.requires_approval,
            c.approvals_required,
            c.auto_reconcile,
            c.max_ttl_hours,
            c.default_namespaces,
            c.quota_profile,
            c.policy_packs,
            c.estimated_monthly_cost_usd,
        )
        for c in seed_classes()
    }
    assert rows == {
        "preview": (
            ["us-east-1", "us-west-2"],
            False,
            0,
            True,
            72,
            1,
            "small",
            ["baseline-security", "preview-networking", "cost-guardrails"],
            150.0,
        ),
        "shared-staging": (
            ["us-east-1"],
            False,
            0,
            True,
            168,
            2,
            "medium",
            ["baseline-security", "shared-services", "cost-guardrails"],
            700.0,
        ),
        "production": (
            ["us-east-1", "us-west-2"],
            True,
            1,
            False,
            24,
            4,
            "large",
            ["baseline-security", "zero-trust-networking", "audit-retention", "sox-controls"],
            2400.0,
        ),
    }


def test_every_pack_a_seed_class_names_exists_as_a_file() -> None:
    files = {path.stem for path in (CATALOG / "packs").glob("*.yaml")}
    assert files == PACKS
    assert {name for c in seed_classes() for name in c.policy_packs} <= files
    assert {p.name for p in seed_quota_profiles()} == PROFILES


def test_every_seed_pack_manifest_is_valid_kubernetes() -> None:
    schemas = KubernetesSchemas("1.30.0")
    packs = seed_policy_packs()
    assert packs
    for pack in packs:
        assert pack_schema_problems(pack, schemas) == [], pack.name


def test_seed_packs_are_loaded_through_the_admin_validation() -> None:
    paths = sorted((CATALOG / "packs").glob("*.yaml"))
    assert paths
    for path in paths:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert parse_policy_pack(path.stem, raw).name == path.stem


# -- classes -----------------------------------------------------------------------------------------------


def test_a_valid_class_with_defaults() -> None:
    parsed = parse_class("load-test", class_body(), quota_profiles=PROFILES, policy_packs=PACKS)
    assert parsed.name == "load-test"
    assert (parsed.requires_approval, parsed.approvals_required, parsed.auto_reconcile) == (False, 0, True)
    assert parsed.default_namespaces == 1
    assert parsed.estimated_monthly_cost_usd == 99.5
    with_approval = parse_class(
        "gated", class_body(requires_approval=True), quota_profiles=PROFILES, policy_packs=PACKS
    )
    assert with_approval.approvals_required == 1


def test_every_failing_class_field_is_named() -> None:
    body = {
        "name": "other",
        "allowed_regions": ["US_EAST", "us-east-1", "us-east-1"],
        "requires_approval": "yes",
        "approvals_required": 3,
        "max_ttl_hours": 0,
        "default_namespaces": 1.5,
        "quota_profile": "huge",
        "policy_packs": ["baseline-security", "nope"],
        "estimated_monthly_cost_usd": -1,
        "colour": "red",
    }
    fields = failing(parse_class, "preview", body, quota_profiles=PROFILES, policy_packs=PACKS)
    assert set(fields) == {
        "colour",
        "allowed_regions[0]",
        "requires_approval",
        "approvals_required",
        "max_ttl_hours",
        "default_namespaces",
        "estimated_monthly_cost_usd",
    }
    assert fields["colour"] == "unknown field"
    assert fields["estimated_monthly_cost_usd"] == "must be at least 0"
    # What needs the URL and the catalog is answered once the body itself is sound.
    sound = {
        **body,
        **class_body(),
        "requires_approval": False,
        "approvals_required": 0,
        "default_namespaces": 2,
    }
    del sound["colour"]
    sound["allowed_regions"] = ["us-east-1", "us-east-1"]
    assert failing(parse_class, "preview", sound, quota_profiles=PROFILES, policy_packs=PACKS) == {
        "allowed_regions": "must not repeat an item"
    }
    sound["allowed_regions"] = ["us-east-1"]
    sound["quota_profile"] = "huge"
    sound["policy_packs"] = ["baseline-security", "nope"]
    fields = failing(parse_class, "preview", sound, quota_profiles=PROFILES, policy_packs=PACKS)
    assert set(fields) == {"name", "quota_profile", "policy_packs[1]"}
    assert fields["quota_profile"] == "unknown quota profile (known: large, medium, small)"
    assert fields["name"] == "must match the name in the URL (preview)"


def test_an_optional_class_field_given_as_null_takes_its_default() -> None:
    """An empty key in a YAML class file is null: it means the default, as leaving it out does."""
    nulls = {
        "default_namespaces": None,
        "policy_packs": None,
        "approvals_required": None,
        "description": None,
    }
    left_out = class_body()
    del left_out["policy_packs"]
    assert parse_class("preview", {**left_out, **nulls}, quota_profiles=PROFILES, policy_packs=PACKS) == (
        parse_class("preview", left_out, quota_profiles=PROFILES, policy_packs=PACKS)
    )
    body = {**class_body(), "quota_profile": None}
    assert failing(parse_class, "preview", body, quota_profiles=PROFILES, policy_packs=PACKS) == {
        "quota_profile": "is required"
    }


def test_required_class_fields_and_bad_names() -> None:
    fields = failing(parse_class, "Bad Name", {}, quota_profiles=PROFILES, policy_packs=PACKS)
    assert set(fields) == {"allowed_regions", "max_ttl_hours", "quota_profile"}
    fields = failing(parse_class, "Bad Name", class_body(), quota_profiles=PROFILES, policy_packs=PACKS)
    assert fields == {"name": "class names must be DNS-1123 labels of at most 63 characters"}
    approval = failing(
        parse_class,
        "gated",
        class_body(requires_approval=True, approvals_required=0),
        quota_profiles=PROFILES,
        policy_packs=PACKS,
    )
    assert approval == {"approvals_required": "must be at least 1 when requires_approval is true"}


# -- quota profiles ----------------------------------------------------------------------------------------


PROFILE = {
    "resource_quota": {
        "pods": {"min": 5, "per_namespace": 5},
        "requests.memory": {"per_namespace": 2, "unit": "Gi"},
    },
    "limit_range": {"default": {"cpu": "1"}, "default_request": {"cpu": "250m"}, "max": {"cpu": "2"}},
}


def test_a_valid_quota_profile() -> None:
    profile = parse_quota_profile("tiny", PROFILE)
    assert profile.resource_quota["requests.memory"].unit == "Gi"
    assert profile.limit_range.default_request == {"cpu": "250m"}


def test_every_failing_quota_profile_field_is_named() -> None:
    body = {
        "resource_quota": {
            "pods": {"min": "ten"},
            "bad key!": {"min": 1},
            "services": {"min": 1, "per_namespace": 1, "unit": "lots"},
            "secrets": {"minimum": 2},
        },
        "limit_range": {"default": {"cpu": "a lot"}, "max": {"memory": 2}, "maximum": {}},
    }
    fields = failing(parse_quota_profile, "tiny", body)
    assert set(fields) == {
        "resource_quota.pods.min",
        "resource_quota.bad key!",
        "resource_quota.services.unit",
        "resource_quota.secrets.minimum",
        "limit_range.maximum",
        "limit_range.max.memory",
    }
    assert fields["resource_quota.pods.min"] == "must be a whole number, not a string"
    assert fields["resource_quota.secrets.minimum"] == "unknown field"
    # Quantities are read with the Kubernetes grammar once the document's shape is sound.
    body = {**PROFILE, "limit_range": {"default": {"cpu": "a lot"}, "max": {"memory": "-2"}}}
    fields = failing(parse_quota_profile, "tiny", body)
    assert set(fields) == {"limit_range.default.cpu", "limit_range.max.memory"}


def test_limit_range_defaults_must_not_exceed_the_maximum() -> None:
    body = {
        **PROFILE,
        "limit_range": {"default": {"cpu": "4"}, "default_request": {"cpu": "8"}, "max": {"cpu": "2"}},
    }
    fields = failing(parse_quota_profile, "tiny", body)
    assert set(fields) == {"limit_range.default_request.cpu", "limit_range.default.cpu"}


# -- policy packs ------------------------------------------------------------------------------------------


def test_a_valid_pack_round_trips() -> None:
    body = {
        "description": "house rules",
        "rules": [
            {"type": "required_labels", "labels": ["cost-center"]},
            {"type": "team_budget", "on_exceed": "require_approval"},
        ],
        "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "house.rules", "data": {"a": "1"}}],
        "namespace_labels": {"example.com/tier": "gold"},
        "metadata": {"version": "3"},
    }
    pack = parse_policy_pack("house-rules", body)
    assert pack.rules[1] == TeamBudgetRule(on_exceed="require_approval", approvals=1)
    assert msgspec.to_builtins(pack)["rules"][0] == {
        "type": "required_labels",
        "labels": ["cost-center"],
        "effect": "deny",
    }


def test_every_failing_pack_field_is_named() -> None:
    body = {
        "rules": [
            {"type": "max_ttl_hours", "hours": "long", "colour": "red"},
            {"type": "teleport"},
            {"type": "allowed_regions", "regions": [], "effect": "shrug"},
            {"type": "allowed_repository_hosts", "hosts": ["GitHub.com/x"]},
            {"type": "team_budget", "on_exceed": "shrug"},
            {"type": "min_approvals", "approvals": 0},
        ],
        "manifests": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "admin"},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "../x"},
            {"apiVersion": "v1", "kind": "ResourceQuota", "name": "platform-defaults", "spec": {"hard": {}}},
            {"kind": "ConfigMap", "name": "x"},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "y", "spec": {"a": "b"}},
            {"apiVersion": "v1", "kind": "LimitRange", "name": "z", "data": {"a": "b"}},
        ],
        "namespace_labels": {"ok.example/x": "not a label value!"},
        "metadata": {"bad key": "v", "n": 1},
        "owner": "me",
    }
    fields = failing(parse_policy_pack, "house-rules", body)
    assert set(fields) == {
        "owner",
        "rules[0].hours",
        "rules[0].colour",
        "rules[1].type",
        "rules[2].regions",
        "rules[2].effect",
        "rules[3].hosts[0]",
        "rules[4].on_exceed",
        "rules[5].approvals",
        "manifests[0]",
        "manifests[1].name",
        "manifests[3].apiVersion",
        "manifests[4].spec",
        "manifests[5].data",
        "namespace_labels.ok.example/x",
        "metadata.n",
    }
    assert "ClusterRole" in fields["manifests[0]"]
    assert fields["manifests[3].apiVersion"] == "is required"
    assert fields["manifests[4].spec"] == "a ConfigMap has data, not a spec"
    assert fields["manifests[5].data"] == "a LimitRange has a spec, not data"
    assert fields["rules[0].colour"] == "unknown field"
    # What needs the pack's name or the platform's own objects, once the body is sound.
    sound = {
        "manifests": [
            {"apiVersion": "v1", "kind": "ResourceQuota", "name": "platform-defaults", "spec": {"hard": {}}},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x"},
        ],
        "metadata": {"bad key": "v"},
    }
    fields = failing(parse_policy_pack, "house-rules", sound)
    assert set(fields) == {"manifests[0].name", "manifests[2]", "metadata.bad key"}


def test_pack_manifests_are_checked_against_the_kubernetes_schemas() -> None:
    pack = parse_policy_pack(
        "net",
        {
            "manifests": [
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "name": "x",
                    "spec": {"podSelector": {}, "policyTypes": ["Sideways"], "evil": True},
                }
            ]
        },
    )
    problems = pack_schema_problems(pack, KubernetesSchemas("1.30.0"))
    assert {p["field"] for p in problems} == {"manifests[0]"}
    assert any("'evil' was unexpected" in p["message"] for p in problems)


# -- budgets -----------------------------------------------------------------------------------------------


def test_budgets() -> None:
    assert parse_budget("payments", {"monthly_usd": 5000}) == 5000.0
    assert parse_budget("payments", {"monthly_usd": None}) is None
    assert failing(parse_budget, "payments", {"monthly_usd": -5, "currency": "EUR"}) == {
        "currency": "unknown field",
        "monthly_usd": "must be at least 0",
    }
    assert set(failing(parse_budget, "payments", {})) == {"monthly_usd"}
    assert set(failing(parse_budget, "payments", {"monthly_usd": True})) == {"monthly_usd"}
    assert set(failing(parse_budget, "../etc", {"monthly_usd": 1})) == {"team"}


def test_a_budget_beyond_float_range_is_a_validation_error_not_a_crash() -> None:
    for amount in (10**400, float("nan"), float("inf"), MAX_USD * 2):
        assert set(failing(parse_budget, "payments", {"monthly_usd": amount})) == {"monthly_usd"}
    assert parse_budget("payments", {"monthly_usd": 1500}) == 1500.0
