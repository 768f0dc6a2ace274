"""Composition root of the approval service."""

from __future__ import annotations

import functools

from libs.service_kit import ServiceKit
from libs.settings import reveal
from libs.telemetry import refresh_every
from services.approval.adapters import metrics
from services.approval.entrypoints.bus import register
from services.approval.service_layer.handlers import ApprovalService
from services.approval.settings import ApprovalSettings

SCHEMA = "approval"


async def bootstrap(settings: ApprovalSettings) -> ServiceKit:
    kit = await ServiceKit.open(
        service="approval", schema=SCHEMA, settings=settings, package="services.approval"
    )
    service = ApprovalService(
        pool=kit.pool,
        outbox=kit.outbox,
        secret=reveal(settings.approval_hmac_secret),
        attestation_secret=reveal(settings.attestation_key),
        record_wait_seconds=settings.approval_record_wait_seconds,
    )
    register(kit, service)
    kit.background(refresh_every(functools.partial(metrics.refresh, kit.pool)), name="metrics")
    return kit
