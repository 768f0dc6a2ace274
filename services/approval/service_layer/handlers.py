"""Approval commands and event handlers; one transaction each.

The approval service owns the decision: it verifies the client's signature, applies
separation of duties and the quorum, issues one attestation per approval and announces
``request.approval_recorded`` for each and ``request.approved`` at the quorum (or
``request.rejected``). Intake projects those facts onto the request; the gateway has
already checked the caller's role and that the request is visible to it and pending.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.attestation import sign_attestation, verify_approval
from contracts.envelope import Envelope
from contracts.events import (
    Attestation,
    RequestApprovalRecorded,
    RequestApproved,
    RequestPolicyEvaluated,
    RequestRejected,
)
from contracts.models import PolicyReason
from contracts.replies import ApprovalOutcome, RejectionOutcome
from contracts.rpc import ApproveRequest, RejectRequest
from libs.database import Pool
from libs.errors import Unauthorized, Unavailable
from libs.inbox import Tx
from libs.outbox import Outbox
from services.approval.adapters import repository
from services.approval.domain.decisions import (
    AUTOMATIC_APPROVER,
    ApprovalStatus,
    check_signature_format,
    initial_status,
)

RECORD_POLL_SECONDS = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApprovalService:
    pool: Pool
    outbox: Outbox
    # Verifies the client's approval signature; every approver's CLI holds it.
    secret: str | None = None
    # Signs the attestations: a server-side key only this service and git-publisher hold, so
    # an approver cannot forge one (settings.attestation_key: outside strict mode it may be
    # the approval secret again).
    attestation_secret: str | None = None
    # How long a command waits for the approval record of a request intake already shows
    # as pending: both consume the same policy decision, and intake may be a moment ahead.
    record_wait_seconds: float = 3.0

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
            created_by_subject=data.created_by_subject,
            requires_approval=data.requires_approval,
            approvals_required=data.approvals_required,
            status=str(status),
        )
        if opened and status is ApprovalStatus.APPROVED:
            await tx.emit(
                data.request_id,
                RequestApproved(request_id=data.request_id, automatic=True, approved_by=[AUTOMATIC_APPROVER]),
            )

    def _require_secrets(self) -> tuple[str, str]:
        if not self.secret or not self.attestation_secret:
            raise Unavailable(
                "approvals are not configured on this platform (no approval or attestation secret)"
            )
        return self.secret, self.attestation_secret

    async def _wait_for_record(self, request_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.record_wait_seconds
        while True:
            async with self.pool.connection() as conn:
                if await repository.exists(conn, request_id):
                    return
            if loop.time() >= deadline:
                raise Unavailable(
                    f"the approval service has not received the policy decision for {request_id} yet; retry"
                )
            await asyncio.sleep(RECORD_POLL_SECONDS)

    async def approve(self, command: ApproveRequest) -> ApprovalOutcome:
        """One approver's signed approval: 401 bad signature, 403 own request, 409 not pending
        or approved twice; ``request.approved`` once the quorum is met."""
        secret, attestation_secret = self._require_secrets()
        check_signature_format(command.signature)
        await self._wait_for_record(command.id)
        approver = command.actor.actor
        async with self.pool.connection() as conn, conn.transaction():
            record = await repository.get_for_update(conn, command.id)
            if record is None:  # gone since the wait: nothing sensible to approve
                raise Unavailable(f"no approval record for {command.id}; retry")
            if not verify_approval(
                secret, command.signature, request_id=command.id, actor=approver, class_name=record.class_name
            ):
                raise Unauthorized(
                    "the approval signature does not verify: it must be the HMAC-SHA256 of "
                    f"approve:{command.id}:{approver}:{record.class_name} with the approval secret"
                )
            complete = record.approve(approver, command.actor.subject)
            decided_at = utcnow()
            attestation = Attestation(
                request_id=command.id,
                generation=command.generation,
                approver=approver,
                class_name=record.class_name,
                decided_at=decided_at,
                signature=sign_attestation(
                    attestation_secret,
                    request_id=command.id,
                    generation=command.generation,
                    approver=approver,
                    class_name=record.class_name,
                    decided_at=decided_at,
                ),
            )
            await repository.add_approval(conn, attestation, command.actor.subject)
            await self.outbox.add(
                conn,
                command.id,
                RequestApprovalRecorded(
                    request_id=command.id,
                    approver=approver,
                    generation=command.generation,
                    decided_at=decided_at,
                    approvals_received=len(record.approvers),
                    approvals_required=record.quorum,
                ),
            )
            if complete:
                await repository.set_approved(conn, command.id)
                attestations = await repository.attestations(conn, command.id, record.class_name)
                await self.outbox.add(
                    conn,
                    command.id,
                    RequestApproved(
                        request_id=command.id,
                        automatic=False,
                        approvals=attestations,
                        approved_by=[a.approver for a in attestations],
                    ),
                )
        return ApprovalOutcome(
            request_id=command.id,
            approver=approver,
            approvals_received=len(record.approvers),
            approvals_required=record.quorum,
            status=str(record.status),
        )

    async def reject(self, command: RejectRequest) -> RejectionOutcome:
        """End a pending request with a reason (``request.rejected``); 409 unless pending."""
        reason = command.body.reason
        await self._wait_for_record(command.id)
        rejected_by = command.actor.actor
        async with self.pool.connection() as conn, conn.transaction():
            record = await repository.get_for_update(conn, command.id)
            if record is None:
                raise Unavailable(f"no approval record for {command.id}; retry")
            record.reject()
            await repository.set_rejected(conn, command.id, rejected_by, reason)
            await self.outbox.add(
                conn,
                command.id,
                RequestRejected(
                    request_id=command.id,
                    rejected_by=rejected_by,
                    reasons=[
                        PolicyReason(
                            code="rejected_by_approver", message=f"rejected by {rejected_by}: {reason}"
                        )
                    ],
                    reason=reason,
                ),
            )
        return RejectionOutcome(request_id=command.id, rejected_by=rejected_by, status=str(record.status))
