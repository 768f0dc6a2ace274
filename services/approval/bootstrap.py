"""Composition root of the approval service."""

from __future__ import annotations

from libs.service_kit import ServiceKit
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
        secret=settings.approval_hmac_secret,
        attestation_secret=settings.attestation_key,
        record_wait_seconds=settings.approval_record_wait_seconds,
    )
    register(kit, service)
    return kit
