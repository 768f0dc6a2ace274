"""Approval commands and event handlers; one transaction each."""

from __future__ import annotations

from dataclasses import dataclass

from contracts.envelope import Envelope
from contracts.events import RequestApproved, RequestPolicyEvaluated
from libs.database import Pool
from libs.inbox import Tx
from libs.outbox import Outbox
from services.approval.adapters import repository
from services.approval.domain.decisions import AUTOMATIC_APPROVER, ApprovalStatus, initial_status


@dataclass
class ApprovalService:
    pool: Pool
    outbox: Outbox

    async def on_policy_evaluated(self, envelope: Envelope, data: RequestPolicyEvaluated, tx: Tx) -> None:
        """Open the approval record; classes without approval are approved on the spot."""
        status = initial_status(data)
        if status is None:
            return
        opened = await repository.open_request(
            tx.conn,
            request_id=data.request_id,
            class_name=data.class_name,
            created_by=data.created_by,
            requires_approval=data.requires_approval,
            approvals_required=data.approvals_required,
            status=str(status),
        )
        if opened and status is ApprovalStatus.APPROVED:
            await tx.emit(
                data.request_id,
                RequestApproved(request_id=data.request_id, automatic=True, approved_by=[AUTOMATIC_APPROVER]),
            )
