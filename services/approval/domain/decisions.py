"""What the approval service does with a policy decision (pure rules)."""

from __future__ import annotations

from enum import StrEnum

from contracts.events import RequestPolicyEvaluated

AUTOMATIC_APPROVER = "system:auto-approval"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def initial_status(decision: RequestPolicyEvaluated) -> ApprovalStatus | None:
    """None: nothing to approve (policy rejected the request)."""
    if decision.outcome != "allowed":
        return None
    return ApprovalStatus.PENDING if decision.requires_approval else ApprovalStatus.APPROVED
