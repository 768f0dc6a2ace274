"""The seed catalog shipped with the service: classes and quota profiles as YAML data."""

from __future__ import annotations

from importlib import resources

import msgspec
import yaml

from contracts.models import EnvironmentClass
from services.policy.domain.quota_profiles import QuotaProfile

_CATALOG = resources.files("services.policy").joinpath("catalog")


def seed_classes() -> list[EnvironmentClass]:
    raw = yaml.safe_load(_CATALOG.joinpath("classes.yaml").read_text(encoding="utf-8"))
    return msgspec.convert(raw, list[EnvironmentClass])


def seed_quota_profiles() -> list[QuotaProfile]:
    raw = yaml.safe_load(_CATALOG.joinpath("quota_profiles.yaml").read_text(encoding="utf-8"))
    return msgspec.convert(raw, list[QuotaProfile])
