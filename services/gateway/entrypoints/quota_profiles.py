"""``/v1/quota-profiles``: the catalog's quota profiles, read by everyone, changed by admins."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts.inputs import QuotaProfileInput
from contracts.models import QuotaProfile
from contracts.replies import QuotaProfileList
from contracts.rpc import UpsertQuotaProfile
from services.gateway.adapters.services import Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.openapi import documented, error_responses
from services.gateway.entrypoints.request_inputs import read_input
from services.gateway.entrypoints.upserts import upsert_responses, upserted
from services.gateway.settings import GatewaySettings


class QuotaProfilesController(Controller):
    path = "/v1/quota-profiles"
    tags = ["policy catalog"]
    security = SECURITY

    @get("/", summary="List quota profiles", guards=[requires(Action.READ)], responses=error_responses())
    async def list_profiles(self, services: NamedDependency[Services]) -> QuotaProfileList:
        """Every profile, sorted by name."""
        return await services.list_quota_profiles()

    @get(
        "/{name:str}",
        summary="Get a quota profile",
        guards=[requires(Action.READ)],
        responses=error_responses(404),
    )
    async def get_profile(self, services: NamedDependency[Services], name: FromPath[str]) -> QuotaProfile:
        return await services.get_quota_profile(name)

    @put(
        "/{name:str}",
        summary="Create or replace a quota profile",
        guards=[requires(Action.MANAGE_POLICY)],
        operation_class=documented(body=request_bodies.QUOTA_PROFILE),
        responses=upsert_responses(QuotaProfile),
    )
    async def upsert_profile(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        name: FromPath[str],
    ) -> Response[Any]:
        """Takes effect for the next request of every class using the profile."""
        body = await read_input(request, settings, QuotaProfileInput)
        outcome = await services.upsert_quota_profile(
            UpsertQuotaProfile(name=name, body=body, actor=principal.to_actor())
        )
        return upserted(outcome.profile, outcome.created)
