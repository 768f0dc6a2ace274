"""The seed catalog shipped with the service: classes, quota profiles and policy packs as YAML.

Seeds are parsed with the same validation as an admin's API call, so a broken seed file
stops the service at start with the same message an admin would get.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from contracts.inputs import EnvironmentClassInput, PolicyPackInput, QuotaProfileInput
from contracts.models import EnvironmentClass, PolicyPack, QuotaProfile
from libs.errors import validation_failed
from services.policy.domain.catalog_validation import environment_class, policy_pack, quota_profile

InputT = TypeVar("InputT", bound=BaseModel)
_CATALOG = resources.files("services.policy").joinpath("catalog")


def _load(name: str) -> Any:
    return yaml.safe_load(_CATALOG.joinpath(name).read_text(encoding="utf-8"))


def _validated(model: type[InputT], raw: Any) -> InputT:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_failed(exc) from None


def seed_quota_profiles() -> list[QuotaProfile]:
    return [
        quota_profile(str(raw["name"]), _validated(QuotaProfileInput, raw))
        for raw in _load("quota_profiles.yaml")
    ]


def seed_policy_packs() -> list[PolicyPack]:
    """One file per pack (``catalog/packs/<name>.yaml``), in name order."""
    folder = _CATALOG.joinpath("packs")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    packs = []
    for file in files:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
        packs.append(policy_pack(file.name.removesuffix(".yaml"), _validated(PolicyPackInput, raw)))
    return packs


def seed_classes() -> list[EnvironmentClass]:
    profiles = {profile.name for profile in seed_quota_profiles()}
    packs = {pack.name for pack in seed_policy_packs()}
    return [
        environment_class(
            str(raw["name"]),
            _validated(EnvironmentClassInput, raw),
            quota_profiles=profiles,
            policy_packs=packs,
        )
        for raw in _load("classes.yaml")
    ]
