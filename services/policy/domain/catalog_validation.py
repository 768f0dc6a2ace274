"""What an admin's catalog document must satisfy beyond its own body.

The documents' shapes and bounds are the :mod:`contracts.inputs` models', checked when
the message is decoded. What is left here needs what the model cannot see: the name in
the URL, the rest of the catalog (a class's quota profile and packs must exist), the
Kubernetes quantity grammar (:mod:`contracts.kubernetes_quantities`, shared with the renderer)
and the objects the platform renders itself. Each function turns a validated model into
the catalog's type or raises :class:`~libs.errors.ValidationFailed` naming every failing
field (``[{"field": "limit_range.default_request", "message": "..."}]``).
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from contracts.inputs import (
    CATALOG_NAME_MAX_LENGTH,
    CONFIGMAP_KEY,
    NAME_MAX_LENGTH,
    NAME_RULE,
    EnvironmentClassInput,
    LimitRangeInput,
    PolicyPackInput,
    QuotaProfileInput,
)
from contracts.kubernetes_names import is_dns1123_label
from contracts.kubernetes_quantities import parse_quantity, quantity_problem
from contracts.models import EnvironmentClass, PolicyPack, QuotaProfile
from libs.errors import FieldError, ValidationFailed
from services.policy.domain.packs import CORE_OBJECTS, manifest_identity

# A pack's manifest is written as pack-<pack>-<kind>-<name>.yaml.
FILE_NAME_MAX_LENGTH = 255


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


def name_problems(path_name: str, body_name: object, what: str) -> list[FieldError]:
    """The name is the URL's; a ``name`` in the body must repeat it (one of another type is
    the model's to report)."""
    problems = []
    if not is_dns1123_label(path_name, CATALOG_NAME_MAX_LENGTH):
        problems.append(
            FieldError(
                "name",
                f"{what} names must be DNS-1123 labels of at most {CATALOG_NAME_MAX_LENGTH} characters",
            )
        )
    if isinstance(body_name, str) and body_name != path_name:
        problems.append(FieldError("name", f"must match the name in the URL ({path_name})"))
    return problems


# -- classes ------------------------------------------------------------------------------------------


def reference_problems(
    quota_profile: object,
    policy_packs: object,
    *,
    known_profiles: Collection[str],
    known_packs: Collection[str],
) -> list[FieldError]:
    """A class's references to profiles and packs the catalog does not have. Values of the
    wrong type are the model's to report and are skipped, so this also reads raw bodies."""
    problems = []
    if isinstance(quota_profile, str) and quota_profile not in known_profiles:
        known = ", ".join(sorted(known_profiles))
        problems.append(FieldError("quota_profile", f"unknown quota profile (known: {known})"))
    for index, pack in enumerate(policy_packs if isinstance(policy_packs, list) else []):
        if isinstance(pack, str) and pack not in known_packs:
            known = ", ".join(sorted(known_packs))
            problems.append(FieldError(f"policy_packs[{index}]", f"unknown policy pack (known: {known})"))
    return problems


def environment_class(
    path_name: str,
    body: EnvironmentClassInput,
    *,
    quota_profiles: Collection[str],
    policy_packs: Collection[str],
) -> EnvironmentClass:
    """The class ``body`` describes; ``quota_profiles`` and ``policy_packs`` are the names that
    exist, and a class may refer only to those."""
    problems = Problems()
    problems.errors += name_problems(path_name, body.name, "class")
    problems.errors += reference_problems(
        body.quota_profile, list(body.policy_packs), known_profiles=quota_profiles, known_packs=policy_packs
    )
    problems.raise_if_any("environment class")
    assert body.approvals_required is not None  # the model defaults it from requires_approval
    return EnvironmentClass(
        name=path_name,
        description=body.description,
        allowed_regions=list(body.allowed_regions),
        requires_approval=body.requires_approval,
        approvals_required=body.approvals_required,
        auto_reconcile=body.auto_reconcile,
        max_ttl_hours=body.max_ttl_hours,
        default_namespaces=body.default_namespaces,
        quota_profile=body.quota_profile,
        policy_packs=list(body.policy_packs),
        estimated_monthly_cost_usd=body.estimated_monthly_cost_usd,
        max_environments_per_team=body.max_environments_per_team,
    )


# -- quota profiles -----------------------------------------------------------------------------------


def _limit_range_problems(limit_range: LimitRangeInput, problems: Problems) -> None:
    parts = {
        "default": limit_range.default,
        "default_request": limit_range.default_request,
        "max": limit_range.max,
    }
    before = len(problems.errors)
    for part, quantities in parts.items():
        for resource, quantity in quantities.items():
            problem = quantity_problem(quantity)
            if problem is not None:
                problems.add(f"limit_range.{part}.{resource}", problem)
    if len(problems.errors) > before:
        return
    # The API server rejects a LimitRange whose defaults exceed its maximum.
    for low, high in (("default_request", "default"), ("default_request", "max"), ("default", "max")):
        for resource in sorted(parts[low].keys() & parts[high].keys()):
            if parse_quantity(parts[low][resource]) > parse_quantity(parts[high][resource]):
                problems.add(
                    f"limit_range.{low}.{resource}",
                    f"{parts[low][resource]} exceeds {high} {parts[high][resource]}",
                )


def quota_profile(path_name: str, body: QuotaProfileInput) -> QuotaProfile:
    """The profile ``body`` describes, its LimitRange values real Kubernetes quantities."""
    problems = Problems()
    problems.errors += name_problems(path_name, body.name, "quota profile")
    _limit_range_problems(body.limit_range, problems)
    problems.raise_if_any("quota profile")
    document = body.model_dump(mode="json", exclude={"name"})
    document["resource_quota"] = dict(sorted(document["resource_quota"].items()))
    return msgspec.convert({**document, "name": path_name}, QuotaProfile)


# -- policy packs -------------------------------------------------------------------------------------


def _manifest_problems(path_name: str, body: PolicyPackInput, problems: Problems) -> None:
    seen: set[tuple[str, str, str]] = set()
    for index, template in enumerate(body.manifests):
        field = f"manifests[{index}]"
        file_name = f"pack-{path_name}-{template.kind.lower()}-{template.name}.yaml"
        if len(file_name) > FILE_NAME_MAX_LENGTH:
            problems.add(f"{field}.name", f"is too long: the file {file_name[:40]}... would exceed 255 bytes")
        identity = manifest_identity(template.api_version, template.kind, template.name)
        if identity in CORE_OBJECTS:
            problems.add(f"{field}.name", f"the platform renders {template.kind} {template.name} itself")
        if identity in seen:
            problems.add(field, f"{template.kind} {template.name} is in the pack twice")
        seen.add(identity)


def policy_pack(path_name: str, body: PolicyPackInput) -> PolicyPack:
    """The pack ``body`` describes. Its manifests' Kubernetes schemas are checked by the
    service (an adapter), which adds its findings to the same answer."""
    problems = Problems()
    problems.errors += name_problems(path_name, body.name, "policy pack")
    _manifest_problems(path_name, body, problems)
    for key in body.metadata:
        # Written as "<pack>.<key>" into the ConfigMap: the combined key must be one.
        if CONFIGMAP_KEY.fullmatch(f"{path_name}.{key}") is None:
            problems.add(
                f"metadata.{key}",
                "keys must be letters, digits, '-', '_' or '.' (at most 253 with the pack name)",
            )
    problems.raise_if_any("policy pack")
    document = body.model_dump(mode="json", by_alias=True, exclude={"name"})
    for sorted_map in ("namespace_labels", "metadata"):
        document[sorted_map] = dict(sorted(document[sorted_map].items()))
    return msgspec.convert({**document, "name": path_name}, PolicyPack)


# -- teams --------------------------------------------------------------------------------------------


def check_team(team: str) -> None:
    """Team names are DNS-1123 labels (as in requests); anything else cannot have a budget."""
    if not is_dns1123_label(team, NAME_MAX_LENGTH):
        raise ValidationFailed(
            "invalid team name",
            details=[{"field": "team", "message": NAME_RULE}],
        )
