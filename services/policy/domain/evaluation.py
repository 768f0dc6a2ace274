"""The policy decision for one environment request (pure rules).

The class rules are re-checked here even though intake validated against its replica:
the policy service owns the catalog and an admin may have changed the class since. Then
every rule of every pack of the class is evaluated, and the plan is assembled: quota from
the class's profile, manifests, namespace labels and ConfigMap metadata from its packs,
approvals from the class and the packs, and the request's cost against its team's budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.models import (
    BudgetCheck,
    EnvironmentClass,
    EnvironmentPlan,
    PolicyDecisionView,
    PolicyPack,
    PolicyReason,
    QuotaProfile,
    RequestSpec,
)
from services.policy.domain.budgets import TeamSpend, budget_check
from services.policy.domain.packs import (
    EFFECT_DENY,
    PackContributions,
    RuleContext,
    compose,
    evaluate_packs,
    packs_of,
)
from services.policy.domain.quota_profiles import resource_quota_for

ALLOWED = "allowed"
REJECTED = "rejected"


@dataclass(frozen=True)
class Decision:
    outcome: str  # ALLOWED | REJECTED
    reasons: list[PolicyReason] = field(default_factory=list)
    requires_approval: bool = False
    approvals_required: int = 0
    auto_reconcile: bool = False
    plan: EnvironmentPlan | None = None
    budget: BudgetCheck | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOWED

    def view(self) -> PolicyDecisionView:
        return PolicyDecisionView(
            outcome=self.outcome,  # type: ignore[arg-type]
            reasons=list(self.reasons),
            requires_approval=self.requires_approval,
            approvals_required=self.approvals_required,
            auto_reconcile=self.auto_reconcile,
        )


def class_rule_reasons(spec: RequestSpec, environment_class: EnvironmentClass) -> list[PolicyReason]:
    reasons = []
    if spec.region not in environment_class.allowed_regions:
        reasons.append(
            PolicyReason(
                code="region_not_allowed",
                message=f"region {spec.region} is not allowed for class {environment_class.name} "
                f"(allowed: {', '.join(environment_class.allowed_regions)})",
            )
        )
    if not 1 <= spec.ttl_hours <= environment_class.max_ttl_hours:
        reasons.append(
            PolicyReason(
                code="ttl_exceeds_class_maximum",
                message=f"ttl_hours {spec.ttl_hours} is outside 1..{environment_class.max_ttl_hours} "
                f"for class {environment_class.name}",
            )
        )
    return reasons


def environment_cap_reasons(
    spec: RequestSpec, environment_class: EnvironmentClass, live_in_class: int
) -> list[PolicyReason]:
    """The class's cap on one team's live environments: ``live_in_class`` (the team's others
    of this class) must leave room for this one."""
    cap = environment_class.max_environments_per_team
    if cap is None or live_in_class < cap:
        return []
    return [
        PolicyReason(
            code="team_environment_limit",
            message=f"team {spec.team} already has {live_in_class} live {environment_class.name} "
            f"environments, the most class {environment_class.name} allows per team ({cap}); delete one "
            "or ask an admin to raise the class's max_environments_per_team",
        )
    ]


def approvals_needed(environment_class: EnvironmentClass) -> int:
    if not environment_class.requires_approval:
        return 0
    return max(1, environment_class.approvals_required)


def build_plan(
    environment_class: EnvironmentClass,
    profile: QuotaProfile,
    contributions: PackContributions | None = None,
    *,
    approvals_required: int | None = None,
) -> EnvironmentPlan:
    """The plan of a request of ``environment_class``; ``approvals_required`` overrides the class's."""
    contributions = contributions or PackContributions()
    namespaces = environment_class.default_namespaces
    approvals = approvals_needed(environment_class) if approvals_required is None else approvals_required
    return EnvironmentPlan(
        class_name=environment_class.name,
        namespaces=namespaces,
        quota_profile=profile.name,
        resource_quota=resource_quota_for(profile, namespaces),
        limit_range=profile.limit_range,
        policy_packs=list(environment_class.policy_packs),
        pack_metadata=dict(contributions.metadata),
        pack_manifests=list(contributions.manifests),
        namespace_labels=dict(contributions.namespace_labels),
        estimated_monthly_cost_usd=environment_class.estimated_monthly_cost_usd,
        requires_approval=approvals > 0,
        approvals_required=approvals,
    )


def _rejected(code: str, message: str, budget: BudgetCheck) -> Decision:
    return Decision(outcome=REJECTED, reasons=[PolicyReason(code=code, message=message)], budget=budget)


def evaluate(
    spec: RequestSpec,
    environment_class: EnvironmentClass | None,
    profile: QuotaProfile | None,
    packs: Mapping[str, PolicyPack],
    spend: TeamSpend,
) -> Decision:
    """Decide whether ``spec`` may proceed, and with which quota, packs, approvals and cost.

    ``packs`` holds (at least) the class's packs; ``spend`` is the team's budget and the cost
    of its other active environments.
    """
    cost = environment_class.estimated_monthly_cost_usd if environment_class is not None else 0.0
    budget = budget_check(spend, cost)
    if environment_class is None:
        return _rejected("unknown_class", f"environment class {spec.class_name} does not exist", budget)
    if profile is None:
        return _rejected(
            "unknown_quota_profile",
            f"class {environment_class.name} refers to unknown quota profile {environment_class.quota_profile}",
            budget,
        )
    class_packs, missing = packs_of(environment_class, packs)
    if missing:
        return _rejected(
            "unknown_policy_pack",
            f"class {environment_class.name} refers to unknown policy packs: {', '.join(missing)}",
            budget,
        )

    reasons = class_rule_reasons(spec, environment_class)
    reasons += environment_cap_reasons(spec, environment_class, spend.live_in_class)
    contributions = compose(class_packs)
    reasons += [
        PolicyReason(code="policy_pack_conflict", message=conflict.message)
        for conflict in contributions.conflicts
    ]
    reasons += [
        PolicyReason(
            code="label_reserved_by_pack",
            message=f"label {key} is set on the namespace by the class's policy packs",
        )
        for key in sorted(spec.labels.keys() & contributions.namespace_labels.keys())
    ]
    rules = evaluate_packs(
        class_packs, RuleContext(spec=spec, environment_class=environment_class, budget=budget)
    )
    reasons += rules.reasons

    approvals = max(approvals_needed(environment_class), rules.approvals)
    plan = build_plan(environment_class, profile, contributions, approvals_required=approvals)
    denied = any(reason.effect == EFFECT_DENY for reason in reasons)
    return Decision(
        outcome=REJECTED if denied else ALLOWED,
        reasons=reasons,
        requires_approval=plan.requires_approval,
        approvals_required=plan.approvals_required,
        auto_reconcile=environment_class.auto_reconcile,
        plan=plan,
        budget=budget,
    )
