"""``/v1/environment-classes``: read by everyone, created or replaced by admins."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts.inputs import EnvironmentClassInput
from contracts.models import EnvironmentClass
from contracts.replies import ClassList
from contracts.rpc import UpsertClass
from services.gateway.adapters.services import Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.openapi import documented, error_responses
from services.gateway.entrypoints.request_inputs import read_input
from services.gateway.entrypoints.upserts import upsert_responses, upserted
from services.gateway.settings import GatewaySettings

REVISION_HEADER = "X-Class-Revision"


class EnvironmentClassesController(Controller):
    path = "/v1/environment-classes"
    tags = ["environment classes"]
    security = SECURITY

    @get("/", summary="List environment classes", guards=[requires(Action.READ)], responses=error_responses())
    async def list_classes(self, services: NamedDependency[Services]) -> ClassList:
        """Every class, sorted by name."""
        return await services.list_classes()

    @get(
        "/{name:str}",
        summary="Get an environment class",
        guards=[requires(Action.READ)],
        responses=error_responses(404),
    )
    async def get_class(self, services: NamedDependency[Services], name: FromPath[str]) -> EnvironmentClass:
        return await services.get_class(name)

    @put(
        "/{name:str}",
        summary="Create or replace an environment class (full replace)",
        guards=[requires(Action.UPSERT_CLASS)],
        operation_class=documented(
            body=request_bodies.ENVIRONMENT_CLASS,
            headers={
                status: {REVISION_HEADER: "The class's revision, carried by `class.upserted`"}
                for status in ("200", "201")
            },
        ),
        responses=upsert_responses(EnvironmentClass),
    )
    async def upsert_class(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        name: FromPath[str],
    ) -> Response[Any]:
        """Answers with the class as stored (every field, defaults filled in). Intake's copy
        follows through ``class.upserted`` (within a second); requests already decided keep
        the plan they got. The seed never overwrites an edited class."""
        body = await read_input(request, settings, EnvironmentClassInput)
        outcome = await services.upsert_class(UpsertClass(name=name, body=body, actor=principal.to_actor()))
        response = upserted(outcome.environment_class, outcome.created)
        response.headers[REVISION_HEADER] = str(outcome.revision)
        return response
