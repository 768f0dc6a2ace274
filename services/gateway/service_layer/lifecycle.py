"""Use cases: reconcile, extend and delete an environment request.

Each is one call to intake, which owns the request and decides (the transition, the
requester's team, the class's maximum TTL); ``expected_version`` comes from the caller's
``If-Match`` and makes the change conditional on the version it last read (409 when the
request changed since).
"""

from __future__ import annotations

from contracts.inputs import ExtensionInput
from contracts.models import Actor, EnvironmentRequestView
from contracts.rpc import DeleteRequest, ExtendRequest, ReconcileRequest
from services.gateway.adapters.services import Services


async def reconcile(
    services: Services, actor: Actor, request_id: str, expected_version: int | None
) -> EnvironmentRequestView:
    """A new generation through render, publish and bootstrap."""
    return await services.reconcile(
        ReconcileRequest(id=request_id, actor=actor, expected_version=expected_version)
    )


async def extend(
    services: Services, actor: Actor, request_id: str, body: ExtensionInput, expected_version: int | None
) -> EnvironmentRequestView:
    """A new TTL, counted from now once the environment exists."""
    return await services.extend(
        ExtendRequest(id=request_id, actor=actor, body=body, expected_version=expected_version)
    )


async def delete(
    services: Services, actor: Actor, request_id: str, expected_version: int | None
) -> EnvironmentRequestView:
    """Teardown: status ``deleting``, then ``deleted``."""
    return await services.delete(DeleteRequest(id=request_id, actor=actor, expected_version=expected_version))
