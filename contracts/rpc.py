"""Request/reply messages between the gateway and the services, and the one list of verbs.

Subject: ``<rpc prefix>.<service>.<verb>``. Reply: ``{"ok": true, "data": ...}`` or
``{"ok": false, "error": {"code", "message", "details"}}`` with ``code`` one of
:data:`ERROR_CODES`.

:data:`RPC_VERBS` is the registry: each :class:`RpcVerb` names its service, its request
type and its reply type. Services register handlers by verb (``kit.route(verb, handler)``),
the gateway calls by verb (``RpcClient.ask(verb, message)``) and the JSON Schemas are
generated from it. Client bodies travel as the :mod:`contracts.inputs` models, which the
receiving service validates again (:func:`contracts.inputs.decode_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec

from contracts.inputs import (
    ConsumerReplayInput,
    EnvironmentClassInput,
    EnvironmentRequestInput,
    ExtensionInput,
    PolicyPackInput,
    QuotaProfileInput,
    RejectionInput,
    TeamBudgetInput,
)
from contracts.models import (
    Actor,
    BundlePreview,
    DeadLetterView,
    EnvironmentClass,
    EnvironmentPlan,
    EnvironmentRequestView,
    PolicyPack,
    PolicyPlanView,
    QuotaProfile,
    RequestSpec,
    TeamBudgetView,
    ValidatedRequest,
)
from contracts.replies import (
    ApprovalOutcome,
    ClassList,
    ClassUpsert,
    CreateOutcome,
    DeadLetterList,
    EventFeed,
    PolicyPackList,
    PolicyPackUpsert,
    QuotaProfileList,
    QuotaProfileUpsert,
    RejectionOutcome,
    ReplayReport,
    RequestPage,
    Timeline,
)

T = TypeVar("T")

# ``reply_too_large``: the service's answer was larger than the bus carries (NATS's
# ``max_payload``); it sent this instead, so the caller need not wait out its timeout.
ErrorCode = Literal[
    "validation",
    "not_found",
    "conflict",
    "forbidden",
    "unauthorized",
    "unavailable",
    "internal",
    "reply_too_large",
]
ERROR_CODES: tuple[str, ...] = ErrorCode.__args__  # type: ignore[attr-defined]


class RpcErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: ErrorCode
    message: str
    details: Any = None


class RpcReply(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """``data`` is the verb's reply type when ``ok``; ``error`` says why not otherwise."""

    ok: bool
    data: T | None = None
    error: RpcErrorBody | None = None


_DRY_RUN_DEPRECATED = (
    "Deprecated: true asks create_request for a dry run, answered as validate_request answers "
    "(a validated request; nothing stored). Use validate_request."
)


class CreateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.create_request, and intake.validate_request (the dry run: validated, nothing stored)."""

    body: EnvironmentRequestInput
    actor: Actor
    idempotency_key: str | None = None
    # Gateways released before validate_request ask for a dry run this way; intake answers
    # them as validate_request would, so a rolling deploy never turns their dry run into a create.
    dry_run: Annotated[bool, msgspec.Meta(description=_DRY_RUN_DEPRECATED)] = False


class GetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.get_request."""

    id: str
    actor: Actor


class ListRequestEvents(msgspec.Struct, frozen=True, kw_only=True):
    """intake.list_events: one request's timeline, oldest first, a page at a time; ``after`` is
    the ``next_cursor`` of the previous page. A page holds at most ``limit`` entries and never
    more than fits in one reply on the bus. (Earlier gateways send ``id`` and ``actor`` only,
    and get the first page.)"""

    id: str
    actor: Actor
    after: str | None = None
    limit: int = 100


class ListRequests(msgspec.Struct, frozen=True, kw_only=True):
    """intake.list_requests: filters are exact matches; ``cursor`` comes from ``next_cursor``."""

    actor: Actor
    team: str | None = None
    status: str | None = None
    class_name: str | None = msgspec.field(name="class", default=None)
    cursor: str | None = None
    limit: int = 50


# ``after`` of the event feed: a ``next_cursor`` ("<transaction>.<sequence>", each a bigint in
# ASCII digits) or ``end`` (only what happens from now on).
FEED_CURSOR_PATTERN = r"^(?:end|([0-9]{1,19})\.([0-9]{1,19}))$"


class ListAllEvents(msgspec.Struct, frozen=True, kw_only=True):
    """intake.list_all_events: the timelines of every request the actor may see, in the order
    intake recorded them; ``after`` is the ``next_cursor`` of the previous page."""

    actor: Actor
    after: str | None = None
    request_id: str | None = None
    limit: int = 100


class ReconcileRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.reconcile: start a new generation of the pipeline.

    ``expected_version`` (from ``If-Match``) makes the call conditional on the record not
    having changed since the caller read it."""

    id: str
    actor: Actor
    expected_version: int | None = None


class ExtendRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.extend: intake checks the new TTL against the request's class."""

    id: str
    actor: Actor
    body: ExtensionInput
    expected_version: int | None = None


class DeleteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.delete: tear the environment down (status ``deleting``)."""

    id: str
    actor: Actor
    expected_version: int | None = None


class ApproveRequest(msgspec.Struct, frozen=True, kw_only=True):
    """approval.approve: ``signature`` is the client's ``X-Platform-Approval-Signature``
    (see :mod:`contracts.attestation`); ``generation`` is the request's generation as intake
    reported it, recorded in the attestation."""

    id: str
    actor: Actor
    signature: str
    generation: int = 0


class RejectRequest(msgspec.Struct, frozen=True, kw_only=True):
    """approval.reject."""

    id: str
    actor: Actor
    body: RejectionInput


class ListDeadLetters(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.list_dead_letters (every service): newest first; replayed ones only on request."""

    include_replayed: bool = False
    limit: int = 100


class ReplayDeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.replay_dead_letter (every service): deliver the event to its consumer again."""

    id: int
    replayed_by: str


class ReplayEvents(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.replay_events (every service): re-drive the stream's messages its durables
    consume, from a point, to their handlers (or count them: ``body.dry_run``)."""

    body: ConsumerReplayInput
    replayed_by: str


class GetClass(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_class."""

    name: str


class ListClasses(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_classes."""


class UpsertClass(msgspec.Struct, frozen=True, kw_only=True):
    """policy.upsert_class: ``name`` is the URL's; policy checks the references to its catalog."""

    name: str
    body: EnvironmentClassInput
    actor: Actor
    # The client's If-Match (entity tags of what it read, or *): write only if it holds.
    if_match: str | None = None


class GetQuotaProfile(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_quota_profile."""

    name: str


class ListQuotaProfiles(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_quota_profiles."""


class UpsertQuotaProfile(msgspec.Struct, frozen=True, kw_only=True):
    """policy.upsert_quota_profile: ``name`` is the URL's; policy checks the references to its catalog."""

    name: str
    body: QuotaProfileInput
    actor: Actor
    # The client's If-Match (entity tags of what it read, or *): write only if it holds.
    if_match: str | None = None


class GetPolicyPack(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_policy_pack."""

    name: str


class ListPolicyPacks(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_policy_packs."""


class UpsertPolicyPack(msgspec.Struct, frozen=True, kw_only=True):
    """policy.upsert_policy_pack: ``name`` is the URL's; policy checks the references to its catalog."""

    name: str
    body: PolicyPackInput
    actor: Actor
    # The client's If-Match (entity tags of what it read, or *): write only if it holds.
    if_match: str | None = None


class GetTeam(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_team: the team's budget and spend; requesters only for their own teams."""

    team: str
    actor: Actor


class SetTeamBudget(msgspec.Struct, frozen=True, kw_only=True):
    """policy.set_team_budget."""

    team: str
    body: TeamBudgetInput
    actor: Actor
    # The client's If-Match (entity tags of what it read, or *): write only if it holds.
    if_match: str | None = None


class PlanRequest(msgspec.Struct, frozen=True, kw_only=True):
    """policy.plan: decide and plan ``spec`` as if it were submitted; nothing is stored."""

    request_id: str
    spec: RequestSpec
    created_by: str


class RenderPreview(msgspec.Struct, frozen=True, kw_only=True):
    """renderer.render: the bundle ``spec`` and ``plan`` would produce; nothing is stored."""

    request_id: str
    spec: RequestSpec
    plan: EnvironmentPlan


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.ping: readiness of the service behind the endpoint; the reply is a :class:`PingReply`."""


DependencyState = Literal["up", "down", "unknown"]


class DependencyReport(msgspec.Struct, frozen=True, kw_only=True):
    """One external dependency (a git remote, a cluster region...) as the reporting process saw it.

    ``state`` is ``unknown`` until the first check. ``since``: when the dependency entered
    ``state``, as far as this process knows; ``last_error``: why it is down, written for
    people (never a host, URL, DSN or secret).
    """

    state: DependencyState
    since: datetime | None = None
    last_error: str | None = None
    last_success_at: datetime | None = None
    checked_at: datetime | None = None


class PingReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of <service>.ping.

    ``ready`` and ``checks`` are the readiness of the process that answered (its own
    database and NATS connection); ``dependencies`` are reported, never part of ``ready``.
    """

    service: str
    ready: bool
    checks: dict[str, str] = {}
    dependencies: dict[str, DependencyReport] = {}


RequestT = TypeVar("RequestT")
ReplyT = TypeVar("ReplyT")

KIT = "kit"
"""The ``service`` of the verbs every service serves (the kit registers them): called as
``<service>.<verb>`` for the service asked."""


@dataclass(frozen=True)
class RpcVerb(Generic[RequestT, ReplyT]):
    """One verb: who serves it, what it takes and what it answers."""

    service: str
    name: str
    request_type: type[RequestT]
    reply_type: type[ReplyT]

    @property
    def key(self) -> str:
        """``<service>.<verb>``, the registry key (and the subject without its prefix)."""
        return f"{self.service}.{self.name}"


CREATE_REQUEST = RpcVerb("intake", "create_request", CreateRequest, CreateOutcome)
VALIDATE_REQUEST = RpcVerb("intake", "validate_request", CreateRequest, ValidatedRequest)
GET_REQUEST = RpcVerb("intake", "get_request", GetRequest, EnvironmentRequestView)
LIST_REQUESTS = RpcVerb("intake", "list_requests", ListRequests, RequestPage)
LIST_EVENTS = RpcVerb("intake", "list_events", ListRequestEvents, Timeline)
LIST_ALL_EVENTS = RpcVerb("intake", "list_all_events", ListAllEvents, EventFeed)
RECONCILE = RpcVerb("intake", "reconcile", ReconcileRequest, EnvironmentRequestView)
EXTEND = RpcVerb("intake", "extend", ExtendRequest, EnvironmentRequestView)
DELETE = RpcVerb("intake", "delete", DeleteRequest, EnvironmentRequestView)
APPROVE = RpcVerb("approval", "approve", ApproveRequest, ApprovalOutcome)
REJECT = RpcVerb("approval", "reject", RejectRequest, RejectionOutcome)
PING = RpcVerb(KIT, "ping", Ping, PingReply)
LIST_DEAD_LETTERS = RpcVerb(KIT, "list_dead_letters", ListDeadLetters, DeadLetterList)
REPLAY_DEAD_LETTER = RpcVerb(KIT, "replay_dead_letter", ReplayDeadLetter, DeadLetterView)
REPLAY_EVENTS = RpcVerb(KIT, "replay_events", ReplayEvents, ReplayReport)
LIST_CLASSES = RpcVerb("policy", "list_classes", ListClasses, ClassList)
GET_CLASS = RpcVerb("policy", "get_class", GetClass, EnvironmentClass)
UPSERT_CLASS = RpcVerb("policy", "upsert_class", UpsertClass, ClassUpsert)
LIST_QUOTA_PROFILES = RpcVerb("policy", "list_quota_profiles", ListQuotaProfiles, QuotaProfileList)
GET_QUOTA_PROFILE = RpcVerb("policy", "get_quota_profile", GetQuotaProfile, QuotaProfile)
UPSERT_QUOTA_PROFILE = RpcVerb("policy", "upsert_quota_profile", UpsertQuotaProfile, QuotaProfileUpsert)
LIST_POLICY_PACKS = RpcVerb("policy", "list_policy_packs", ListPolicyPacks, PolicyPackList)
GET_POLICY_PACK = RpcVerb("policy", "get_policy_pack", GetPolicyPack, PolicyPack)
UPSERT_POLICY_PACK = RpcVerb("policy", "upsert_policy_pack", UpsertPolicyPack, PolicyPackUpsert)
GET_TEAM = RpcVerb("policy", "get_team", GetTeam, TeamBudgetView)
SET_TEAM_BUDGET = RpcVerb("policy", "set_team_budget", SetTeamBudget, TeamBudgetView)
PLAN = RpcVerb("policy", "plan", PlanRequest, PolicyPlanView)
RENDER = RpcVerb("renderer", "render", RenderPreview, BundlePreview)

RPC_VERBS: dict[str, RpcVerb[Any, Any]] = {
    verb.key: verb
    for verb in (
        CREATE_REQUEST,
        VALIDATE_REQUEST,
        GET_REQUEST,
        LIST_REQUESTS,
        LIST_EVENTS,
        LIST_ALL_EVENTS,
        RECONCILE,
        EXTEND,
        DELETE,
        APPROVE,
        REJECT,
        PING,
        LIST_DEAD_LETTERS,
        REPLAY_DEAD_LETTER,
        REPLAY_EVENTS,
        LIST_CLASSES,
        GET_CLASS,
        UPSERT_CLASS,
        LIST_QUOTA_PROFILES,
        GET_QUOTA_PROFILE,
        UPSERT_QUOTA_PROFILE,
        LIST_POLICY_PACKS,
        GET_POLICY_PACK,
        UPSERT_POLICY_PACK,
        GET_TEAM,
        SET_TEAM_BUDGET,
        PLAN,
        RENDER,
    )
}
