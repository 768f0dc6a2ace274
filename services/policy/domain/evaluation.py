"""The policy decision for one environment request (pure rules).

The class rules are re-checked here even though intake validated against its replica:
the policy service owns the catalog and an admin may have changed the class since.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.models import EnvironmentClass, EnvironmentPlan, PolicyReason, RequestSpec
from services.policy.domain.quota_profiles import QuotaProfile


@dataclass(frozen=True)
class Decision:
    outcome: str  # "allowed" | "rejected"
    reasons: list[PolicyReason] = field(default_factory=list)
    requires_approval: bool = False
    approvals_required: int = 0
    plan: EnvironmentPlan | None = None


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


def build_plan(environment_class: EnvironmentClass, profile: QuotaProfile) -> EnvironmentPlan:
    namespaces = environment_class.default_namespaces
    return EnvironmentPlan(
        class_name=environment_class.name,
        namespaces=namespaces,
        quota_profile=profile.name,
        resource_quota=profile.resource_quota_for(namespaces),
        limit_range=profile.limit_range,
        policy_packs=list(environment_class.policy_packs),
        estimated_monthly_cost_usd=environment_class.estimated_monthly_cost_usd,
        requires_approval=environment_class.requires_approval,
        approvals_required=approvals_needed(environment_class),
    )


def approvals_needed(environment_class: EnvironmentClass) -> int:
    if not environment_class.requires_approval:
        return 0
    return max(1, environment_class.approvals_required)


def evaluate(
    spec: RequestSpec, environment_class: EnvironmentClass | None, profile: QuotaProfile | None
) -> Decision:
    """Decide whether ``spec`` may proceed, and with which quota, packs and approvals."""
    if environment_class is None:
        return Decision(
            outcome="rejected",
            reasons=[
                PolicyReason(
                    code="unknown_class", message=f"environment class {spec.class_name} does not exist"
                )
            ],
        )
    if profile is None:
        return Decision(
            outcome="rejected",
            reasons=[
                PolicyReason(
                    code="unknown_quota_profile",
                    message=f"class {environment_class.name} refers to unknown quota profile "
                    f"{environment_class.quota_profile}",
                )
            ],
        )
    reasons = class_rule_reasons(spec, environment_class)
    plan = build_plan(environment_class, profile)
    denied = [reason for reason in reasons if reason.effect == "deny"]
    return Decision(
        outcome="rejected" if denied else "allowed",
        reasons=reasons,
        requires_approval=plan.requires_approval,
        approvals_required=plan.approvals_required,
        plan=plan,
    )
