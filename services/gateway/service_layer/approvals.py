"""Use cases: approve and reject an environment request, with read-your-writes.

Approve and reject are decided by the approval service; intake projects the decision a
moment later. On top of the bus the gateway gives HTTP callers what they expect:

- it reads the request first (as the caller, so other teams' requests answer 404) and
  answers 409 unless it is pending approval; a request whose policy decision is still on
  its way (``submitted``) is waited for briefly, so ``create`` then ``approve`` works;
- after the decision it waits until intake shows it, so the reply is the updated request
  and an immediate ``reconcile`` finds it approved.
"""

from __future__ import annotations

from contracts.models import Actor, EnvironmentRequestView
from contracts.rpc import ApproveRequest, GetRequest, RejectRequest
from services.gateway.adapters.services import Services
from services.gateway.domain.errors import HttpError

PENDING = "pending_approval"
SUBMITTED = "submitted"


def not_pending(view: EnvironmentRequestView) -> HttpError:
    return HttpError(
        409,
        "conflict",
        f"request {view.id} is {view.status.replace('_', ' ')}, not waiting for approval",
        details={"status": view.status},
    )


async def pending_request(
    services: Services, query: GetRequest, settle_seconds: float
) -> EnvironmentRequestView:
    """The request once its policy decision is in; 409 unless it then waits for approval."""
    view = await services.wait_for_request(query, lambda v: v.status != SUBMITTED, settle_seconds)
    if view.status != PENDING:
        raise not_pending(view)
    return view


async def approve(
    services: Services, actor: Actor, request_id: str, signature: str, settle_seconds: float
) -> EnvironmentRequestView:
    """Record ``actor``'s signed approval; the request as intake shows it afterwards."""
    query = GetRequest(id=request_id, actor=actor)
    view = await pending_request(services, query, settle_seconds)
    outcome = await services.approve(
        ApproveRequest(id=request_id, actor=actor, signature=signature, generation=view.generation)
    )
    if outcome.status == "approved":
        # The quorum is met: wait for the approval itself, not just for this approver's
        # record (intake applies the two events one after the other).
        return await services.wait_for_request(query, lambda v: v.status != PENDING, settle_seconds)
    return await services.wait_for_request(
        query,
        lambda v: v.status != PENDING or any(a.approver == actor.actor for a in v.approvals),
        settle_seconds,
    )


async def reject(services: Services, command: RejectRequest, settle_seconds: float) -> EnvironmentRequestView:
    """End a request pending approval; the request as intake shows it afterwards."""
    query = GetRequest(id=command.id, actor=command.actor)
    await pending_request(services, query, settle_seconds)
    await services.reject(command)
    return await services.wait_for_request(query, lambda v: v.status != PENDING, settle_seconds)
