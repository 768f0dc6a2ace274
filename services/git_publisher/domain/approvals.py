"""The approval gate: an approval-gated bundle is published only with valid attestations."""

from __future__ import annotations

from contracts.attestation import verify_attestation
from contracts.events import Attestation
from services.git_publisher.domain.changes import Approval, RefusedChange

ATTESTATION_INVALID = "approval attestation invalid"
MIN_APPROVALS = 1


def approvals_for_commit(
    *, secret: str | None, request_id: str, class_name: str, attestations: list[Attestation]
) -> list[Approval]:
    """The approvals to write as trailers, or :class:`RefusedChange` if the gate is not met.

    Every attestation must verify (a forged one is not ignored, it stops the publish), be
    about this request and this class, and there must be at least one distinct approver.
    The signature covers the attestation's own ``generation`` (the generation at approval
    time), not the bundle's: a request is approved once and then reconciled many times.
    """
    if secret is None:
        raise RefusedChange(f"{ATTESTATION_INVALID} (no approval secret configured)")
    approvers: set[str] = set()
    for attestation in attestations:
        if attestation.request_id != request_id or attestation.class_name != class_name:
            raise RefusedChange(ATTESTATION_INVALID)
        if not verify_attestation(secret, attestation):
            raise RefusedChange(ATTESTATION_INVALID)
        approvers.add(attestation.approver)
    if len(approvers) < MIN_APPROVALS:
        raise RefusedChange(f"{ATTESTATION_INVALID} (no approval)")
    return [Approval(approver=a.approver, signature=a.signature) for a in attestations]
