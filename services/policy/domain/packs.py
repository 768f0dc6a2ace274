"""Policy packs as data: what their rules say about a request, and what they add to a plan.

A pack (:class:`contracts.models.PolicyPack`) has three parts:

- **rules**, a closed set of types evaluated by :func:`evaluate_rule`; each finding is a
  :class:`~contracts.models.PolicyReason` naming the pack, with effect ``deny`` (the request
  is rejected), ``warn`` (recorded only) or ``require_approval`` (the request waits for
  approvals even in a class without approval);
- **manifests** and **namespace labels**, added to every environment of the classes that
  use the pack (:func:`compose`);
- **metadata**, written into the environment's ``platform-policy-pack`` ConfigMap as
  ``<pack>.<key>``, so two packs never collide with each other or with the platform's keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from contracts.models import (
    AllowedRegionsRule,
    AllowedRepositoryHostsRule,
    BudgetCheck,
    EnvironmentClass,
    ForbiddenRegionsRule,
    MaxMonthlyCostRule,
    MaxTtlHoursRule,
    MinApprovalsRule,
    PackManifest,
    PackRule,
    PinnedRevisionRule,
    PolicyPack,
    PolicyReason,
    RequestSpec,
    RequiredLabelsRule,
    TeamBudgetRule,
)

# Objects every bundle already has (api group, kind, name): a pack adding one of these would
# make the renderer refuse every bundle of the class.
CORE_OBJECTS = frozenset(
    {
        ("networking.k8s.io", "NetworkPolicy", "default-deny-ingress"),
        ("", "ResourceQuota", "platform-defaults"),
        ("", "LimitRange", "platform-defaults"),
        ("", "ConfigMap", "platform-policy-pack"),
    }
)

EFFECT_DENY = "deny"
EFFECT_WARN = "warn"
EFFECT_REQUIRE_APPROVAL = "require_approval"

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_VERSION_TAG = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?")
_SCP_URL = re.compile(r"[^@/:]+@(?P<host>[^:/]+):.*")


def manifest_identity(api_version: str, kind: str, name: str) -> tuple[str, str, str]:
    """(api group, kind, name): two manifests with the same identity are the same object."""
    return (api_version.rpartition("/")[0], kind, name)


@dataclass(frozen=True)
class PackConflict:
    """Two packs (or a pack and the platform) want the same thing; ``part`` is the pack field."""

    part: str  # "manifests" | "namespace_labels"
    message: str


@dataclass(frozen=True)
class PackContributions:
    """What a class's packs add to its environments, and why they cannot be combined (if so)."""

    manifests: list[PackManifest] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    conflicts: list[PackConflict] = field(default_factory=list)


def compose(packs: Sequence[PolicyPack]) -> PackContributions:
    """The manifests, ConfigMap metadata and namespace labels of ``packs``, in pack order.

    Conflicts (the same object from two packs, one namespace label with two values, an
    object the platform already renders) are listed rather than resolved: which pack should
    win is the admin's call, so the class cannot be used until the packs agree.
    """
    contributions = PackContributions()
    owners: dict[tuple[str, str, str], str] = {}
    label_owners: dict[str, str] = {}
    for pack in packs:
        for template in pack.manifests:
            identity = manifest_identity(template.api_version, template.kind, template.name)
            if identity in CORE_OBJECTS:
                contributions.conflicts.append(
                    PackConflict(
                        "manifests",
                        f"pack {pack.name} adds {template.kind} {template.name}, which the platform renders itself",
                    )
                )
            elif identity in owners:
                contributions.conflicts.append(
                    PackConflict(
                        "manifests",
                        f"packs {owners[identity]} and {pack.name} both add {template.kind} {template.name}",
                    )
                )
            else:
                owners[identity] = pack.name
                contributions.manifests.append(
                    PackManifest(
                        pack=pack.name,
                        api_version=template.api_version,
                        kind=template.kind,
                        name=template.name,
                        spec=dict(template.spec),
                        data=None if template.data is None else dict(template.data),
                    )
                )
        for key, value in sorted(pack.namespace_labels.items()):
            current = contributions.namespace_labels.get(key)
            if current is not None and current != value:
                contributions.conflicts.append(
                    PackConflict(
                        "namespace_labels",
                        f"packs {label_owners[key]} and {pack.name} set namespace label {key} to "
                        f"{current!r} and {value!r}",
                    )
                )
                continue
            contributions.namespace_labels[key] = value
            label_owners.setdefault(key, pack.name)
        for key, value in sorted(pack.metadata.items()):
            contributions.metadata[f"{pack.name}.{key}"] = value
    return contributions


# -- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at: the request, its class, and its cost against the team budget."""

    spec: RequestSpec
    environment_class: EnvironmentClass
    budget: BudgetCheck


@dataclass(frozen=True)
class RuleResult:
    reasons: list[PolicyReason] = field(default_factory=list)
    # Approvals this rule demands; 0 when it demands none.
    approvals: int = 0


def repository_host(repository: str) -> str | None:
    """The host of an https://, ssh:// or scp-like (``git@host:org/repo``) URL, lowercased."""
    for scheme in ("https://", "http://", "ssh://"):
        if repository.startswith(scheme):
            authority = repository.removeprefix(scheme).split("/", 1)[0]
            host = authority.rpartition("@")[2].split(":", 1)[0]
            return host.lower() or None
    match = _SCP_URL.fullmatch(repository)
    return match["host"].lower() if match else None


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Exact host names; ``*.example.com`` also matches any subdomain of example.com."""
    for entry in allowed:
        pattern = entry.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def is_pinned_revision(revision: str) -> bool:
    """A full commit SHA (SHA-1 or SHA-256) or a semantic-version tag (``v1.2.3``, ``1.2.3-rc.1``)."""
    return _COMMIT_SHA.fullmatch(revision) is not None or _VERSION_TAG.fullmatch(revision) is not None


def _reason(pack: str, code: str, message: str, effect: str) -> PolicyReason:
    return PolicyReason(code=code, message=message, pack=pack, effect=effect)


def _money(value: float) -> str:
    return f"${value:,.2f}"


def evaluate_rule(pack: str, rule: PackRule, context: RuleContext) -> RuleResult:
    """The findings of one rule of ``pack`` for the request in ``context`` (none when it passes)."""
    spec = context.spec
    match rule:
        case RequiredLabelsRule(labels=labels, effect=effect):
            missing = [label for label in labels if not spec.labels.get(label)]
            if not missing:
                return RuleResult()
            return RuleResult(
                [_reason(pack, "labels_missing", f"labels required by {pack}: {', '.join(missing)}", effect)]
            )
        case AllowedRegionsRule(regions=regions, effect=effect):
            if spec.region in regions:
                return RuleResult()
            message = f"region {spec.region} is not allowed by {pack} (allowed: {', '.join(regions)})"
            return RuleResult([_reason(pack, "region_not_allowed_by_pack", message, effect)])
        case ForbiddenRegionsRule(regions=regions, effect=effect):
            if spec.region not in regions:
                return RuleResult()
            return RuleResult(
                [_reason(pack, "region_forbidden", f"region {spec.region} is forbidden by {pack}", effect)]
            )
        case MaxTtlHoursRule(hours=hours, effect=effect):
            if spec.ttl_hours <= hours:
                return RuleResult()
            message = f"ttl_hours {spec.ttl_hours} exceeds the {hours} h allowed by {pack}"
            return RuleResult([_reason(pack, "ttl_exceeds_pack_maximum", message, effect)])
        case MinApprovalsRule(approvals=approvals):
            message = f"{pack} requires {approvals} approval{'s' if approvals != 1 else ''}"
            return RuleResult(
                [_reason(pack, "approvals_required_by_pack", message, EFFECT_REQUIRE_APPROVAL)], approvals
            )
        case AllowedRepositoryHostsRule(hosts=hosts, effect=effect):
            host = repository_host(spec.repository)
            if host is not None and host_allowed(host, hosts):
                return RuleResult()
            message = f"repository host {host or '(unknown)'} is not allowed by {pack} (allowed: {', '.join(hosts)})"
            return RuleResult([_reason(pack, "repository_host_not_allowed", message, effect)])
        case PinnedRevisionRule(effect=effect):
            if is_pinned_revision(spec.revision):
                return RuleResult()
            message = (
                f"revision {spec.revision} is not immutable; {pack} expects a full commit SHA or a "
                "version tag (v1.2.3)"
            )
            return RuleResult([_reason(pack, "revision_not_pinned", message, effect)])
        case MaxMonthlyCostRule(usd=usd, effect=effect):
            cost = context.environment_class.estimated_monthly_cost_usd
            if cost <= usd:
                return RuleResult()
            message = (
                f"class {context.environment_class.name} costs {_money(cost)}/month, more than the "
                f"{_money(usd)} allowed by {pack}"
            )
            return RuleResult([_reason(pack, "cost_exceeds_pack_maximum", message, effect)])
        case TeamBudgetRule(on_exceed=on_exceed, approvals=approvals):
            return _team_budget(pack, on_exceed, approvals, context.budget)
    raise TypeError(f"unknown rule type {type(rule).__name__}")  # pragma: no cover - closed union


def _team_budget(pack: str, on_exceed: str, approvals: int, budget: BudgetCheck) -> RuleResult:
    if not budget.exceeded or budget.monthly_budget_usd is None:
        return RuleResult()
    message = (
        f"team {budget.team} would spend {_money(budget.projected_spend_usd)}/month "
        f"(active environments {_money(budget.active_spend_usd)} + this request "
        f"{_money(budget.request_cost_usd)}), over its budget of {_money(budget.monthly_budget_usd)}"
    )
    if on_exceed == "require_approval":
        return RuleResult(
            [
                _reason(
                    pack,
                    "team_budget_exceeded",
                    message + "; an approval is required",
                    EFFECT_REQUIRE_APPROVAL,
                )
            ],
            approvals,
        )
    return RuleResult([_reason(pack, "team_budget_exceeded", message, EFFECT_DENY)])


def evaluate_packs(packs: Sequence[PolicyPack], context: RuleContext) -> RuleResult:
    """Every finding of every rule of ``packs`` (in pack and rule order) and the approvals demanded."""
    reasons: list[PolicyReason] = []
    approvals = 0
    for pack in packs:
        for rule in pack.rules:
            result = evaluate_rule(pack.name, rule, context)
            reasons += result.reasons
            approvals = max(approvals, result.approvals)
    return RuleResult(reasons, approvals)


def packs_of(
    environment_class: EnvironmentClass, available: Mapping[str, PolicyPack]
) -> tuple[list[PolicyPack], list[str]]:
    """The class's packs in its order, and the names of those that do not exist."""
    found = [available[name] for name in environment_class.policy_packs if name in available]
    missing = [name for name in environment_class.policy_packs if name not in available]
    return found, missing
