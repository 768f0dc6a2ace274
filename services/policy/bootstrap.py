"""Composition root of the policy service."""

from __future__ import annotations

from libs.service_kit import ServiceKit
from services.policy.entrypoints.bus import register
from services.policy.service_layer.handlers import PolicyService
from services.policy.settings import PolicySettings

SCHEMA = "policy"


async def bootstrap(settings: PolicySettings) -> ServiceKit:
    kit = await ServiceKit.open(service="policy", schema=SCHEMA, settings=settings, package="services.policy")
    service = PolicyService(pool=kit.pool, outbox=kit.outbox)
    await service.seed_catalog()
    register(kit, service)
    return kit
