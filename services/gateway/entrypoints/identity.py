"""``GET /v1/whoami``: the caller as the server resolved it from the bearer token."""

from __future__ import annotations

from litestar.di import NamedDependency

from services.gateway.domain.claims import Principal
from services.gateway.domain.resources import WhoAmI
from services.gateway.entrypoints.openapi import any_role_get


@any_role_get("/v1/whoami", tag="identity", summary="The caller as resolved by the server")
async def whoami(principal: NamedDependency[Principal]) -> WhoAmI:
    """The actor, role, teams and subject the server derived from the bearer token."""
    return WhoAmI(
        actor=principal.actor, role=principal.role.value, teams=principal.teams, subject=principal.subject
    )
