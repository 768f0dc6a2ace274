"""Approval's bus entrypoints: the approve/reject verbs for the gateway, policy decisions."""

from __future__ import annotations

from contracts.rpc import ApproveRequest, RejectRequest
from libs.service_kit import ServiceKit
from services.approval.service_layer.handlers import ApprovalService


def register(kit: ServiceKit, service: ApprovalService) -> None:
    kit.route("approve", ApproveRequest, service.approve)
    kit.route("reject", RejectRequest, service.reject)
    kit.consume(
        "decisions", "request.policy_evaluated", {"request.policy_evaluated": service.on_policy_evaluated}
    )
