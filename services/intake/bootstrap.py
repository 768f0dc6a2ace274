"""Composition root of the intake service."""

from __future__ import annotations

import asyncio
import functools

from contracts.catalog import DURABLES
from libs.bus import StreamBacklog
from libs.service_kit import ServiceKit
from libs.telemetry import refresh_every
from services.intake.adapters import metrics
from services.intake.entrypoints.bus import register
from services.intake.service_layer.handlers import PAGE_BYTES, IntakeService
from services.intake.settings import IntakeSettings

SCHEMA = "intake"


async def bootstrap(settings: IntakeSettings) -> ServiceKit:
    kit = await ServiceKit.open(service="intake", schema=SCHEMA, settings=settings, package="services.intake")
    # A page of timeline entries stays within a quarter of what the bus carries (a server
    # configured below NATS's default 1 MB gets smaller pages, not replies it must refuse).
    page_bytes = min(PAGE_BYTES, kit.nc.max_payload // 4) if kit.nc.max_payload else PAGE_BYTES
    service = IntakeService(pool=kit.pool, outbox=kit.outbox, page_bytes=page_bytes)
    register(kit, service)
    # Readiness, not a reported dependency: the catalog is intake's own replica (in its own
    # schema, filled by its own consumer), without it intake cannot validate any create, and
    # once replicated it never empties again, so this gates a fresh install only and cannot
    # flap with policy's availability afterwards.
    kit.readiness["class_catalog"] = service.catalog_replicated
    kit.background(refresh_every(functools.partial(metrics.refresh, kit.pool)), name="metrics")
    if settings.expiry_sweep_interval_seconds > 0:
        backlog = StreamBacklog(kit.js, settings.stream_name, DURABLES)

        async def sweep(stopping: asyncio.Event) -> None:
            await service.run_sweepers(
                stopping,
                interval=settings.expiry_sweep_interval_seconds,
                batch=settings.expiry_sweep_batch,
                deadline_seconds=settings.reconcile_deadline_seconds,
                backlog=backlog.behind,
            )

        kit.background(sweep)
    return kit
