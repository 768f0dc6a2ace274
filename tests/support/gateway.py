"""The gateway on a real socket, in front of stand-ins for its NATS peers or of the real services.

The stand-ins are transport peers, not mocks of the gateway: they register on NATS
through the kit's :class:`libs.rpc.RpcServer`, which decodes every incoming message into
the verb's ``contracts.rpc`` type (a wrong shape from the gateway is a validation error
reply, as with the real service), and they reply with the contracts' models. What the
gateway promises its callers is checked against both (:func:`gateway_stack` and
:func:`gateway_with_services`), so a stand-in that drifts from the real intake shows up
as a failing test; the whole stack is covered by the e2e tests.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import nats
from litestar import Litestar
from nats.aio.client import Client as NatsClient

from contracts.catalog import SERVICES
from contracts.models import EnvironmentClass, EnvironmentRequestView, TimelineEntry
from contracts.rpc import (
    CREATE_REQUEST,
    GET_CLASS,
    GET_REQUEST,
    LIST_CLASSES,
    LIST_EVENTS,
    LIST_REQUESTS,
    PING,
    CreateRequest,
    GetClass,
    GetRequest,
    ListClasses,
    ListRequestEvents,
    ListRequests,
    Ping,
)
from libs.errors import Forbidden, NotFound
from libs.rpc import RpcClient, RpcServer
from libs.service_kit import ServiceKit
from libs.settings import load_settings
from services.gateway.bootstrap import create_app
from services.gateway.settings import GatewaySettings
from tests.support.bus import wait_until
from tests.support.http import serve
from tests.support.services import answering, running_services

JWT_SECRET = "gateway-test-secret-that-is-long-enough-0123456789"
BACKENDS = SERVICES

CLASSES = [
    EnvironmentClass(
        name="shared-staging",
        allowed_regions=["us-east-1"],
        max_ttl_hours=168,
        default_namespaces=2,
        quota_profile="medium",
        estimated_monthly_cost_usd=700.0,
    ),
    EnvironmentClass(
        name="preview",
        allowed_regions=["us-east-1", "us-west-2"],
        max_ttl_hours=72,
        quota_profile="small",
        estimated_monthly_cost_usd=150.0,
    ),
]


# Test modules mint their tokens at import: they must outlive the slowest whole run.
SESSION_TOKEN_TTL = 24 * 3600


def mint(
    role: Any = "requester", *, secret: str = JWT_SECRET, ttl: int = SESSION_TOKEN_TTL, **claims: Any
) -> str:
    """An HS256 token for ``role`` valid ``ttl`` seconds from now; ``claims`` add or replace claims."""
    now = int(time.time())
    payload = {
        "sub": "user-1",
        "email": "alice@example.com",
        "role": role,
        "iat": now,
        "exp": now + ttl,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def auth(role: Any = "requester", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(role, **claims)}"}


@dataclass
class StandInIntake:
    """intake's verbs from memory, with the same reply shapes and error codes."""

    requests: dict[str, EnvironmentRequestView] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], str] = field(default_factory=dict)
    # Statuses get_request walks through, one per call, staying on the last (for `wait`).
    status_scripts: dict[str, list[str]] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)

    async def create_request(self, command: CreateRequest) -> dict[str, Any]:
        # A body that fails its model never gets here: decoding the message answers for it.
        self.received.append(command)
        if command.idempotency_key:
            existing = self.idempotency.get((command.actor.actor, command.idempotency_key))
            if existing is not None:
                return {"created": False, "request": self.requests[existing]}
        body = command.body
        if command.actor.teams is not None and body.team not in command.actor.teams:
            raise Forbidden(f"team {body.team} is not one of your teams")
        now = datetime.now(UTC)
        view = EnvironmentRequestView(
            id=f"req-{secrets.token_hex(8)}",
            app=body.app,
            team=body.team,
            class_name=body.class_name,
            region=body.region,
            ttl_hours=body.ttl_hours,
            owner=body.owner,
            repository=body.repository,
            revision=body.revision or "main",
            labels=body.labels or {},
            status="submitted",
            generation=0,
            version=1,
            created_at=now,
            created_by=command.actor.actor,
            updated_at=now,
        )
        self.requests[view.id] = view
        if command.idempotency_key:
            self.idempotency[(command.actor.actor, command.idempotency_key)] = view.id
        return {"created": True, "request": view}

    def _find(self, request_id: str) -> EnvironmentRequestView:
        view = self.requests.get(request_id)
        if view is None:
            raise NotFound(f"environment request {request_id} not found")
        return view

    async def get_request(self, query: GetRequest) -> EnvironmentRequestView:
        self.received.append(query)
        view = self._find(query.id)
        script = self.status_scripts.get(query.id)
        if script:
            view.status = script.pop(0) if len(script) > 1 else script[0]
            if view.status == "failed":
                view.last_error = "render: template error in networkpolicy.yaml"
        return view

    async def list_requests(self, query: ListRequests) -> dict[str, Any]:
        self.received.append(query)
        items = [
            view
            for view in self.requests.values()
            if (query.team is None or view.team == query.team)
            and (query.status is None or view.status == query.status)
        ]
        return {"items": items[: query.limit], "next_cursor": "c-next" if len(items) > query.limit else None}

    async def list_events(self, query: ListRequestEvents) -> dict[str, Any]:
        self.received.append(query)
        view = self._find(query.id)
        entry = TimelineEntry(
            event_id="00000000-0000-0000-0000-000000000001",
            type="request.submitted",
            source="intake",
            time=view.created_at,
            generation=0,
            applied=True,
            status_after="submitted",
            data={"request_id": view.id},
        )
        return {"items": [entry]}


@dataclass
class StandInPolicy:
    received: list[Any] = field(default_factory=list)

    async def list_classes(self, query: ListClasses) -> dict[str, Any]:
        self.received.append(query)
        return {"items": CLASSES}  # deliberately unsorted: sorting is the gateway's promise

    async def get_class(self, query: GetClass) -> EnvironmentClass:
        self.received.append(query)
        for item in CLASSES:
            if item.name == query.name:
                return item
        raise NotFound(f"environment class {query.name} not found")


@dataclass
class GatewayStack:
    app: Litestar
    base_url: str
    settings: GatewaySettings
    nc: NatsClient
    intake: StandInIntake
    policy: StandInPolicy
    servers: dict[str, RpcServer]

    async def answer(self, *services: str) -> None:
        """Start ``ping`` responders for ``services`` (ready ones)."""
        for name in services:
            server = RpcServer(self.nc, service=name, prefix=self.settings.rpc_prefix)
            server.route(PING, _pong(name))
            await server.start()
            self.servers[name] = server

    async def stop(self, service: str) -> None:
        await self.servers.pop(service).stop(timeout=1)


def _pong(name: str) -> Any:
    async def ping(_: Ping) -> dict[str, Any]:
        return {"service": name, "ready": True, "checks": {"database": "ok"}}

    return ping


def gateway_settings(nats_url: str, rpc_prefix: str, **extra: str) -> GatewaySettings:
    env = {
        "PLATFORM_NATS_URL": nats_url,
        "PLATFORM_RPC_SUBJECT_PREFIX": rpc_prefix,
        "PLATFORM_JWT_HS256_SECRET": JWT_SECRET,
        "PLATFORM_RPC_TIMEOUT_SECONDS": "2",
        "PLATFORM_READINESS_TIMEOUT_SECONDS": "1",
        **extra,
    }
    return load_settings(GatewaySettings, env)


@contextlib.asynccontextmanager
async def gateway_stack(nats_url: str, rpc_prefix: str, **extra_env: str) -> AsyncIterator[GatewayStack]:
    """The gateway (connecting to NATS itself, as in production) plus intake and policy stand-ins."""
    settings = gateway_settings(nats_url, rpc_prefix, **extra_env)
    nc = await nats.connect(nats_url)
    intake, policy = StandInIntake(), StandInPolicy()
    intake_server = RpcServer(nc, service="intake", prefix=rpc_prefix)
    intake_server.route(CREATE_REQUEST, intake.create_request)
    intake_server.route(GET_REQUEST, intake.get_request)
    intake_server.route(LIST_REQUESTS, intake.list_requests)
    intake_server.route(LIST_EVENTS, intake.list_events)
    intake_server.route(PING, _pong("intake"))
    policy_server = RpcServer(nc, service="policy", prefix=rpc_prefix)
    policy_server.route(LIST_CLASSES, policy.list_classes)
    policy_server.route(GET_CLASS, policy.get_class)
    policy_server.route(PING, _pong("policy"))
    servers = {"intake": intake_server, "policy": policy_server}
    try:
        for server in servers.values():
            await server.start()
        app = create_app(settings)
        async with serve(app) as base_url:
            yield GatewayStack(app, base_url, settings, nc, intake, policy, servers)
    finally:
        for server in servers.values():
            await server.stop(timeout=1)
        await nc.close()


@contextlib.asynccontextmanager
async def gateway_with_services(
    environment: Mapping[str, str], names: Sequence[str], **gateway_env: str
) -> AsyncIterator[tuple[str, dict[str, ServiceKit]]]:
    """The gateway in front of the real ``names`` services (run in this process through their
    composition roots), once each answers ``ping`` as ready: intake is ready once policy's
    class catalog has reached it. ``gateway_env`` adds settings of the gateway alone. Yields the
    gateway's base URL and the services' kits."""
    nats_url, rpc_prefix = environment["PLATFORM_NATS_URL"], environment["PLATFORM_RPC_SUBJECT_PREFIX"]
    async with running_services(list(names), environment) as kits:
        nc = await nats.connect(nats_url)
        try:
            rpc = RpcClient(nc, rpc_prefix, timeout=5)
            await wait_until(lambda: answering(rpc, *names), what=f"{', '.join(names)} answering as ready")
        finally:
            await nc.close()
        async with serve(create_app(gateway_settings(nats_url, rpc_prefix, **gateway_env))) as base_url:
            yield base_url, kits
