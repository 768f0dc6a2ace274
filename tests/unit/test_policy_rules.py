"""Policy decisions (pure rules): SPEC.md's quota table, every rule of every seed pack, budgets.

Everything runs on the shipped seed catalog (``services/policy/catalog``), so these tests
also say what a platform team gets out of the box.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from contracts.models import (
    EnvironmentClass,
    ForbiddenRegionsRule,
    MaxTtlHoursRule,
    PackManifestTemplate,
    PolicyPack,
    RequestSpec,
    RequiredLabelsRule,
    TeamBudgetRule,
)
from services.policy.adapters.catalog_files import seed_classes, seed_policy_packs, seed_quota_profiles
from services.policy.domain.budgets import TeamSpend
from services.policy.domain.evaluation import Decision, evaluate
from services.policy.domain.packs import compose, is_pinned_revision, repository_host
from services.policy.domain.quota_profiles import resource_quota_for

CLASSES = {c.name: c for c in seed_classes()}
PROFILES = {p.name: p for p in seed_quota_profiles()}
PACKS = {p.name: p for p in seed_policy_packs()}
NO_BUDGET = TeamSpend(team="payments", monthly_budget_usd=None, active_spend_usd=0.0)
QUOTA_KEYS = (
    "pods",
    "services",
    "persistentvolumeclaims",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
)


def spec(**changes: Any) -> RequestSpec:
    values: dict[str, Any] = {
        "app": "api",
        "team": "payments",
        "class_name": "preview",
        "region": "us-east-1",
        "ttl_hours": 24,
        "owner": "alice@example.com",
        "repository": "https://github.com/example/api.git",
    }
    values.update(changes)
    return RequestSpec(**values)


def decide(
    request: RequestSpec,
    environment_class: EnvironmentClass | None = None,
    *,
    packs: dict[str, PolicyPack] | None = None,
    spend: TeamSpend = NO_BUDGET,
) -> Decision:
    environment_class = environment_class or CLASSES[request.class_name]
    profile = PROFILES[environment_class.quota_profile]
    return evaluate(request, environment_class, profile, PACKS if packs is None else packs, spend)


def codes(decision: Decision) -> list[tuple[str, str | None, str]]:
    return [(reason.code, reason.pack, reason.effect) for reason in decision.reasons]


def edited(environment_class: EnvironmentClass, **changes: Any) -> EnvironmentClass:
    return msgspec.structs.replace(environment_class, **changes)


# -- quota profiles ------------------------------------------------------------------------------------


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
    quota = resource_quota_for(
        PROFILES[environment_class.quota_profile], environment_class.default_namespaces
    )
    assert tuple(quota[key] for key in QUOTA_KEYS) == expected
    plan = decide(spec(class_name=class_name, region="us-east-1", ttl_hours=12)).plan
    assert plan is not None
    assert tuple(plan.resource_quota[key] for key in QUOTA_KEYS) == expected


@pytest.mark.parametrize(
    ("profile", "namespaces", "expected"),
    [
        # The formulas of SPEC.md's table at other namespace counts (max(min, per_namespace × N)).
        ("small", 1, ("10", "4", "4", "2", "4Gi", "4", "8Gi")),
        ("small", 3, ("24", "9", "6", "6", "12Gi", "12", "24Gi")),
        ("medium", 1, ("20", "6", "6", "4", "8Gi", "8", "16Gi")),
        ("medium", 3, ("36", "15", "12", "12", "24Gi", "24", "48Gi")),
        ("large", 1, ("40", "12", "12", "8", "16Gi", "16", "32Gi")),
        ("large", 2, ("40", "16", "12", "12", "24Gi", "24", "48Gi")),
    ],
)
def test_profile_formulas_scale_with_the_namespace_count(
    profile: str, namespaces: int, expected: tuple[str, ...]
) -> None:
    quota = resource_quota_for(PROFILES[profile], namespaces)
    assert tuple(quota[key] for key in QUOTA_KEYS) == expected


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


# -- classes -------------------------------------------------------------------------------------------


def test_allowed_preview_gets_its_plan() -> None:
    decision = decide(spec())
    assert decision.outcome == "allowed"
    assert decision.reasons == []
    assert decision.plan is not None
    assert decision.plan.policy_packs == ["baseline-security", "preview-networking", "cost-guardrails"]
    assert not decision.requires_approval
    assert decision.auto_reconcile


def test_production_requires_one_approval() -> None:
    decision = decide(spec(class_name="production", ttl_hours=12, revision="v1.4.0"))
    assert (decision.outcome, decision.requires_approval, decision.approvals_required) == ("allowed", True, 1)
    assert decision.plan is not None
    assert (decision.plan.requires_approval, decision.plan.approvals_required) == (True, 1)
    assert not decision.auto_reconcile


def test_class_rules_are_rechecked_with_reasons() -> None:
    decision = decide(spec(region="eu-west-1", ttl_hours=100))
    assert decision.outcome == "rejected"
    assert [r.code for r in decision.reasons] == ["region_not_allowed", "ttl_exceeds_class_maximum"]


def test_unknown_class_profile_or_pack_is_rejected() -> None:
    profile = PROFILES["small"]
    assert evaluate(spec(class_name="gone"), None, None, PACKS, NO_BUDGET).reasons[0].code == "unknown_class"
    assert (
        evaluate(spec(), CLASSES["preview"], None, PACKS, NO_BUDGET).reasons[0].code
        == "unknown_quota_profile"
    )
    decision = evaluate(spec(), CLASSES["preview"], profile, {}, NO_BUDGET)
    assert decision.outcome == "rejected"
    assert decision.reasons[0].code == "unknown_policy_pack"
    assert "baseline-security, preview-networking, cost-guardrails" in decision.reasons[0].message


# -- seed pack: baseline-security -------------------------------------------------------------------


@pytest.mark.parametrize(
    "repository",
    [
        "https://github.com/example/api.git",
        "https://gitlab.com:443/group/api.git",
        "ssh://git@bitbucket.org/example/api.git",
        "git@github.com:example/api.git",
    ],
)
def test_baseline_security_allows_the_approved_git_hosts(repository: str) -> None:
    assert decide(spec(repository=repository)).outcome == "allowed"


@pytest.mark.parametrize(
    "repository", ["https://git.evil.example/x/api.git", "git@github.com.evil.example:x/api.git"]
)
def test_baseline_security_rejects_other_git_hosts(repository: str) -> None:
    decision = decide(spec(repository=repository))
    assert decision.outcome == "rejected"
    assert codes(decision) == [("repository_host_not_allowed", "baseline-security", "deny")]
    assert "github.com, gitlab.com, bitbucket.org" in decision.reasons[0].message


def test_baseline_security_enforces_pod_security_restricted_on_the_namespace() -> None:
    plan = decide(spec()).plan
    assert plan is not None
    assert plan.namespace_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert plan.namespace_labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert plan.pack_metadata["baseline-security.pod-security"] == "restricted"


def test_a_request_label_cannot_override_a_pack_namespace_label() -> None:
    decision = decide(spec(labels={"pod-security.kubernetes.io/enforce": "privileged"}))
    assert decision.outcome == "rejected"
    assert codes(decision) == [("label_reserved_by_pack", None, "deny")]


# -- seed pack: preview-networking, zero-trust-networking, shared-services (manifests) --------------


def manifests(decision: Decision) -> list[tuple[str, str, str]]:
    assert decision.plan is not None
    return [(m.pack, m.kind, m.name) for m in decision.plan.pack_manifests]


def test_preview_networking_allows_ingress_from_the_ingress_controller() -> None:
    decision = decide(spec())
    assert manifests(decision) == [
        ("preview-networking", "NetworkPolicy", "allow-from-ingress-controller"),
        ("cost-guardrails", "ResourceQuota", "cost-guardrails"),
    ]
    assert decision.plan is not None
    policy = decision.plan.pack_manifests[0]
    assert policy.spec["policyTypes"] == ["Ingress"]
    assert policy.spec["ingress"] == [
        {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]}
    ]


def test_zero_trust_networking_adds_default_deny_egress_and_a_dns_allowance() -> None:
    decision = decide(spec(class_name="production", ttl_hours=12, revision="v1.0.0"))
    assert manifests(decision) == [
        ("zero-trust-networking", "NetworkPolicy", "default-deny-egress"),
        ("zero-trust-networking", "NetworkPolicy", "allow-dns-egress"),
    ]
    assert decision.plan is not None
    deny, dns = decision.plan.pack_manifests
    assert deny.spec == {"podSelector": {}, "policyTypes": ["Egress"]}
    assert dns.spec["egress"][0]["ports"] == [
        {"protocol": "UDP", "port": 53},
        {"protocol": "TCP", "port": 53},
    ]


def test_shared_services_lets_ingress_and_monitoring_in() -> None:
    decision = decide(spec(class_name="shared-staging"))
    assert ("shared-services", "NetworkPolicy", "allow-from-shared-services") in manifests(decision)


def test_shared_services_only_runs_in_us_east_1() -> None:
    """Even when an admin opens the class to another region, the pack keeps it where the
    shared services are."""
    widened = edited(CLASSES["shared-staging"], allowed_regions=["us-east-1", "us-west-2"])
    decision = decide(spec(class_name="shared-staging", region="us-west-2"), widened)
    assert decision.outcome == "rejected"
    assert codes(decision) == [("region_not_allowed_by_pack", "shared-services", "deny")]


# -- seed pack: audit-retention and metadata --------------------------------------------------------


def test_pack_metadata_goes_into_the_config_map_under_the_pack_name() -> None:
    plan = decide(spec(class_name="production", ttl_hours=12, revision="v1.0.0")).plan
    assert plan is not None
    assert plan.pack_metadata == {
        "audit-retention.audit-level": "RequestResponse",
        "audit-retention.retention-days": "400",
        "baseline-security.pod-security": "restricted",
        "baseline-security.repository-hosts": "github.com,gitlab.com,bitbucket.org",
        "sox-controls.change-control": "approval-required",
        "sox-controls.segregation-of-duties": "true",
        "zero-trust-networking.egress": "deny-by-default",
    }


# -- seed pack: sox-controls ---------------------------------------------------------------------------


def test_sox_controls_requires_an_approval_even_when_the_class_does_not() -> None:
    relaxed = edited(CLASSES["production"], requires_approval=False, approvals_required=0)
    decision = decide(spec(class_name="production", ttl_hours=12, revision="v2.0.1"), relaxed)
    assert decision.outcome == "allowed"
    assert (decision.requires_approval, decision.approvals_required) == (True, 1)
    assert codes(decision) == [("approvals_required_by_pack", "sox-controls", "require_approval")]


@pytest.mark.parametrize(
    ("revision", "flagged"),
    [("main", True), ("release/2024-05", True), ("v1.2.3", False), ("1.2.3-rc.1", False), ("a" * 40, False)],
)
def test_sox_controls_flags_a_branch_but_does_not_refuse_it(revision: str, flagged: bool) -> None:
    decision = decide(spec(class_name="production", ttl_hours=12, revision=revision))
    assert decision.outcome == "allowed"
    warnings = [c for c in codes(decision) if c[2] == "warn"]
    assert warnings == ([("revision_not_pinned", "sox-controls", "warn")] if flagged else [])


# -- seed pack: cost-guardrails (budgets) ------------------------------------------------------------


def test_cost_guardrails_keeps_load_balancers_and_node_ports_out() -> None:
    plan = decide(spec()).plan
    assert plan is not None
    quota = next(m for m in plan.pack_manifests if m.name == "cost-guardrails")
    assert quota.spec["hard"]["services.loadbalancers"] == "0"
    assert quota.spec["hard"]["services.nodeports"] == "0"


def test_cost_guardrails_caps_the_cost_of_one_environment() -> None:
    pricey = edited(CLASSES["preview"], estimated_monthly_cost_usd=1500.0)
    decision = decide(spec(), pricey)
    assert decision.outcome == "rejected"
    assert codes(decision) == [("cost_exceeds_pack_maximum", "cost-guardrails", "deny")]


def test_budget_exceeded_is_rejected_with_the_numbers() -> None:
    spend = TeamSpend(team="payments", monthly_budget_usd=1000.0, active_spend_usd=900.0)
    decision = decide(spec(), spend=spend)
    assert decision.outcome == "rejected"
    assert codes(decision) == [("team_budget_exceeded", "cost-guardrails", "deny")]
    assert decision.reasons[0].message == (
        "team payments would spend $1,050.00/month (active environments $900.00 + this request $150.00), "
        "over its budget of $1,000.00"
    )
    assert decision.budget is not None
    assert msgspec.to_builtins(decision.budget) == {
        "team": "payments",
        "monthly_budget_usd": 1000.0,
        "active_spend_usd": 900.0,
        "request_cost_usd": 150.0,
        "projected_spend_usd": 1050.0,
        "exceeded": True,
    }


def test_spending_exactly_the_budget_is_allowed() -> None:
    spend = TeamSpend(team="payments", monthly_budget_usd=1000.0, active_spend_usd=850.0)
    decision = decide(spec(), spend=spend)
    assert decision.outcome == "allowed"
    assert decision.budget is not None
    assert not decision.budget.exceeded


def test_budget_exceeded_with_the_approval_option_requires_an_approval() -> None:
    guardrails = PACKS["cost-guardrails"]
    lenient = msgspec.structs.replace(
        guardrails,
        rules=[TeamBudgetRule(on_exceed="require_approval", approvals=2), *guardrails.rules[1:]],
    )
    spend = TeamSpend(team="payments", monthly_budget_usd=100.0, active_spend_usd=0.0)
    decision = decide(spec(), packs={**PACKS, "cost-guardrails": lenient}, spend=spend)
    assert decision.outcome == "allowed"
    assert (decision.requires_approval, decision.approvals_required) == (True, 2)
    assert codes(decision) == [("team_budget_exceeded", "cost-guardrails", "require_approval")]
    assert decision.plan is not None
    assert decision.plan.requires_approval


def test_a_class_without_cost_guardrails_is_not_held_to_the_budget() -> None:
    """Production is guarded by approvals; its cost still counts in the team's spend."""
    spend = TeamSpend(team="payments", monthly_budget_usd=100.0, active_spend_usd=0.0)
    decision = decide(spec(class_name="production", ttl_hours=12, revision="v1.0.0"), spend=spend)
    assert decision.outcome == "allowed"
    assert decision.budget is not None
    assert decision.budget.exceeded


# -- the other rule types and effects ----------------------------------------------------------------


def with_pack(
    pack: PolicyPack, class_name: str = "preview"
) -> tuple[EnvironmentClass, dict[str, PolicyPack]]:
    environment_class = CLASSES[class_name]
    changed = edited(environment_class, policy_packs=[*environment_class.policy_packs, pack.name])
    return changed, {**PACKS, pack.name: pack}


def test_required_labels_forbidden_regions_and_ttl_caps() -> None:
    pack = PolicyPack(
        name="house-rules",
        rules=[
            RequiredLabelsRule(labels=["cost-center", "pr"]),
            ForbiddenRegionsRule(regions=["us-west-2"]),
            MaxTtlHoursRule(hours=48, effect="warn"),
        ],
    )
    environment_class, packs = with_pack(pack)
    decision = decide(
        spec(region="us-west-2", ttl_hours=60, labels={"pr": "7"}), environment_class, packs=packs
    )
    assert decision.outcome == "rejected"
    assert codes(decision) == [
        ("labels_missing", "house-rules", "deny"),
        ("region_forbidden", "house-rules", "deny"),
        ("ttl_exceeds_pack_maximum", "house-rules", "warn"),
    ]
    assert "cost-center" in decision.reasons[0].message
    assert "pr" not in decision.reasons[0].message.split(": ")[1]
    fine = decide(
        spec(ttl_hours=24, labels={"pr": "7", "cost-center": "cc-1"}), environment_class, packs=packs
    )
    assert (fine.outcome, fine.reasons) == ("allowed", [])


def test_a_warning_alone_never_rejects() -> None:
    pack = PolicyPack(name="soft", rules=[RequiredLabelsRule(labels=["cost-center"], effect="warn")])
    environment_class, packs = with_pack(pack)
    decision = decide(spec(), environment_class, packs=packs)
    assert decision.outcome == "allowed"
    assert codes(decision) == [("labels_missing", "soft", "warn")]


def test_packs_that_add_the_same_object_conflict() -> None:
    duplicate = PolicyPack(
        name="copycat",
        manifests=[
            PackManifestTemplate(
                api_version="networking.k8s.io/v1",
                kind="NetworkPolicy",
                name="allow-from-ingress-controller",
                spec={"podSelector": {}},
            )
        ],
        namespace_labels={"pod-security.kubernetes.io/enforce": "baseline"},
    )
    environment_class, packs = with_pack(duplicate)
    decision = decide(spec(), environment_class, packs=packs)
    assert decision.outcome == "rejected"
    assert [r.code for r in decision.reasons] == ["policy_pack_conflict", "policy_pack_conflict"]
    assert [c.part for c in compose([packs[name] for name in environment_class.policy_packs]).conflicts] == [
        "manifests",
        "namespace_labels",
    ]


def test_every_seed_class_combines_its_packs_cleanly() -> None:
    assert CLASSES, "no seed classes to check"
    for environment_class in CLASSES.values():
        assert compose([PACKS[name] for name in environment_class.policy_packs]).conflicts == []


@pytest.mark.parametrize(
    ("repository", "host"),
    [
        ("https://GitHub.com/o/r.git", "github.com"),
        ("https://git.example.com:8443/o/r.git", "git.example.com"),
        ("ssh://git@host.example:2222/o/r.git", "host.example"),
        ("git@host.example:o/r.git", "host.example"),
        ("file:///etc/passwd", None),
    ],
)
def test_repository_hosts_are_read_from_every_url_form(repository: str, host: str | None) -> None:
    assert repository_host(repository) == host


def test_pinned_revisions() -> None:
    assert is_pinned_revision("0" * 64)
    assert not is_pinned_revision("0" * 39)
    assert not is_pinned_revision("v1.2")
