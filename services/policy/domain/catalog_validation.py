"""Validation of what admins send: classes, quota profiles, policy packs and team budgets.

Each ``parse_*`` function turns a JSON object into the catalog's type or raises
:class:`~libs.errors.ValidationFailed` whose ``details`` name every failing field
(``[{"field": "rules[1].hours", "message": "..."}]``), so an admin fixes everything in one
round. The seed catalog goes through the same functions in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from contracts.kubernetes_names import (
    DNS1123_SUBDOMAIN,
    is_dns1123_label,
    label_key_problem,
    label_value_problem,
)
from contracts.models import (
    PACK_KINDS,
    AllowedRegionsRule,
    AllowedRepositoryHostsRule,
    EnvironmentClass,
    ForbiddenRegionsRule,
    LimitRangeValues,
    MaxMonthlyCostRule,
    MaxTtlHoursRule,
    MinApprovalsRule,
    PackManifestTemplate,
    PackRule,
    PolicyPack,
    QuotaFormula,
    QuotaProfile,
    RequiredLabelsRule,
    TeamBudgetRule,
)
from libs.errors import FieldError, ValidationFailed, json_type
from libs.kubernetes_quantities import parse_quantity
from services.policy.domain.budgets import usd_problem
from services.policy.domain.packs import CORE_OBJECTS, manifest_identity

T = TypeVar("T")

# Class and profile names end up in label values (<prefix>/class, <prefix>/quota-profile).
NAME_MAX_LENGTH = 63
# Team names are namespace and path segments, as in intake's request validation.
TEAM_MAX_LENGTH = 40
DESCRIPTION_MAX_LENGTH = 1000
MAX_TTL_HOURS = 24 * 365
MAX_NAMESPACES = 100
MAX_APPROVALS = 10
MAX_LIST_ITEMS = 100
MAX_QUOTA_VALUE = 1_000_000
MAX_METADATA_VALUE_LENGTH = 4096
# A ConfigMap key, and the file-name budget of pack-<pack>-<kind>-<name>.yaml.
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
FILE_NAME_MAX_LENGTH = 255
QUANTITY_UNITS = frozenset({"", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"})
_HOST = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

CLASS_FIELDS = frozenset(
    {
        "name",
        "description",
        "allowed_regions",
        "requires_approval",
        "approvals_required",
        "auto_reconcile",
        "max_ttl_hours",
        "default_namespaces",
        "quota_profile",
        "policy_packs",
        "estimated_monthly_cost_usd",
    }
)
PROFILE_FIELDS = frozenset({"name", "description", "resource_quota", "limit_range"})
PACK_FIELDS = frozenset({"name", "description", "rules", "manifests", "namespace_labels", "metadata"})
BUDGET_FIELDS = frozenset({"monthly_usd"})


class Problems:
    """The failing fields found so far; :meth:`raise_if_any` reports them all at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def raise_if_any(self, what: str) -> None:
        if self.errors:
            fields = ", ".join(dict.fromkeys(error.field for error in self.errors))
            raise ValidationFailed(f"invalid {what}: {fields}", details=[e.as_dict() for e in self.errors])


def _unknown_fields(body: Mapping[str, Any], known: frozenset[str], problems: Problems) -> None:
    for name in sorted(map(str, body)):
        if name not in known:
            problems.add(name, "unknown field")


def _name(path_name: str, body: Mapping[str, Any], what: str, problems: Problems) -> None:
    """The name is the URL's; a ``name`` in the body must repeat it."""
    if not is_dns1123_label(path_name, NAME_MAX_LENGTH):
        problems.add("name", f"{what} names must be DNS-1123 labels of at most {NAME_MAX_LENGTH} characters")
    if "name" in body and body["name"] != path_name:
        problems.add("name", f"must match the name in the URL ({path_name})")


def _description(body: Mapping[str, Any], problems: Problems) -> str:
    value = body.get("description", "")
    if not isinstance(value, str):
        problems.add("description", f"must be a string, not {json_type(value)}")
        return ""
    if len(value) > DESCRIPTION_MAX_LENGTH:
        problems.add("description", f"must be at most {DESCRIPTION_MAX_LENGTH} characters")
    return value


def _bool(body: Mapping[str, Any], name: str, default: bool, problems: Problems) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        problems.add(name, f"must be true or false, not {json_type(value)}")
        return default
    return value


def _int(
    body: Mapping[str, Any], name: str, problems: Problems, *, low: int, high: int, default: int | None = None
) -> int | None:
    if name not in body or body[name] is None:
        if default is None:
            problems.add(name, "is required")
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        problems.add(name, f"must be a whole number, not {json_type(value)}")
        return None
    if not low <= value <= high:
        problems.add(name, f"must be between {low} and {high}")
        return None
    return value


def _string_list(value: Any, field: str, problems: Problems, *, required: bool) -> list[str]:
    if value is None:
        if required:
            problems.add(field, "is required")
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        problems.add(field, "must be an array of strings")
        return []
    if required and not value:
        problems.add(field, "must not be empty")
    if len(value) > MAX_LIST_ITEMS:
        problems.add(field, f"must have at most {MAX_LIST_ITEMS} items")
    if len(set(value)) != len(value):
        problems.add(field, "must not repeat an item")
    return list(value)


def _dns_labels(values: list[str], field: str, problems: Problems) -> None:
    for index, value in enumerate(values):
        if not is_dns1123_label(value):
            problems.add(f"{field}[{index}]", "must be a DNS-1123 label (lowercase letters, digits and '-')")


def _convert(value: Any, target: type[T], field: str, problems: Problems) -> T | None:
    """``value`` as ``target`` (a contracts Struct), or None with the decoder's complaint."""
    try:
        return msgspec.convert(value, target)
    except msgspec.ValidationError as exc:
        # msgspec names the failing path inside the value as "$..."; make it relative to field.
        message, _, where = str(exc).partition(" - at `$")
        problems.add(f"{field}{where.rstrip('`')}", message)
        return None


# -- classes ------------------------------------------------------------------------------------------


def parse_class(
    path_name: str,
    body: Mapping[str, Any],
    *,
    quota_profiles: set[str] | frozenset[str],
    policy_packs: set[str] | frozenset[str],
) -> EnvironmentClass:
    """An environment class from an admin's PUT body (every field but ``name`` from the body).

    ``quota_profiles`` and ``policy_packs`` are the names that exist: a class may refer only
    to those.
    """
    problems = Problems()
    _unknown_fields(body, CLASS_FIELDS, problems)
    _name(path_name, body, "class", problems)
    description = _description(body, problems)

    regions = _string_list(body.get("allowed_regions"), "allowed_regions", problems, required=True)
    _dns_labels(regions, "allowed_regions", problems)

    requires_approval = _bool(body, "requires_approval", False, problems)
    auto_reconcile = _bool(body, "auto_reconcile", True, problems)
    approvals = _int(
        body, "approvals_required", problems, low=0, high=MAX_APPROVALS, default=1 if requires_approval else 0
    )
    if approvals is not None:
        if requires_approval and approvals < 1:
            problems.add("approvals_required", "must be at least 1 when requires_approval is true")
        if not requires_approval and approvals > 0:
            problems.add("approvals_required", "must be 0 when requires_approval is false")
    max_ttl = _int(body, "max_ttl_hours", problems, low=1, high=MAX_TTL_HOURS)
    namespaces = _int(body, "default_namespaces", problems, low=1, high=MAX_NAMESPACES, default=1)

    profile = body.get("quota_profile")
    if profile is None:
        problems.add("quota_profile", "is required")
    elif not isinstance(profile, str):
        problems.add("quota_profile", f"must be a string, not {json_type(profile)}")
        profile = None
    elif profile not in quota_profiles:
        problems.add("quota_profile", f"unknown quota profile (known: {', '.join(sorted(quota_profiles))})")

    packs = _string_list(body.get("policy_packs"), "policy_packs", problems, required=False)
    for index, pack in enumerate(packs):
        if pack not in policy_packs:
            problems.add(
                f"policy_packs[{index}]", f"unknown policy pack (known: {', '.join(sorted(policy_packs))})"
            )

    cost = body.get("estimated_monthly_cost_usd", 0)
    cost_problem = usd_problem(cost)
    if cost_problem is not None:
        problems.add("estimated_monthly_cost_usd", cost_problem)

    problems.raise_if_any("environment class")
    assert max_ttl is not None
    assert namespaces is not None
    assert approvals is not None
    assert isinstance(profile, str)
    return EnvironmentClass(
        name=path_name,
        description=description,
        allowed_regions=regions,
        requires_approval=requires_approval,
        approvals_required=approvals,
        auto_reconcile=auto_reconcile,
        max_ttl_hours=max_ttl,
        default_namespaces=namespaces,
        quota_profile=profile,
        policy_packs=packs,
        estimated_monthly_cost_usd=float(cost),
    )


# -- quota profiles -----------------------------------------------------------------------------------


def _quantities(value: Any, field: str, problems: Problems) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.add(field, f"must be an object of resource: quantity, not {json_type(value)}")
        return {}
    found: dict[str, str] = {}
    for resource, quantity in value.items():
        where = f"{field}.{resource}"
        if label_key_problem(resource) is not None:
            problems.add(where, "is not a resource name (e.g. cpu, memory, ephemeral-storage)")
            continue
        if not isinstance(quantity, str):
            problems.add(
                where, f'must be a quantity string such as "500m" or "2Gi", not {json_type(quantity)}'
            )
            continue
        try:
            parse_quantity(quantity)
        except ValueError as exc:
            problems.add(where, str(exc))
            continue
        found[resource] = quantity
    return found


def _limit_range(value: Any, problems: Problems) -> LimitRangeValues | None:
    if value is None:
        problems.add("limit_range", "is required")
        return None
    if not isinstance(value, dict):
        problems.add("limit_range", f"must be an object, not {json_type(value)}")
        return None
    for name in sorted(set(value) - {"default", "default_request", "max"}):
        problems.add(f"limit_range.{name}", "unknown field (default, default_request, max)")
    before = len(problems.errors)
    parts = {
        name: _quantities(value.get(name, {}), f"limit_range.{name}", problems)
        for name in ("default", "default_request", "max")
    }
    if len(problems.errors) > before:
        return None
    # The API server rejects a LimitRange whose defaults exceed its maximum.
    for low, high in (("default_request", "default"), ("default_request", "max"), ("default", "max")):
        for resource in sorted(parts[low].keys() & parts[high].keys()):
            if parse_quantity(parts[low][resource]) > parse_quantity(parts[high][resource]):
                problems.add(
                    f"limit_range.{low}.{resource}",
                    f"{parts[low][resource]} exceeds {high} {parts[high][resource]}",
                )
    return LimitRangeValues(
        default=parts["default"], default_request=parts["default_request"], max=parts["max"]
    )


def parse_quota_profile(path_name: str, body: Mapping[str, Any]) -> QuotaProfile:
    """A quota profile from an admin's PUT body."""
    problems = Problems()
    _unknown_fields(body, PROFILE_FIELDS, problems)
    _name(path_name, body, "quota profile", problems)
    description = _description(body, problems)
    formulas: dict[str, QuotaFormula] = {}
    raw_quota = body.get("resource_quota")
    if raw_quota is None:
        problems.add("resource_quota", "is required")
    elif not isinstance(raw_quota, dict) or not raw_quota:
        problems.add("resource_quota", "must be a non-empty object of resource: formula")
    else:
        for resource, raw in raw_quota.items():
            where = f"resource_quota.{resource}"
            if label_key_problem(resource) is not None:
                problems.add(
                    where, "is not a resource name (e.g. pods, requests.cpu, count/deployments.apps)"
                )
                continue
            formula = _convert(raw, QuotaFormula, where, problems)
            if formula is None:
                continue
            if not (0 <= formula.min <= MAX_QUOTA_VALUE and 0 <= formula.per_namespace <= MAX_QUOTA_VALUE):
                problems.add(where, f"min and per_namespace must be between 0 and {MAX_QUOTA_VALUE}")
            elif formula.unit not in QUANTITY_UNITS:
                units = ", ".join(unit for unit in sorted(QUANTITY_UNITS) if unit)
                problems.add(f"{where}.unit", f"must be empty or one of {units}")
            else:
                formulas[resource] = formula
    limit_range = _limit_range(body.get("limit_range"), problems)
    problems.raise_if_any("quota profile")
    assert limit_range is not None
    return QuotaProfile(
        name=path_name,
        description=description,
        resource_quota=dict(sorted(formulas.items())),
        limit_range=limit_range,
    )


# -- policy packs -------------------------------------------------------------------------------------


def _rule_problems(rule: PackRule, field: str, problems: Problems) -> None:
    match rule:
        case RequiredLabelsRule(labels=labels):
            if not labels:
                problems.add(f"{field}.labels", "must not be empty")
            for index, key in enumerate(labels):
                problem = label_key_problem(key)
                if problem is not None:
                    problems.add(f"{field}.labels[{index}]", problem)
        case AllowedRegionsRule(regions=regions) | ForbiddenRegionsRule(regions=regions):
            if not regions:
                problems.add(f"{field}.regions", "must not be empty")
            _dns_labels(regions, f"{field}.regions", problems)
        case MaxTtlHoursRule(hours=hours):
            if not 1 <= hours <= MAX_TTL_HOURS:
                problems.add(f"{field}.hours", f"must be between 1 and {MAX_TTL_HOURS}")
        case MinApprovalsRule(approvals=approvals) | TeamBudgetRule(approvals=approvals):
            if not 1 <= approvals <= MAX_APPROVALS:
                problems.add(f"{field}.approvals", f"must be between 1 and {MAX_APPROVALS}")
        case AllowedRepositoryHostsRule(hosts=hosts):
            if not hosts:
                problems.add(f"{field}.hosts", "must not be empty")
            for index, host in enumerate(hosts):
                if len(host) > 253 or _HOST.fullmatch(host) is None:
                    problems.add(f"{field}.hosts[{index}]", "must be a lowercase host name (or *.domain)")
        case MaxMonthlyCostRule(usd=usd):
            problem = usd_problem(usd)
            if problem is not None:
                problems.add(f"{field}.usd", problem)
        case _:
            pass


def _manifest_problems(
    pack_name: str, template: PackManifestTemplate, field: str, problems: Problems
) -> None:
    if (template.api_version, template.kind) not in PACK_KINDS:
        allowed = ", ".join(f"{kind} ({api})" for api, kind in sorted(PACK_KINDS))
        problems.add(
            field, f"kind {template.kind} of {template.api_version} is not allowed (allowed: {allowed})"
        )
        return
    if len(template.name) > 253 or DNS1123_SUBDOMAIN.fullmatch(template.name) is None:
        problems.add(f"{field}.name", "must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.')")
        return
    file_name = f"pack-{pack_name}-{template.kind.lower()}-{template.name}.yaml"
    if len(file_name) > FILE_NAME_MAX_LENGTH:
        problems.add(f"{field}.name", f"is too long: the file {file_name[:40]}... would exceed 255 bytes")
    if manifest_identity(template.api_version, template.kind, template.name) in CORE_OBJECTS:
        problems.add(f"{field}.name", f"the platform renders {template.kind} {template.name} itself")
    for key in template.data or {}:
        if _CONFIGMAP_KEY.fullmatch(key) is None:
            problems.add(f"{field}.data.{key}", "keys must be letters, digits, '-', '_' or '.'")
    if template.kind == "ConfigMap" and template.spec:
        problems.add(f"{field}.spec", "a ConfigMap has data, not a spec")
    if template.kind != "ConfigMap" and template.data is not None:
        problems.add(f"{field}.data", f"a {template.kind} has a spec, not data")


def _items(body: Mapping[str, Any], name: str, problems: Problems) -> list[Any]:
    value = body.get(name, [])
    if not isinstance(value, list):
        problems.add(name, f"must be an array, not {json_type(value)}")
        return []
    if len(value) > MAX_LIST_ITEMS:
        problems.add(name, f"must have at most {MAX_LIST_ITEMS} items")
        return []
    return value


def _string_map(
    body: Mapping[str, Any], name: str, problems: Problems, check: Callable[[str, str, str], None]
) -> dict[str, str]:
    value = body.get(name, {})
    if not isinstance(value, dict):
        problems.add(name, f"must be an object of string values, not {json_type(value)}")
        return {}
    found: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            problems.add(f"{name}.{key}", f"must be a string, not {json_type(item)}")
            continue
        before = len(problems.errors)
        check(f"{name}.{key}", key, item)
        if len(problems.errors) == before:
            found[key] = item
    return dict(sorted(found.items()))


def parse_policy_pack(path_name: str, body: Mapping[str, Any]) -> PolicyPack:
    """A policy pack from an admin's PUT body.

    Checks the shape of every rule and manifest; the manifests' Kubernetes schemas are
    checked by the service (an adapter), which adds its findings to the same answer.
    """
    problems = Problems()
    _unknown_fields(body, PACK_FIELDS, problems)
    _name(path_name, body, "policy pack", problems)
    description = _description(body, problems)

    rules: list[PackRule] = []
    for index, raw in enumerate(_items(body, "rules", problems)):
        rule = _convert(raw, PackRule, f"rules[{index}]", problems)  # type: ignore[arg-type]
        if rule is not None:
            _rule_problems(rule, f"rules[{index}]", problems)
            rules.append(rule)

    manifests: list[PackManifestTemplate] = []
    seen: set[tuple[str, str, str]] = set()
    for index, raw in enumerate(_items(body, "manifests", problems)):
        template = _convert(raw, PackManifestTemplate, f"manifests[{index}]", problems)
        if template is None:
            continue
        _manifest_problems(path_name, template, f"manifests[{index}]", problems)
        identity = manifest_identity(template.api_version, template.kind, template.name)
        if identity in seen:
            problems.add(f"manifests[{index}]", f"{template.kind} {template.name} is in the pack twice")
        seen.add(identity)
        manifests.append(template)

    def label_check(field: str, key: str, value: str) -> None:
        for problem in (label_key_problem(key), label_value_problem(value)):
            if problem is not None:
                problems.add(field, problem)

    def metadata_check(field: str, key: str, value: str) -> None:
        # Written as "<pack>.<key>" into the ConfigMap: the combined key must be one.
        if _CONFIGMAP_KEY.fullmatch(f"{path_name}.{key}") is None:
            problems.add(
                field, "keys must be letters, digits, '-', '_' or '.' (at most 253 with the pack name)"
            )
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            problems.add(field, f"must be at most {MAX_METADATA_VALUE_LENGTH} characters")

    namespace_labels = _string_map(body, "namespace_labels", problems, label_check)
    metadata = _string_map(body, "metadata", problems, metadata_check)
    problems.raise_if_any("policy pack")
    return PolicyPack(
        name=path_name,
        description=description,
        rules=rules,
        manifests=manifests,
        namespace_labels=namespace_labels,
        metadata=metadata,
    )


# -- teams and budgets ----------------------------------------------------------------------------------


def check_team(team: str) -> None:
    """Team names are DNS-1123 labels (as in requests); anything else cannot have a budget."""
    if not is_dns1123_label(team, TEAM_MAX_LENGTH):
        raise ValidationFailed(
            "invalid team name",
            details=[
                {
                    "field": "team",
                    "message": f"must be a DNS-1123 label of at most {TEAM_MAX_LENGTH} characters",
                }
            ],
        )


def parse_budget(team: str, body: Mapping[str, Any]) -> float | None:
    """The monthly budget in US dollars from ``{"monthly_usd": N}``; null removes the budget."""
    check_team(team)
    problems = Problems()
    _unknown_fields(body, BUDGET_FIELDS, problems)
    if "monthly_usd" not in body:
        problems.add("monthly_usd", "is required (a number, or null to remove the budget)")
    value = body.get("monthly_usd")
    if value is not None:
        problem = usd_problem(value)
        if problem is not None:
            problems.add("monthly_usd", problem)
    problems.raise_if_any("team budget")
    return None if value is None else float(value)
