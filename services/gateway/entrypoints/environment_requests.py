"""``/v1/environment-requests``: create (or dry-run), list, read, follow, reconcile, extend, delete.

Approve and reject live in :mod:`.approvals`. Each handler turns the HTTP request into a
``contracts.rpc`` message or a use case of :mod:`services.gateway.service_layer` and
returns the reply.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import pydantic
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, HeaderParameter, QueryParameter

from contracts.inputs import EnvironmentRequestInput, ExtensionInput
from contracts.models import Actor, EnvironmentRequestView
from contracts.replies import RequestPage, Timeline
from contracts.rpc import CreateRequest, GetRequest, ListRequestEvents, ListRequests
from libs.errors import validation_failed
from services.gateway.adapters.services import Services
from services.gateway.domain.catalog import DryRunPlan
from services.gateway.domain.rate_limits import RateLimits
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.conditional import IfNoneMatch, tagged, version_tag
from services.gateway.entrypoints.openapi import (
    BODY_ERRORS,
    answers,
    documented,
    error_responses,
    tagged_answers,
)
from services.gateway.entrypoints.request_inputs import read_input, read_json_object
from services.gateway.service_layer import lifecycle
from services.gateway.service_layer.dry_run import dry_run
from services.gateway.service_layer.lifecycle import RequestChange
from services.gateway.settings import GatewaySettings

IDEMPOTENCY_KEY_MAX_LENGTH = 200
PATH = "/v1/environment-requests"


class EnvironmentRequestsController(Controller):
    path = PATH
    tags = ["environment requests"]
    security = SECURITY

    @post(
        "/",
        summary="Create an environment request (or, with dry_run=true, plan it)",
        guards=[requires(Action.CREATE_REQUEST, team_scoped=True)],
        status_code=201,
        operation_class=documented(
            body=request_bodies.ENVIRONMENT_REQUEST,
            headers={
                "201": {"Location": "The new request's URL"},
                "200": {"Idempotent-Replayed": "`true` on an idempotent replay; absent on a dry run"},
            },
        ),
        responses={
            **answers(201, EnvironmentRequestView, "Created", 409, *BODY_ERRORS),
            200: ResponseSpec(
                data_container=cast("type[Any]", EnvironmentRequestView | DryRunPlan),
                description=(
                    "With `dry_run=true`, the plan (`dry_run: true`; nothing stored). Otherwise an "
                    "idempotent replay (header `Idempotent-Replayed: true`): the request first created "
                    "with this Idempotency-Key"
                ),
                generate_examples=False,
            ),
        },
    )
    async def create_request(
        self,
        request: Request[Any, Any, Any],
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        rate_limits: NamedDependency[RateLimits],
        dry_run_only: Annotated[
            bool,
            QueryParameter(
                name="dry_run", description="Return the plan (decision, quota, packs, cost) and store nothing"
            ),
        ] = False,
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
                description="Retries with the same key (and body) return the first request, not a new one",
            ),
        ] = None,
    ) -> Response[Any]:
        """Validate and store a new request; its status then moves on asynchronously."""
        body = await read_json_object(request, settings)
        try:
            request_input = EnvironmentRequestInput.model_validate(body)
        except pydantic.ValidationError as exc:
            await services.refuse_request(body, actor, validation_failed(exc))
        command = CreateRequest(body=request_input, actor=actor, idempotency_key=idempotency_key or None)
        if dry_run_only:
            return Response(await dry_run(services, command), status_code=200)
        rate_limits.count_create(actor, request_input.team)
        try:
            outcome = await services.create_request(command)
        except Exception:  # refused (or not answered): no request, nothing to count
            rate_limits.give_back_create(actor, request_input.team)
            raise
        if not outcome.created:
            rate_limits.give_back_create(actor, request_input.team)
        if outcome.created:
            return Response(
                outcome.request, status_code=201, headers={"Location": f"{PATH}/{outcome.request.id}"}
            )
        return Response(outcome.request, status_code=200, headers={"Idempotent-Replayed": "true"})

    @get(
        "/",
        summary="List environment requests",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(422),
    )
    async def list_requests(
        self,
        *,
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        team: Annotated[str | None, QueryParameter(description="Only this team's requests")] = None,
        status: Annotated[str | None, QueryParameter(description="Only requests in this status")] = None,
        class_name: Annotated[str | None, QueryParameter(name="class", description="Only this class")] = None,
        cursor: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page")
        ] = None,
        limit: Annotated[int, QueryParameter(description="Page size (1-200)")] = 50,
    ) -> RequestPage:
        """Newest first, one page at a time; callers with a teams claim see only their teams."""
        return await services.list_requests(
            ListRequests(
                actor=actor,
                team=team,
                status=status,
                class_name=class_name,
                cursor=cursor,
                limit=limit,
            )
        )

    @get(
        "/{request_id:str}",
        summary="Get an environment request",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=tagged_answers(EnvironmentRequestView, "The request; `ETag` is its `version`", 404),
    )
    async def get_request(
        self,
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        request_id: FromPath[str],
        if_none_match: IfNoneMatch = None,
    ) -> Response[EnvironmentRequestView]:
        """`ETag: "<version>"`, the value `If-Match` takes on `PATCH`, `DELETE` and `reconcile`."""
        view = await services.get_request(GetRequest(id=request_id, actor=actor))
        return tagged(view, version_tag(view.version), if_none_match)

    @get(
        "/{request_id:str}/events",
        summary="The request's timeline",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(404, 422, 502),
    )
    async def list_events(
        self,
        *,
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        request_id: FromPath[str],
        after: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=19)
        ] = None,
        limit: Annotated[int, QueryParameter(description="Page size (1-500)")] = 100,
    ) -> Timeline:
        """Every event about the request in order, including late or duplicate ones that did not
        change its status (``applied: false``), a page at a time: at most `limit` entries and
        never more than one reply carries; `next_cursor` (null on the last page) passed as
        `after` gets the next. Attestation signatures are shown to approvers and admins only."""
        return await services.list_events(
            ListRequestEvents(id=request_id, actor=actor, after=after, limit=limit)
        )

    @post(
        "/{request_id:str}/reconcile",
        summary="Reconcile an environment request",
        guards=[requires(Action.RECONCILE_REQUEST, team_scoped=True)],
        status_code=202,
        responses=answers(
            202,
            EnvironmentRequestView,
            "Queued: a new generation goes through render, publish and bootstrap",
            404,
            409,
        ),
    )
    async def reconcile(
        self,
        services: NamedDependency[Services],
        change: NamedDependency[RequestChange],
        rate_limits: NamedDependency[RateLimits],
    ) -> Response[EnvironmentRequestView]:
        """From `approved`, `ready` or `failed` only (409 while pending approval, queued or
        reconciling). Requesters may reconcile their own teams' requests in classes without
        approval; approvers and admins any."""
        rate_limits.count_generation(change.actor)
        try:
            return Response(await lifecycle.reconcile(services, change), status_code=202)
        except Exception:  # refused (409 while reconciling, 404, ...): no new generation
            rate_limits.give_back_generation(change.actor)
            raise

    @patch(
        "/{request_id:str}",
        summary="Extend an environment request (change ttl_hours)",
        guards=[requires(Action.EXTEND_REQUEST, team_scoped=True)],
        operation_class=documented(body=request_bodies.EXTENSION),
        responses=error_responses(404, 409, *BODY_ERRORS),
    )
    async def extend_request(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        change: NamedDependency[RequestChange],
    ) -> EnvironmentRequestView:
        """Body `{"ttl_hours": N}` with 1 <= N <= the class's max_ttl_hours. Once the environment
        exists, `expires_at` becomes now + N hours. Requesters: own teams only."""
        body = await read_input(request, settings, ExtensionInput)
        return await lifecycle.extend(services, change, body)

    @delete(
        "/{request_id:str}",
        summary="Delete an environment request (tear it down)",
        guards=[requires(Action.DELETE_REQUEST, team_scoped=True)],
        status_code=202,
        responses=answers(
            202, EnvironmentRequestView, "Teardown requested: status `deleting`, then `deleted`", 404, 409
        ),
    )
    async def delete_request(
        self, services: NamedDependency[Services], change: NamedDependency[RequestChange]
    ) -> Response[EnvironmentRequestView]:
        """Moves the request to `deleting` and asks for the teardown (manifests removed from the
        GitOps repository, namespace deleted); it ends `deleted`. 409 when already being torn
        down. Requesters: own teams only."""
        return Response(await lifecycle.delete(services, change), status_code=202)
