"""Approval's bus entrypoints."""

from __future__ import annotations

from libs.service_kit import ServiceKit
from services.approval.service_layer.handlers import ApprovalService


def register(kit: ServiceKit, service: ApprovalService) -> None:
    kit.consume(
        "decisions", "request.policy_evaluated", {"request.policy_evaluated": service.on_policy_evaluated}
    )
