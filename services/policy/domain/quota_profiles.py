"""Quota profiles as data: ResourceQuota values scale with the class's namespace count."""

from __future__ import annotations

import msgspec

from contracts.models import LimitRangeValues


class QuotaFormula(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``max(min, per_namespace * N)`` with an optional unit suffix such as ``Gi``."""

    min: int = 0
    per_namespace: int = 0
    unit: str = ""

    def value(self, namespaces: int) -> str:
        return f"{max(self.min, self.per_namespace * namespaces)}{self.unit}"


class QuotaProfile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    resource_quota: dict[str, QuotaFormula]
    limit_range: LimitRangeValues

    def resource_quota_for(self, namespaces: int) -> dict[str, str]:
        """The ResourceQuota ``spec.hard`` values for a class with ``namespaces`` namespaces."""
        return {
            resource: formula.value(namespaces) for resource, formula in sorted(self.resource_quota.items())
        }
