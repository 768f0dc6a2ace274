"""Use case: the dry run of an environment request, orchestrated over three services.

``POST /v1/environment-requests?dry_run=true`` asks, in order:

1. intake to validate the request (``create_request`` with ``dry_run``), which answers with
   the validated spec and the id a create with the same Idempotency-Key would get;
2. policy for the decision and plan (``plan``): class, packs, quota, approvals, budget;
3. the renderer for the manifests (``render``), when the decision allows the request.

Each step only reads, so nothing is stored and no event is published. The services stay
unaware of each other: the gateway carries the spec from one to the next.
"""

from __future__ import annotations

from contracts.models import BundlePreview
from contracts.rpc import CreateRequest, PlanRequest, RenderPreview
from libs.rpc import RpcError
from services.gateway.adapters.services import Services
from services.gateway.domain.catalog import DryRunPlan


async def dry_run(services: Services, command: CreateRequest) -> DryRunPlan:
    """The plan for ``command`` (which must have ``dry_run`` set); errors of step 1 propagate
    as they would for a create (422 naming every field, 403 for another team, 409 for a
    reused Idempotency-Key)."""
    validated = await services.validate_request(command)
    planned = await services.plan(
        PlanRequest(request_id=validated.request_id, spec=validated.spec, created_by=validated.created_by)
    )
    manifests: BundlePreview | None = None
    render_error: str | None = None
    if planned.plan is not None and planned.decision.outcome == "allowed":
        try:
            manifests = await services.render(
                RenderPreview(request_id=validated.request_id, spec=validated.spec, plan=planned.plan)
            )
        except RpcError as exc:
            # A plan the renderer refuses (a bad pack manifest, say) is part of the answer:
            # the real request would fail at the same step with the same message.
            if exc.code != "validation":
                raise
            render_error = exc.message
    return DryRunPlan(
        request_id=validated.request_id,
        placeholder_id=validated.placeholder_id,
        request=validated.spec,
        decision=planned.decision,
        plan=planned.plan,
        budget=planned.budget,
        manifests=manifests,
        render_error=render_error,
    )
