"""``/v1/consumers/{service}/replay`` (admins): what ``platformctl events replay --consumer`` uses.

The owning service reads the stream and hands the messages to its own durables
(:mod:`libs.replay`); the gateway checks the caller and the service's name and forwards.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from contracts.inputs import ConsumerReplayInput
from contracts.models import Actor
from contracts.replies import ReplayReport
from contracts.rpc import ReplayEvents
from services.gateway.adapters.services import Services
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.dead_letters import service_name
from services.gateway.entrypoints.openapi import BODY_ERRORS, documented, error_responses
from services.gateway.entrypoints.request_inputs import read_input
from services.gateway.settings import GatewaySettings


class ConsumersController(Controller):
    path = "/v1/consumers"
    tags = ["operations"]
    security = SECURITY

    @post(
        "/{service:str}/replay",
        summary="Replay the stream to a service's consumers",
        guards=[requires(Action.OPERATE_EVENTS)],
        operation_class=documented(body=request_bodies.CONSUMER_REPLAY),
        responses={
            200: ResponseSpec(
                data_container=ReplayReport,
                description="What was replayed, per event type",
                generate_examples=False,
            ),
            **error_responses(*BODY_ERRORS),
        },
    )
    async def replay(
        self,
        request: Request[Any, Any, Any],
        actor: NamedDependency[Actor],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        service: FromPath[str],
    ) -> Response[ReplayReport]:
        """The stream's messages from `from_sequence` (or `from_time`) that the service's durable
        consumers take are handed to them again: handlers whose effects are idempotent run
        again (a re-render gives the same bundle, an unchanged tree makes no commit, an apply
        changes nothing) and the events they would stage are not published; the others are
        skipped and counted. One call covers a bounded page: continue at `next_sequence` with
        the same `to_sequence` until it is null. `dry_run` only counts."""
        name = service_name(service)
        body = await read_input(request, settings, ConsumerReplayInput)
        report = await services.replay_events(name, ReplayEvents(body=body, replayed_by=actor.actor))
        return Response(report, status_code=200)
