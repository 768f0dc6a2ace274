"""Event feed, dead letters and the platform's status: what ``platformctl events
tail|dlq|replay`` use, and what an operator reads when something waits.

- ``GET /v1/events``: the timelines of every request the caller may see, oldest first,
  resumable with a cursor. ``events tail`` polls it; it goes through intake's timeline,
  so it needs no NATS credentials and honours team scope like every other read.
- ``GET /v1/dead-letters`` and ``POST /v1/dead-letters/{service}/{id}/replay`` (admins):
  every service keeps its own dead letters (:mod:`libs.dead_letters`); the list asks each
  of them and names any that did not answer instead of failing the whole listing.
- ``GET /v1/status`` (any role): every dependency with its state, last error and since
  when (:mod:`services.gateway.service_layer.health`); never part of ``/readyz``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, QueryParameter

from contracts.rpc import ListAllEvents, ListDeadLetters, ReplayDeadLetter
from libs.errors import Unavailable
from services.gateway.adapters.services import BACKEND_SERVICES, Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.errors import BadRequest
from services.gateway.domain.resources import DeadLetter, DeadLetterPage, EventFeed, PlatformStatus
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.http import SECURITY, error_responses, requires, runtime_of


def _service_name(service: str) -> str:
    """``git-publisher`` or ``git_publisher`` -> ``git_publisher``; 400 for anything else."""
    normalized = service.replace("-", "_")
    if normalized not in BACKEND_SERVICES:
        raise BadRequest(
            f"unknown service {service!r}",
            details=[{"field": "service", "message": f"must be one of {', '.join(BACKEND_SERVICES)}"}],
        )
    return normalized


@get(
    "/v1/status",
    tags=["operations"],
    summary="The platform's dependencies and their state",
    guards=[requires(Action.READ)],
    security=SECURITY,
    responses=error_responses(401, 403, 503),
)
async def status(request: Request[Any, Any, Any]) -> PlatformStatus:
    """Every dependency with its state (`up`, `down`, `unknown`), last error and since when:
    the identity provider and each backend as the gateway sees them (`reported_by:
    gateway`), then what each backend checks itself (the git remote, cluster regions).
    `degraded` is a report, not an outage: requests are still taken, and work that needs a
    dependency that is down waits for it. Errors never name hosts, URLs or secrets."""
    runtime = runtime_of(request)
    runtime.require_services()
    return await runtime.health.status()


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]
    security = SECURITY

    @get(
        "/",
        summary="Timeline entries of all visible requests",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(400, 401, 403, 422, 503),
    )
    async def list_events(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        after: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=41)
        ] = None,
        request_id: Annotated[str | None, QueryParameter(description="Only this request's entries")] = None,
        limit: Annotated[int, QueryParameter(description="Page size (1-500)")] = 100,
    ) -> EventFeed:
        """Oldest first. `next_cursor` is always set: poll with `after=<next_cursor>` to follow
        new entries (what `platformctl events tail` does)."""
        return await services.list_all_events(
            ListAllEvents(actor=principal.to_actor(), after=after, request_id=request_id, limit=limit)
        )


class DeadLettersController(Controller):
    path = "/v1/dead-letters"
    tags = ["operations"]
    security = SECURITY
    guards = [requires(Action.OPERATE_EVENTS)]

    @get("/", summary="Dead letters of every service", responses=error_responses(400, 401, 403, 422, 503))
    async def list_dead_letters(
        self,
        services: NamedDependency[Services],
        service: Annotated[str | None, QueryParameter(description="Only this service's dead letters")] = None,
        include_replayed: Annotated[bool, QueryParameter(description="Also those already replayed")] = False,
        limit: Annotated[int, QueryParameter(description="Per service (1-500)")] = 100,
    ) -> DeadLetterPage:
        """Newest first, without payloads. Services that do not answer are listed in
        `unavailable` (a single requested service that does not answer is a 503)."""
        names = [_service_name(service)] if service else list(BACKEND_SERVICES)
        query = ListDeadLetters(include_replayed=include_replayed, limit=limit)
        pages = await asyncio.gather(
            *(services.list_dead_letters(name, query) for name in names), return_exceptions=True
        )
        items: list[DeadLetter] = []
        unavailable: list[str] = []
        for name, page in zip(names, pages, strict=True):
            if isinstance(page, Unavailable) and service is None:
                unavailable.append(name)
                continue
            if isinstance(page, BaseException):
                raise page
            items.extend(msgspec.structs.replace(item, service=name) for item in page.items)
        items.sort(key=lambda item: item.created_at, reverse=True)
        return DeadLetterPage(items=items, unavailable=unavailable)

    @post(
        "/{service:str}/{dead_letter_id:int}/replay",
        summary="Replay a dead letter",
        status_code=202,
        responses={
            202: ResponseSpec(
                data_container=DeadLetter, description="Re-delivered to its consumer", generate_examples=False
            ),
            **error_responses(400, 401, 403, 404, 409, 503),
        },
    )
    async def replay(
        self,
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        service: FromPath[str],
        dead_letter_id: FromPath[int],
    ) -> Response[DeadLetter]:
        """The event is delivered again to the consumer that gave up on it (others ignore the
        copy); 409 if it was replayed already. The dead letter is kept, marked `replayed_at`."""
        name = _service_name(service)
        replayed = await services.replay_dead_letter(
            name, ReplayDeadLetter(id=dead_letter_id, replayed_by=principal.actor)
        )
        return Response(msgspec.structs.replace(replayed, service=name), status_code=202)
