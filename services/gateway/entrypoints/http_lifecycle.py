"""Actions on one environment request: approve, reject, reconcile (SPEC.md "HTTP API").

Approve and reject are decided by the approval service, reconcile by intake. The gateway
adds what HTTP callers expect on top of the bus:

- it reads the request first (as the caller, so other teams' requests answer 404) and
  answers 409 unless it is pending approval; a request whose policy decision is still on
  its way (``submitted``) is waited for briefly, so ``create`` then ``approve`` works as it
  did in the original API;
- after the decision it waits until intake shows it (read-your-writes), so the reply is
  the updated request and an immediate ``reconcile`` finds it approved.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter

from contracts.models import EnvironmentRequestView
from contracts.rpc import ApproveRequest, GetRequest, ReconcileRequest, RejectRequest
from services.gateway.adapters.services import Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.errors import HttpError, Unauthenticated
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.http import (
    SECURITY,
    IfMatch,
    error_responses,
    parse_if_match,
    read_json_object,
    requires,
    runtime_of,
)

SIGNATURE_HEADER = "X-Platform-Approval-Signature"
PENDING = "pending_approval"
SUBMITTED = "submitted"


def not_pending(view: EnvironmentRequestView) -> HttpError:
    return HttpError(
        409,
        "conflict",
        f"request {view.id} is {view.status}, not {PENDING}",
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


class RequestActionsController(Controller):
    path = "/v1/environment-requests"
    tags = ["environment requests"]
    security = SECURITY

    @post(
        "/{request_id:str}/approve",
        summary="Approve an environment request (signed)",
        guards=[requires(Action.APPROVE_REQUEST, team_scoped=True)],
        status_code=200,
        responses={
            200: ResponseSpec(
                data_container=EnvironmentRequestView,
                description=(
                    "Approval recorded: `approved` once the class's quorum of distinct approvers is met, "
                    "else still `pending_approval` with this approver in `approvals`"
                ),
                generate_examples=False,
            ),
            **error_responses(401, 403, 404, 409, 503),
        },
    )
    async def approve(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
        signature: Annotated[
            str | None,
            HeaderParameter(
                name=SIGNATURE_HEADER,
                description=(
                    "Lowercase hex HMAC-SHA256 of `approve:<id>:<actor>:<class>` with the approval secret; "
                    "`actor` as `GET /v1/whoami` shows it. Never stored or echoed."
                ),
                max_length=128,
            ),
        ] = None,
    ) -> EnvironmentRequestView:
        """401 without a valid signature, 403 for the request's creator (separation of duties),
        409 unless pending approval or when this approver already approved."""
        if not signature or not signature.strip():
            raise Unauthenticated(f"missing {SIGNATURE_HEADER} header", token_presented=True)
        settle = runtime_of(request).settings.approval_settle_seconds
        actor = principal.to_actor()
        query = GetRequest(id=request_id, actor=actor)
        view = await pending_request(services, query, settle)
        outcome = await services.approve(
            ApproveRequest(
                id=request_id, actor=actor, signature=signature.strip(), generation=view.generation
            )
        )
        if outcome.status == "approved":
            # The quorum is met: wait for the approval itself, not just for this approver's
            # record (intake applies the two events one after the other).
            return await services.wait_for_request(query, lambda v: v.status != PENDING, settle)
        return await services.wait_for_request(
            query,
            lambda v: v.status != PENDING or any(a.approver == actor.actor for a in v.approvals),
            settle,
        )

    @post(
        "/{request_id:str}/reject",
        summary="Reject an environment request",
        guards=[requires(Action.REJECT_REQUEST, team_scoped=True)],
        status_code=200,
        responses={
            200: ResponseSpec(
                data_container=EnvironmentRequestView,
                description="Rejected: status `rejected`, the reason in `last_error` and the timeline",
                generate_examples=False,
            ),
            **error_responses(400, 401, 403, 404, 409, 422, 503),
        },
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
    ) -> EnvironmentRequestView:
        """Body `{"reason": "..."}` (1-1000 characters). Ends a request pending approval."""
        settings = runtime_of(request).settings
        body = await read_json_object(request, settings)
        actor = principal.to_actor()
        query = GetRequest(id=request_id, actor=actor)
        await pending_request(services, query, settings.approval_settle_seconds)
        await services.reject(RejectRequest(id=request_id, actor=actor, body=body))
        return await services.wait_for_request(
            query, lambda v: v.status != PENDING, settings.approval_settle_seconds
        )

    @post(
        "/{request_id:str}/reconcile",
        summary="Reconcile an environment request",
        guards=[requires(Action.RECONCILE_REQUEST, team_scoped=True)],
        status_code=202,
        responses={
            202: ResponseSpec(
                data_container=EnvironmentRequestView,
                description="Queued: a new generation goes through render, publish and bootstrap",
                generate_examples=False,
            ),
            **error_responses(400, 401, 403, 404, 409, 503),
        },
    )
    async def reconcile(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        request_id: FromPath[str],
        if_match: IfMatch = None,
    ) -> Response[EnvironmentRequestView]:
        """From `approved`, `ready` or `failed` only (409 while pending approval, queued or
        reconciling). Requesters may reconcile their own teams' requests in classes without
        approval; approvers and admins any."""
        view = await services.reconcile(
            ReconcileRequest(
                id=request_id, actor=principal.to_actor(), expected_version=parse_if_match(if_match)
            )
        )
        return Response(view, status_code=202)
