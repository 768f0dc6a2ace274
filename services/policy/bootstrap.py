"""Composition root of the policy service."""

from __future__ import annotations

import functools

from libs.kubernetes_schemas import load_schemas
from libs.service_kit import ServiceKit
from libs.telemetry import refresh_every
from services.policy.adapters import metrics
from services.policy.entrypoints.bus import register
from services.policy.service_layer.catalog import CatalogService
from services.policy.service_layer.handlers import PolicyService
from services.policy.settings import PolicySettings

SCHEMA = "policy"


async def bootstrap(settings: PolicySettings) -> ServiceKit:
    # An unknown version fails at start; the schema files themselves load on the first pack
    # an admin saves (about half a second): pack edits are rare, service starts are not.
    schemas = load_schemas(settings.kubernetes_schema_version)
    kit = await ServiceKit.open(service="policy", schema=SCHEMA, settings=settings, package="services.policy")
    service = PolicyService(
        pool=kit.pool, outbox=kit.outbox, default_budget_usd=settings.default_team_budget_usd
    )
    await service.seed_catalog()
    register(
        kit,
        service,
        CatalogService(
            pool=kit.pool,
            outbox=kit.outbox,
            schemas=schemas,
            default_budget_usd=settings.default_team_budget_usd,
        ),
    )
    kit.background(
        refresh_every(functools.partial(metrics.refresh, kit.pool, settings.default_team_budget_usd)),
        name="metrics",
    )
    return kit
