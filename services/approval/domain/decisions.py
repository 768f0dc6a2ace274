"""The approval rules (pure): who may approve, when the quorum is met, what a rejection needs.

- Separation of duties: nobody approves a request they created.
- Quorum: ``approvals_required`` distinct approvers (at least one); approving twice is a
  conflict, not a second vote.
- "The same person" (:func:`same_person`): the same subject (the token's ``sub``), or the
  same actor ignoring case. The actor is the email claim falling back to the subject, so two
  tokens of one person may carry different actors; the subject is what stays.
- Only a pending record can be approved or rejected; the first rejection ends it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from contracts.events import RequestPolicyEvaluated
from libs.errors import Conflict, Forbidden, Unauthorized

AUTOMATIC_APPROVER = "system:auto-approval"
# Lowercase hex HMAC-SHA256: anything else cannot be a signature, so it is refused before
# any comparison (and never echoed back).
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


def initial_status(decision: RequestPolicyEvaluated) -> ApprovalStatus | None:
    """None: nothing to approve (policy rejected the request)."""
    if decision.outcome != "allowed":
        return None
    return ApprovalStatus.PENDING if decision.requires_approval else ApprovalStatus.APPROVED


def check_signature_format(signature: str) -> None:
    if _SIGNATURE.fullmatch(signature) is None:
        raise Unauthorized(
            "X-Platform-Approval-Signature must be the lowercase hex HMAC-SHA256 of approve:<id>:<actor>:<class>"
        )


def same_person(actor: str, subject: str | None, other_actor: str, other_subject: str | None) -> bool:
    """Whether two (actor, subject) pairs name one person.

    Subjects decide when both are known: they are stable per account, whichever claims a
    token carries. Actors are compared too, case-insensitively (e-mail addresses), because a
    subject may be unknown (events and records from before subjects were kept) and because a
    token without a subject claim uses the actor as its subject.
    """
    if subject and other_subject and subject == other_subject:
        return True
    return actor.casefold() == other_actor.casefold()


@dataclass
class ApprovalRecord:
    """What one request needs before it may proceed, and the approvals it has."""

    request_id: str
    class_name: str
    created_by: str
    approvals_required: int
    status: ApprovalStatus
    approvers: list[str] = field(default_factory=list)
    # None when unknown (a decision from a policy that did not pass it on).
    created_by_subject: str | None = None
    # The subject of each of ``approvers``, same order; None where unknown.
    approver_subjects: list[str | None] = field(default_factory=list)

    @property
    def quorum(self) -> int:
        return max(1, self.approvals_required)

    def approve(self, approver: str, subject: str | None = None) -> bool:
        """Record the approval of ``approver`` (with the token's ``subject``); True when it
        completes the quorum."""
        if same_person(approver, subject, self.created_by, self.created_by_subject):
            raise Forbidden("you created this request; someone else must approve it (separation of duties)")
        if self.status is not ApprovalStatus.PENDING:
            raise Conflict(f"request {self.request_id} is already {self.status}; nothing to approve")
        subjects = self.approver_subjects + [None] * (len(self.approvers) - len(self.approver_subjects))
        if any(
            same_person(approver, subject, other, other_subject)
            for other, other_subject in zip(self.approvers, subjects, strict=True)
        ):
            raise Conflict(
                f"you already approved request {self.request_id} "
                f"({len(self.approvers)} of {self.quorum} approvals)"
            )
        self.approvers.append(approver)
        self.approver_subjects = [*subjects, subject]
        if len(self.approvers) >= self.quorum:
            self.status = ApprovalStatus.APPROVED
            return True
        return False

    def reject(self) -> None:
        if self.status is not ApprovalStatus.PENDING:
            raise Conflict(f"request {self.request_id} is already {self.status}; nothing to reject")
        self.status = ApprovalStatus.REJECTED
