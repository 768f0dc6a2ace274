"""``/v1/policy-packs``: the catalog's policy packs, read by everyone, changed by admins (docs/policy.md)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath

from contracts.inputs import PolicyPackInput
from contracts.models import PolicyPack
from contracts.replies import PolicyPackList
from contracts.rpc import UpsertPolicyPack
from services.gateway.adapters.services import Services
from services.gateway.domain.claims import Principal
from services.gateway.domain.roles import Action
from services.gateway.entrypoints import request_bodies
from services.gateway.entrypoints.authentication import SECURITY, requires
from services.gateway.entrypoints.openapi import documented, error_responses
from services.gateway.entrypoints.request_inputs import read_input
from services.gateway.entrypoints.upserts import upsert_responses, upserted
from services.gateway.settings import GatewaySettings


class PolicyPacksController(Controller):
    path = "/v1/policy-packs"
    tags = ["policy catalog"]
    security = SECURITY

    @get("/", summary="List policy packs", guards=[requires(Action.READ)], responses=error_responses())
    async def list_packs(self, services: NamedDependency[Services]) -> PolicyPackList:
        """Every pack, sorted by name."""
        return await services.list_policy_packs()

    @get(
        "/{name:str}",
        summary="Get a policy pack",
        guards=[requires(Action.READ)],
        responses=error_responses(404),
    )
    async def get_pack(self, services: NamedDependency[Services], name: FromPath[str]) -> PolicyPack:
        return await services.get_policy_pack(name)

    @put(
        "/{name:str}",
        summary="Create or replace a policy pack",
        guards=[requires(Action.MANAGE_POLICY)],
        operation_class=documented(body=request_bodies.POLICY_PACK),
        responses=upsert_responses(PolicyPack),
    )
    async def upsert_pack(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        settings: NamedDependency[GatewaySettings],
        name: FromPath[str],
    ) -> Response[Any]:
        """Takes effect for the next request of every class using the pack; refused when it
        would clash with another pack of such a class."""
        body = await read_input(request, settings, PolicyPackInput)
        outcome = await services.upsert_policy_pack(
            UpsertPolicyPack(name=name, body=body, actor=principal.to_actor())
        )
        return upserted(outcome.pack, outcome.created)
