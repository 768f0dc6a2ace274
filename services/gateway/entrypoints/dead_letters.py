"""``/v1/dead-letters`` (admins): what ``platformctl events dlq|replay`` use
(:mod:`services.gateway.service_layer.dead_letters`)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from contracts.models import Actor
from contracts.rpc import ListDeadLetters, ReplayDeadLetter
from services.gateway.adapters.services import BACKEND_SERVICES, Services
from services.gateway.domain.errors import BadRequest
from services.gateway.domain.resources import DeadLetter, DeadLetterPage
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.openapi import answers, error_responses
from services.gateway.service_layer import dead_letters


def service_name(service: str) -> str:
    """``git-publisher`` or ``git_publisher`` -> ``git_publisher``; 400 for anything else."""
    normalized = service.replace("-", "_")
    if normalized not in BACKEND_SERVICES:
        raise BadRequest(
            f"unknown service {service!r}",
            details=[{"field": "service", "message": f"must be one of {', '.join(BACKEND_SERVICES)}"}],
        )
    return normalized


class DeadLettersController(Controller):
    path = "/v1/dead-letters"
    tags = ["operations"]
    security = SECURITY

    # Guards sit on the routes, never on the controller: a controller's guards also run on
    # Litestar's automatic OPTIONS handler, which is public on every path.
    @get(
        "/",
        summary="Dead letters of every service",
        guards=[requires(Action.OPERATE_EVENTS)],
        responses=error_responses(422),
    )
    async def list_dead_letters(
        self,
        services: NamedDependency[Services],
        service: Annotated[str | None, QueryParameter(description="Only this service's dead letters")] = None,
        include_replayed: Annotated[bool, QueryParameter(description="Also those already replayed")] = False,
        limit: Annotated[int, QueryParameter(description="Per service (1-500)")] = 100,
    ) -> DeadLetterPage:
        """Newest first, without payloads. Services that do not answer are listed in
        `unavailable` (a single requested service that does not answer is a 503)."""
        query = ListDeadLetters(include_replayed=include_replayed, limit=limit)
        return await dead_letters.list_dead_letters(
            services, service_name(service) if service else None, query
        )

    @post(
        "/{service:str}/{dead_letter_id:int}/replay",
        summary="Replay a dead letter",
        guards=[requires(Action.OPERATE_EVENTS)],
        status_code=202,
        responses=answers(202, DeadLetter, "Re-delivered to its consumer", 404, 409),
    )
    async def replay(
        self,
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        service: FromPath[str],
        dead_letter_id: FromPath[int],
    ) -> Response[DeadLetter]:
        """The event is delivered again to the consumer that gave up on it (others ignore the
        copy); 409 if it was replayed already. The dead letter is kept, marked `replayed_at`."""
        command = ReplayDeadLetter(id=dead_letter_id, replayed_by=actor.actor)
        replayed = await dead_letters.replay(services, service_name(service), command)
        return Response(replayed, status_code=202)
