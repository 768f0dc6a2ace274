"""The approval gate: an approval-gated bundle is published only with its quorum of valid attestations."""

from __future__ import annotations

from contracts.attestation import verify_attestation
from contracts.events import Attestation
from services.git_publisher.domain.changes import Approval, RefusedChange

ATTESTATION_INVALID = "approval attestation invalid"
# What a bundle from a renderer that did not say how many approvals its plan requires needs.
MIN_APPROVALS = 1


def approvals_for_commit(
    *,
    secret: str | None,
    request_id: str,
    class_name: str,
    attestations: list[Attestation],
    required: int | None = None,
) -> list[Approval]:
    """The approvals to write as trailers, or :class:`RefusedChange` if the gate is not met.

    Every attestation must verify (a forged one is not ignored, it stops the publish), be
    about this request and this class, and they must come from ``required`` distinct
    approvers (the plan's ``approvals_required``; at least one, and one when unknown). The
    approval service enforces the quorum already; checking it again here means that a bundle
    whose attestations were dropped or duplicated on the way is not published as approved.
    Approvers are distinct ignoring case, as the approval service compares them.

    The signature covers the attestation's own ``generation`` (the generation at approval
    time), not the bundle's: a request is approved once and then reconciled many times.
    """
    if secret is None:
        raise RefusedChange(f"{ATTESTATION_INVALID} (no attestation key configured)")
    quorum = max(MIN_APPROVALS, required or 0)
    approvers: set[str] = set()
    for attestation in attestations:
        if attestation.request_id != request_id or attestation.class_name != class_name:
            raise RefusedChange(ATTESTATION_INVALID)
        if not verify_attestation(secret, attestation):
            raise RefusedChange(ATTESTATION_INVALID)
        approvers.add(attestation.approver.casefold())
    if not approvers:
        raise RefusedChange(f"{ATTESTATION_INVALID} (no approval)")
    if len(approvers) < quorum:
        raise RefusedChange(
            f"{ATTESTATION_INVALID} ({len(approvers)} distinct approvers, the plan requires {quorum})"
        )
    return [Approval(approver=a.approver, signature=a.signature) for a in attestations]
