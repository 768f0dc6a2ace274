"""Use cases: reconcile, extend and delete an environment request.

Each is one call to intake, which owns the request and decides (the transition, the
requester's team, the class's maximum TTL); ``expected_version`` comes from the caller's
``If-Match`` and makes the change conditional on the version it last read (409 when the
request changed since).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.inputs import ExtensionInput
from contracts.models import Actor, EnvironmentRequestView
from contracts.rpc import DeleteRequest, ExtendRequest, ReconcileRequest
from services.gateway.adapters.services import Services


@dataclass(frozen=True)
class RequestChange:
    """Who changes which request, and the version they last read (``None``: unconditional)."""

    actor: Actor
    request_id: str
    expected_version: int | None


async def reconcile(services: Services, change: RequestChange) -> EnvironmentRequestView:
    """A new generation through render, publish and bootstrap."""
    return await services.reconcile(
        ReconcileRequest(id=change.request_id, actor=change.actor, expected_version=change.expected_version)
    )


async def extend(services: Services, change: RequestChange, body: ExtensionInput) -> EnvironmentRequestView:
    """A new TTL, counted from now once the environment exists."""
    return await services.extend(
        ExtendRequest(
            id=change.request_id, actor=change.actor, body=body, expected_version=change.expected_version
        )
    )


async def delete(services: Services, change: RequestChange) -> EnvironmentRequestView:
    """Teardown: status ``deleting``, then ``deleted``."""
    return await services.delete(
        DeleteRequest(id=change.request_id, actor=change.actor, expected_version=change.expected_version)
    )
