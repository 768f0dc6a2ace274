"""The services behind the gateway, reached by request/reply over NATS (DESIGN.md section 3).

One typed method per verb: the request is a ``contracts.rpc`` message, the reply is decoded
into the gateway's resource types. Error replies surface as :class:`libs.rpc.RpcError`
(or :class:`libs.errors.Unavailable` when nobody answers) and are mapped to HTTP statuses
by the HTTP entrypoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient

from contracts.models import (
    BundlePreview,
    EnvironmentClass,
    EnvironmentRequestView,
    PolicyPack,
    PolicyPlanView,
    QuotaProfile,
    TeamBudgetView,
    ValidatedRequest,
)
from contracts.rpc import (
    ApproveRequest,
    CreateRequest,
    DeleteRequest,
    ExtendRequest,
    GetClass,
    GetPolicyPack,
    GetQuotaProfile,
    GetRequest,
    GetTeam,
    ListAllEvents,
    ListClasses,
    ListDeadLetters,
    ListPolicyPacks,
    ListQuotaProfiles,
    ListRequests,
    Ping,
    PingReply,
    PlanRequest,
    ReconcileRequest,
    RejectRequest,
    RenderPreview,
    ReplayDeadLetter,
    SetTeamBudget,
    UpsertClass,
    UpsertPolicyPack,
    UpsertQuotaProfile,
)
from libs.rpc import RpcClient, RpcError
from services.gateway.adapters.plans import dry_run
from services.gateway.domain.catalog import (
    ClassUpsert,
    DryRunPlan,
    PolicyPackList,
    PolicyPackUpsert,
    QuotaProfileList,
    QuotaProfileUpsert,
)
from services.gateway.domain.resources import (
    ApprovalOutcome,
    ClassList,
    CreateOutcome,
    DeadLetter,
    DeadLetterPage,
    EventFeed,
    RequestPage,
    Timeline,
)

T = TypeVar("T")

# Every backend service answers ``ping``: its readiness and the dependencies it reports
# (GET /v1/status). The gateway's own readiness does not depend on any of them.
BACKEND_SERVICES = ("intake", "policy", "approval", "renderer", "git_publisher", "cluster_bootstrapper")


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

    async def create_request_dry_run(self, command: CreateRequest) -> DryRunPlan:
        """What creating the request would do; see :func:`services.gateway.adapters.plans.dry_run`."""
        return await dry_run(self, command)

    async def get_request(self, query: GetRequest) -> EnvironmentRequestView:
        return await self._call("intake", "get_request", query, EnvironmentRequestView)

    async def list_requests(self, query: ListRequests) -> RequestPage:
        return await self._call("intake", "list_requests", query, RequestPage)

    async def list_events(self, query: GetRequest) -> Timeline:
        return await self._call("intake", "list_events", query, Timeline)

    async def list_all_events(self, query: ListAllEvents) -> EventFeed:
        return await self._call("intake", "list_all_events", query, EventFeed)

    async def reconcile(self, command: ReconcileRequest) -> EnvironmentRequestView:
        return await self._call("intake", "reconcile", command, EnvironmentRequestView)

    async def extend(self, command: ExtendRequest) -> EnvironmentRequestView:
        return await self._call("intake", "extend", command, EnvironmentRequestView)

    async def delete(self, command: DeleteRequest) -> EnvironmentRequestView:
        return await self._call("intake", "delete", command, EnvironmentRequestView)

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
        return await self._call("approval", "approve", command, ApprovalOutcome)

    async def reject(self, command: RejectRequest) -> dict[str, Any]:
        return await self._call("approval", "reject", command, dict[str, Any])

    # -- dead letters (every service) ------------------------------------------------------

    async def list_dead_letters(self, service: str, query: ListDeadLetters) -> DeadLetterPage:
        return await self._call(service, "list_dead_letters", query, DeadLetterPage)

    async def replay_dead_letter(self, service: str, command: ReplayDeadLetter) -> DeadLetter:
        return await self._call(service, "replay_dead_letter", command, DeadLetter)

    # -- policy ----------------------------------------------------------------------------

    async def list_classes(self) -> ClassList:
        reply = await self._call("policy", "list_classes", ListClasses(), ClassList)
        return ClassList(items=sorted(reply.items, key=lambda item: item.name))

    async def get_class(self, name: str) -> EnvironmentClass:
        return await self._call("policy", "get_class", GetClass(name=name), EnvironmentClass)

    # -- catalog, budgets and plans (policy, renderer) -----------------------------------------

    async def upsert_class(self, command: UpsertClass) -> ClassUpsert:
        return await self._call("policy", "upsert_class", command, ClassUpsert)

    async def list_quota_profiles(self) -> QuotaProfileList:
        return await self._call("policy", "list_quota_profiles", ListQuotaProfiles(), QuotaProfileList)

    async def get_quota_profile(self, name: str) -> QuotaProfile:
        return await self._call("policy", "get_quota_profile", GetQuotaProfile(name=name), QuotaProfile)

    async def upsert_quota_profile(self, command: UpsertQuotaProfile) -> QuotaProfileUpsert:
        return await self._call("policy", "upsert_quota_profile", command, QuotaProfileUpsert)

    async def list_policy_packs(self) -> PolicyPackList:
        return await self._call("policy", "list_policy_packs", ListPolicyPacks(), PolicyPackList)

    async def get_policy_pack(self, name: str) -> PolicyPack:
        return await self._call("policy", "get_policy_pack", GetPolicyPack(name=name), PolicyPack)

    async def upsert_policy_pack(self, command: UpsertPolicyPack) -> PolicyPackUpsert:
        return await self._call("policy", "upsert_policy_pack", command, PolicyPackUpsert)

    async def get_team(self, query: GetTeam) -> TeamBudgetView:
        return await self._call("policy", "get_team", query, TeamBudgetView)

    async def set_team_budget(self, command: SetTeamBudget) -> TeamBudgetView:
        return await self._call("policy", "set_team_budget", command, TeamBudgetView)

    async def validate_request(self, command: CreateRequest) -> ValidatedRequest:
        """``intake.create_request`` with ``dry_run``: validated, nothing stored."""
        return await self._call("intake", "create_request", command, ValidatedRequest)

    async def plan(self, query: PlanRequest) -> PolicyPlanView:
        return await self._call("policy", "plan", query, PolicyPlanView)

    async def render(self, query: RenderPreview) -> BundlePreview:
        return await self._call("renderer", "render", query, BundlePreview)

    # -- readiness -------------------------------------------------------------------------

    async def ping(self, service: str, reply_timeout: float) -> PingReply:
        """The readiness of the ``service`` instance that answered, and its dependencies."""
        return await self._call(service, "ping", Ping(), PingReply, reply_timeout=reply_timeout)

    async def check_nats(self) -> None:
        """The gateway's readiness: connected, and the server answers a PING (the caller
        bounds the wait)."""
        if not self.nc.is_connected:
            raise ConnectionError("not connected")
        await self.nc.flush()
