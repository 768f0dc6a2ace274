"""``/v1/teams/{team}``: a team's budget and spend (requesters: their own teams); the budget set by admins."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from contracts.inputs import TeamBudgetInput
from contracts.models import TeamBudgetView
from contracts.rpc import GetTeam, SetTeamBudget
from services.gateway.adapters.services import Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.conditional import IfNoneMatch, content_tag, tagged
from services.gateway.entrypoints.openapi import BODY_ERRORS, documented, error_responses, tagged_answers
from services.gateway.entrypoints.request_inputs import read_input
from services.gateway.settings import GatewaySettings


class TeamsController(Controller):
    path = "/v1/teams"
    tags = ["teams"]
    security = SECURITY

    @get(
        "/{team:str}",
        summary="A team's budget and current spend",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=tagged_answers(TeamBudgetView, "The team", 422),
    )
    async def get_team(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        team: FromPath[str],
        if_none_match: IfNoneMatch = None,
    ) -> Response[TeamBudgetView]:
        """The monthly budget (null: none) and the estimated monthly cost of the team's active
        environments (allowed by policy, not rejected, not torn down). Requesters see only
        their own teams. The `ETag` is a hash of this answer: it changes with the spend too."""
        view = await services.get_team(GetTeam(team=team, actor=principal.to_actor()))
        return tagged(view, content_tag(view), if_none_match)

    @put(
        "/{team:str}/budget",
        summary="Set a team's monthly budget",
        guards=[requires(Action.SET_TEAM_BUDGET)],
        operation_class=documented(body=request_bodies.TEAM_BUDGET),
        responses={
            200: ResponseSpec(data_container=TeamBudgetView, description="The team", generate_examples=False),
            **error_responses(409, *BODY_ERRORS),
        },
    )
    async def set_budget(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        team: FromPath[str],
        catalog_if_match: NamedDependency[str | None],
    ) -> Response[TeamBudgetView]:
        """Applies to the next request evaluated; environments already allowed keep running.
        With `If-Match` (the team's `ETag`), only if the team still reads as it did (409 else)."""
        body = await read_input(request, settings, TeamBudgetInput)
        view = await services.set_team_budget(
            SetTeamBudget(team=team, body=body, actor=principal.to_actor(), if_match=catalog_if_match)
        )
        # The team's tag now, as its GET would give it: the If-Match of the next PUT.
        return Response(view, headers={"ETag": content_tag(view)})
