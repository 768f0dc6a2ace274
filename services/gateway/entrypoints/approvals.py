"""``POST /v1/environment-requests/{id}/approve|reject``: the approvers' decisions.

Decided by the approval service; :mod:`services.gateway.service_layer.approvals` waits for
the request to be pending first and for intake to show the decision after, so the reply is
the updated request.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter

from contracts.inputs import RejectionInput
from contracts.models import Actor, EnvironmentRequestView
from contracts.rpc import RejectRequest
from services.gateway.adapters.services import Services
from services.gateway.domain.errors import Unauthenticated
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.environment_requests import PATH
from services.gateway.entrypoints.openapi import BODY_ERRORS, answers, documented
from services.gateway.entrypoints.request_inputs import read_input
from services.gateway.service_layer import approvals
from services.gateway.settings import GatewaySettings

SIGNATURE_HEADER = "X-Platform-Approval-Signature"


class ApprovalsController(Controller):
    path = PATH
    tags = ["environment requests"]
    security = SECURITY

    @post(
        "/{request_id:str}/approve",
        summary="Approve an environment request (signed)",
        guards=[requires(Action.APPROVE_REQUEST, team_scoped=True)],
        status_code=200,
        responses=answers(
            200,
            EnvironmentRequestView,
            "Approval recorded: `approved` once the class's quorum of distinct approvers is met, "
            "else still `pending_approval` with this approver in `approvals`",
            404,
            409,
        ),
    )
    async def approve(
        self,
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
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
        return await approvals.approve(
            services, actor, request_id, signature.strip(), settings.approval_settle_seconds
        )

    @post(
        "/{request_id:str}/reject",
        summary="Reject an environment request",
        guards=[requires(Action.REJECT_REQUEST, team_scoped=True)],
        status_code=200,
        operation_class=documented(body=request_bodies.REJECTION),
        responses=answers(
            200,
            EnvironmentRequestView,
            "Rejected: status `rejected`, the reason in `last_error` and the timeline",
            404,
            409,
            *BODY_ERRORS,
        ),
    )
    async def reject(
        self,
        request: Request[Any, Any, Any],
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        request_id: FromPath[str],
    ) -> EnvironmentRequestView:
        """Body `{"reason": "..."}` (1-1000 characters). Ends a request pending approval."""
        body = await read_input(request, settings, RejectionInput)
        command = RejectRequest(id=request_id, actor=actor, body=body)
        return await approvals.reject(services, command, settings.approval_settle_seconds)
