"""Approval's bus entrypoints: the approve/reject verbs for the gateway, policy decisions."""

from __future__ import annotations

from contracts.events import (
    RequestApprovalRecorded,
    RequestApproved,
    RequestFailed,
    RequestPolicyEvaluated,
    RequestRejected,
    RequestStageRetrying,
)
from contracts.rpc import APPROVE, REJECT
from libs.service_kit import ServiceKit
from libs.topology import Consumer, ServiceTopology, skipped_on_replay
from services.approval.service_layer.handlers import ApprovalService


def register(kit: ServiceKit, service: ApprovalService) -> None:
    kit.route(APPROVE, service.approve)
    kit.route(REJECT, service.reject)
    kit.subscribe(TOPOLOGY, service)


TOPOLOGY = ServiceTopology(
    name="approval",
    consumers=(
        Consumer(
            "decisions",
            {
                RequestPolicyEvaluated: skipped_on_replay(
                    ApprovalService.on_policy_evaluated,
                    "it decides whether the request waits for an approver: moves the request's state",
                )
            },
            batched=True,
        ),
    ),
    publishes=(
        RequestApproved,
        RequestApprovalRecorded,
        RequestRejected,
        RequestFailed,
        RequestStageRetrying,
    ),
)
