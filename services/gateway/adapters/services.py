"""The services behind the gateway, reached by request/reply over NATS (DESIGN.md section 3).

One typed method per verb: the request is a ``contracts.rpc`` message, the reply is decoded
into the gateway's resource types. Error replies surface as :class:`libs.rpc.RpcError`
(or :class:`libs.errors.Unavailable` when nobody answers) and are mapped to HTTP statuses
by the HTTP entrypoint.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient

from contracts.models import EnvironmentClass, EnvironmentRequestView
from contracts.rpc import CreateRequest, GetClass, GetRequest, ListClasses, ListRequests, Ping
from libs.rpc import RpcClient, RpcError
from services.gateway.domain.resources import ClassList, CreateOutcome, PingReply, RequestPage, Timeline

T = TypeVar("T")

# Every backend service answers ``ping``; the gateway is ready when all of them are.
BACKEND_SERVICES = ("intake", "policy", "approval", "renderer", "git_publisher", "cluster_bootstrapper")


class ServiceNotReady(Exception):
    """A service answered ``ping`` but reported itself not ready (named in /readyz by type)."""


class Services:
    """Typed calls to the platform services."""

    def __init__(self, nc: NatsClient, prefix: str, timeout: float) -> None:
        self.nc = nc
        self.rpc = RpcClient(nc, prefix, timeout)

    async def _call(
        self, service: str, verb: str, message: Any, reply_type: type[T], reply_timeout: float | None = None
    ) -> T:
        data = await self.rpc.call(service, verb, message, timeout=reply_timeout)
        try:
            return msgspec.convert(data, reply_type)
        except msgspec.ValidationError as exc:
            # A reply the gateway cannot represent is a bug on one side; the client gets a
            # generic 500 and the log names the verb, not the payload.
            raise RpcError("internal", f"the {service} service sent an unexpected {verb} reply") from exc

    # -- intake ----------------------------------------------------------------------------

    async def create_request(self, command: CreateRequest) -> CreateOutcome:
        return await self._call("intake", "create_request", command, CreateOutcome)

    async def create_request_dry_run(self, command: CreateRequest) -> dict[str, Any]:
        """The plan for a request that is not stored; its shape belongs to intake and policy."""
        return await self._call("intake", "create_request", command, dict[str, Any])

    async def get_request(self, query: GetRequest) -> EnvironmentRequestView:
        return await self._call("intake", "get_request", query, EnvironmentRequestView)

    async def list_requests(self, query: ListRequests) -> RequestPage:
        return await self._call("intake", "list_requests", query, RequestPage)

    async def list_events(self, query: GetRequest) -> Timeline:
        return await self._call("intake", "list_events", query, Timeline)

    # -- policy ----------------------------------------------------------------------------

    async def list_classes(self) -> ClassList:
        reply = await self._call("policy", "list_classes", ListClasses(), ClassList)
        return ClassList(items=sorted(reply.items, key=lambda item: item.name))

    async def get_class(self, name: str) -> EnvironmentClass:
        return await self._call("policy", "get_class", GetClass(name=name), EnvironmentClass)

    # -- readiness -------------------------------------------------------------------------

    async def ping(self, service: str, reply_timeout: float) -> None:
        """Succeed when ``service`` answers and reports itself ready."""
        reply = await self._call(service, "ping", Ping(), PingReply, reply_timeout=reply_timeout)
        if not reply.ready:
            raise ServiceNotReady(service)

    async def check_nats(self) -> None:
        if not self.nc.is_connected:
            raise ConnectionError("not connected")
