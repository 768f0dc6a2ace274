"""Composition root of the policy service."""

from __future__ import annotations

import functools

from libs.kubernetes_schemas import KubernetesSchemas, UnsupportedKubernetesVersion
from libs.service_kit import ServiceKit
from libs.settings import SettingsError
from libs.telemetry import refresh_every
from services.policy.adapters import metrics
from services.policy.entrypoints.bus import register
from services.policy.service_layer.catalog import CatalogService
from services.policy.service_layer.handlers import PolicyService
from services.policy.settings import PolicySettings

SCHEMA = "policy"


def load_schemas(settings: PolicySettings) -> KubernetesSchemas:
    """The schemas pack manifests are checked against; an unknown version fails at start.

    The schema files themselves load on the first pack an admin saves (about half a second),
    not at every start: pack edits are rare, service starts are not.
    """
    try:
        return KubernetesSchemas(settings.kubernetes_schema_version)
    except UnsupportedKubernetesVersion as exc:
        raise SettingsError([f"PLATFORM_KUBERNETES_SCHEMA_VERSION: {exc}"]) from None


async def bootstrap(settings: PolicySettings) -> ServiceKit:
    schemas = load_schemas(settings)
    kit = await ServiceKit.open(service="policy", schema=SCHEMA, settings=settings, package="services.policy")
    service = PolicyService(pool=kit.pool, outbox=kit.outbox)
    await service.seed_catalog()
    register(kit, service, CatalogService(pool=kit.pool, outbox=kit.outbox, schemas=schemas))
    kit.background(refresh_every(functools.partial(metrics.refresh, kit.pool)), name="metrics")
    return kit
