"""The seed catalog shipped with the service: classes, quota profiles and policy packs as YAML.

Seeds are parsed with the same validation as an admin's API call, so a broken seed file
stops the service at start with the same message an admin would get.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from contracts.models import EnvironmentClass, PolicyPack, QuotaProfile
from services.policy.domain.catalog_validation import parse_class, parse_policy_pack, parse_quota_profile

_CATALOG = resources.files("services.policy").joinpath("catalog")


def _load(name: str) -> Any:
    return yaml.safe_load(_CATALOG.joinpath(name).read_text(encoding="utf-8"))


def seed_quota_profiles() -> list[QuotaProfile]:
    return [parse_quota_profile(str(raw["name"]), raw) for raw in _load("quota_profiles.yaml")]


def seed_policy_packs() -> list[PolicyPack]:
    """One file per pack (``catalog/packs/<name>.yaml``), in name order."""
    folder = _CATALOG.joinpath("packs")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    packs = []
    for file in files:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
        packs.append(parse_policy_pack(file.name.removesuffix(".yaml"), raw))
    return packs


def seed_classes() -> list[EnvironmentClass]:
    profiles = {profile.name for profile in seed_quota_profiles()}
    packs = {pack.name for pack in seed_policy_packs()}
    return [
        parse_class(str(raw["name"]), raw, quota_profiles=profiles, policy_packs=packs)
        for raw in _load("classes.yaml")
    ]
