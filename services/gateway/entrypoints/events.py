"""``GET /v1/events``: the timelines of every request the caller may see, oldest first.

What ``platformctl events tail`` polls: it goes through intake's timeline, so it needs no
NATS credentials and honours team scope like every other read.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from contracts.models import Actor
from contracts.replies import EventFeed
from contracts.rpc import ListAllEvents
from services.gateway.adapters.services import Services
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.openapi import error_responses


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = SECURITY

    @get(
        "/",
        summary="Timeline entries of all visible requests",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(422, 502),
    )
    async def list_events(
        self,
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        after: Annotated[
            str | None,
            # Checked by intake, which answers 422 for a cursor that is not one, as it always has.
            QueryParameter(description="`next_cursor` of the previous page", max_length=41),
        ] = None,
        request_id: Annotated[str | None, QueryParameter(description="Only this request's entries")] = None,
        limit: Annotated[
            int, QueryParameter(description="Page size (1-500); a page also stops at what one reply carries")
        ] = 100,
    ) -> EventFeed:
        """Oldest first. `next_cursor` is always set: poll with `after=<next_cursor>` to follow
        new entries (what `platformctl events tail` does). A page holds at most `limit` entries
        and is cut short when they would not fit in one reply; the rest follow `next_cursor`."""
        return await services.list_all_events(
            ListAllEvents(actor=actor, after=after, request_id=request_id, limit=limit)
        )
