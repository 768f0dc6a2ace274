"""Quota profiles as data: ResourceQuota values scale with the class's namespace count.

A profile (:class:`contracts.models.QuotaProfile`) holds one formula per resource,
``max(min, per_namespace * N)`` plus a unit, where N is the class's ``default_namespaces``,
and fixed LimitRange values per container. Admins add profiles through the API; nothing
here knows the seed profiles' names.
"""

from __future__ import annotations

from contracts.models import QuotaFormula, QuotaProfile


def formula_value(formula: QuotaFormula, namespaces: int) -> str:
    """The quantity ``formula`` gives for a class with ``namespaces`` namespaces (``"16Gi"``)."""
    return f"{max(formula.min, formula.per_namespace * namespaces)}{formula.unit}"


def resource_quota_for(profile: QuotaProfile, namespaces: int) -> dict[str, str]:
    """The ResourceQuota ``spec.hard`` values for a class with ``namespaces`` namespaces."""
    return {
        resource: formula_value(formula, namespaces)
        for resource, formula in sorted(profile.resource_quota.items())
    }
