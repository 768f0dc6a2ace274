"""The services behind the gateway, reached by request/reply over NATS.

One typed method per verb of :data:`contracts.rpc.RPC_VERBS`: the request is the verb's
message, the reply is decoded straight into the verb's reply type (a reply that does not
fit becomes an ``internal`` error, a clean 500, rather than a half-valid body). Error
replies surface as :class:`libs.rpc.RpcError` (or :class:`libs.errors.Unavailable` when
nobody answers) and are mapped to HTTP statuses by the HTTP entrypoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient

from contracts.catalog import SERVICES
from contracts.models import (
    Actor,
    BundlePreview,
    DeadLetterView,
    EnvironmentRequestView,
    PolicyPlanView,
    TeamBudgetView,
    ValidatedRequest,
)
from contracts.replies import (
    ApprovalOutcome,
    CreateOutcome,
    EventFeed,
    RejectionOutcome,
    ReplayReport,
    RequestPage,
    Timeline,
)
from contracts.rpc import (
    APPROVE,
    CREATE_REQUEST,
    DELETE,
    EXTEND,
    GET_REQUEST,
    GET_TEAM,
    LIST_ALL_EVENTS,
    LIST_DEAD_LETTERS,
    LIST_EVENTS,
    LIST_REQUESTS,
    PING,
    PLAN,
    RECONCILE,
    REJECT,
    RENDER,
    REPLAY_DEAD_LETTER,
    REPLAY_EVENTS,
    SET_TEAM_BUDGET,
    VALIDATE_REQUEST,
    ApproveRequest,
    CreateRequest,
    DeleteRequest,
    ExtendRequest,
    GetRequest,
    GetTeam,
    ListAllEvents,
    ListDeadLetters,
    ListRequestEvents,
    ListRequests,
    Ping,
    PingReply,
    PlanRequest,
    ReconcileRequest,
    RejectRequest,
    RenderPreview,
    ReplayDeadLetter,
    ReplayEvents,
    RpcVerb,
    SetTeamBudget,
)
from libs.errors import Unavailable, ValidationFailed
from libs.rpc import RpcClient, RpcError
from services.gateway.domain.resources import DeadLetter, DeadLetterPage

# Every backend service answers ``ping``: its readiness and the dependencies it reports
# (GET /v1/status). The gateway's own readiness does not depend on any of them.
BACKEND_SERVICES = SERVICES

RequestT = TypeVar("RequestT")
ReplyT = TypeVar("ReplyT")


class Services:
    """Typed calls to the platform services."""

    def __init__(self, nc: NatsClient, prefix: str, timeout: float) -> None:
        self.nc = nc
        self.rpc = RpcClient(nc, prefix, timeout)

    # -- intake ----------------------------------------------------------------------------

    async def create_request(self, command: CreateRequest) -> CreateOutcome:
        return await self.rpc.ask(CREATE_REQUEST, command)

    async def refuse_request(self, body: dict[str, Any], actor: Actor, invalid: ValidationFailed) -> NoReturn:
        """Answer for a create body that failed its model here: intake names what its catalog
        refuses too (a region the class does not allow, a TTL above its maximum)."""
        await self.refuse(VALIDATE_REQUEST, {"body": body, "actor": actor}, invalid)

    async def get_request(self, query: GetRequest) -> EnvironmentRequestView:
        return await self.rpc.ask(GET_REQUEST, query)

    async def list_requests(self, query: ListRequests) -> RequestPage:
        return await self.rpc.ask(LIST_REQUESTS, query)

    async def list_events(self, query: ListRequestEvents) -> Timeline:
        return await self.rpc.ask(LIST_EVENTS, query)

    async def list_all_events(self, query: ListAllEvents) -> EventFeed:
        return await self.rpc.ask(LIST_ALL_EVENTS, query)

    async def reconcile(self, command: ReconcileRequest) -> EnvironmentRequestView:
        return await self.rpc.ask(RECONCILE, command)

    async def extend(self, command: ExtendRequest) -> EnvironmentRequestView:
        return await self.rpc.ask(EXTEND, command)

    async def delete(self, command: DeleteRequest) -> EnvironmentRequestView:
        return await self.rpc.ask(DELETE, command)

    async def wait_for_request(
        self, query: GetRequest, settled: Callable[[EnvironmentRequestView], bool], timeout: float
    ) -> EnvironmentRequestView:
        """Read the request until ``settled(view)`` or ``timeout`` passes; the last view either way.

        Approvals are decided by the approval service and projected by intake a moment
        later; waiting for that here gives HTTP callers read-your-writes (approve, then
        reconcile at once, as the original API allowed).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            view = await self.get_request(query)
            if settled(view) or loop.time() >= deadline:
                return view
            await asyncio.sleep(0.05)

    # -- approval --------------------------------------------------------------------------

    async def approve(self, command: ApproveRequest) -> ApprovalOutcome:
        return await self.rpc.ask(APPROVE, command)

    async def reject(self, command: RejectRequest) -> RejectionOutcome:
        return await self.rpc.ask(REJECT, command)

    # -- dead letters (every service) ------------------------------------------------------

    async def list_dead_letters(self, service: str, query: ListDeadLetters) -> DeadLetterPage:
        reply = await self.rpc.ask(LIST_DEAD_LETTERS, query, service=service)
        return DeadLetterPage(items=[_kept_by(service, item) for item in reply.items])

    async def replay_dead_letter(self, service: str, command: ReplayDeadLetter) -> DeadLetter:
        return _kept_by(service, await self.rpc.ask(REPLAY_DEAD_LETTER, command, service=service))

    async def replay_events(self, service: str, command: ReplayEvents) -> ReplayReport:
        return await self.rpc.ask(REPLAY_EVENTS, command, service=service)

    # -- the catalog, budgets and plans (policy, renderer) ---------------------------------

    async def ask(self, verb: RpcVerb[RequestT, ReplyT], message: RequestT) -> ReplyT:
        """Any verb: for callers written once for several (the catalog's documents)."""
        return await self.rpc.ask(verb, message)

    async def refuse(
        self, verb: RpcVerb[Any, Any], message: dict[str, Any], invalid: ValidationFailed
    ) -> NoReturn:
        """Answer for a body its model refused here (``invalid``): the service, shown the
        message with the body as the client sent it, answers ``validation`` naming what its
        own rules refuse beside the model's fields. When it cannot say so (not answering, too
        busy to answer in time) the model's answer stands: a 422 rather than a 503."""
        try:
            await self.rpc.ask_unvalidated(verb, message)
        except RpcError as exc:
            if exc.code == "validation":
                raise
        except Unavailable:
            pass
        raise invalid

    async def get_team(self, query: GetTeam) -> TeamBudgetView:
        return await self.rpc.ask(GET_TEAM, query)

    async def set_team_budget(self, command: SetTeamBudget) -> TeamBudgetView:
        return await self.rpc.ask(SET_TEAM_BUDGET, command)

    async def validate_request(self, command: CreateRequest) -> ValidatedRequest:
        """``intake.validate_request``: the request validated as a create would store it; nothing stored."""
        return await self.rpc.ask(VALIDATE_REQUEST, command)

    async def plan(self, query: PlanRequest) -> PolicyPlanView:
        return await self.rpc.ask(PLAN, query)

    async def render(self, query: RenderPreview) -> BundlePreview:
        return await self.rpc.ask(RENDER, query)

    # -- readiness -------------------------------------------------------------------------

    async def ping(self, service: str, reply_timeout: float) -> PingReply:
        """The readiness of the ``service`` instance that answered, and its dependencies."""
        return await self.rpc.ask(PING, Ping(), service=service, timeout=reply_timeout)

    async def check_nats(self) -> None:
        """The gateway's readiness: connected, and the server answers a PING (the caller
        bounds the wait)."""
        if not self.nc.is_connected:
            raise ConnectionError("not connected")
        await self.nc.flush()


def _kept_by(service: str, view: DeadLetterView) -> DeadLetter:
    """A service's dead letter as the gateway lists it: with the service that keeps it."""
    return DeadLetter(**msgspec.structs.asdict(view), service=service)
