"""Request/reply messages between the gateway and the services.

Subject: ``<rpc prefix>.<service>.<verb>``. Reply: ``{"ok": true, "data": ...}`` or
``{"ok": false, "error": {"code", "message", "details"}}`` with ``code`` one of
:data:`ERROR_CODES`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from contracts.models import Actor, EnvironmentPlan, RequestSpec

ErrorCode = Literal[
    "validation", "not_found", "conflict", "forbidden", "unauthorized", "unavailable", "internal"
]
ERROR_CODES: tuple[str, ...] = ErrorCode.__args__  # type: ignore[attr-defined]


class RpcErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    code: ErrorCode
    message: str
    details: Any = None


class RpcReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    data: Any = None
    error: RpcErrorBody | None = None


class CreateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.create_request: ``body`` is the client's JSON object, validated by intake."""

    body: dict[str, Any]
    actor: Actor
    idempotency_key: str | None = None
    dry_run: bool = False


class GetRequest(msgspec.Struct, frozen=True, kw_only=True):
    """intake.get_request and intake.list_events."""

    id: str
    actor: Actor


class ListRequests(msgspec.Struct, frozen=True, kw_only=True):
    """intake.list_requests: filters are exact matches; ``cursor`` comes from ``next_cursor``."""

    actor: Actor
    team: str | None = None
    status: str | None = None
    class_name: str | None = msgspec.field(name="class", default=None)
    cursor: str | None = None
    limit: int = 50


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
    """intake.extend: ``body`` is the client's JSON object (``{"ttl_hours": N}``), validated by intake."""

    id: str
    actor: Actor
    body: dict[str, Any]
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
    """approval.reject: ``body`` is the client's JSON object (``{"reason": "..."}``)."""

    id: str
    actor: Actor
    body: dict[str, Any]


class ListDeadLetters(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.list_dead_letters (every service): newest first; replayed ones only on request."""

    include_replayed: bool = False
    limit: int = 100


class ReplayDeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.replay_dead_letter (every service): deliver the event to its consumer again."""

    id: int
    replayed_by: str


class GetClass(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_class."""

    name: str


class ListClasses(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_classes."""


class UpsertClass(msgspec.Struct, frozen=True, kw_only=True):
    """policy.upsert_class: ``body`` is the admin's JSON object, validated by policy."""

    name: str
    body: dict[str, Any]
    actor: Actor


class GetQuotaProfile(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_quota_profile."""

    name: str


class ListQuotaProfiles(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_quota_profiles."""


class UpsertQuotaProfile(msgspec.Struct, frozen=True, kw_only=True):
    """policy.upsert_quota_profile: ``body`` is the admin's JSON object, validated by policy."""

    name: str
    body: dict[str, Any]
    actor: Actor


class GetPolicyPack(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_policy_pack."""

    name: str


class ListPolicyPacks(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_policy_packs."""


class UpsertPolicyPack(msgspec.Struct, frozen=True, kw_only=True):
    """policy.upsert_policy_pack: ``body`` is the admin's JSON object, validated by policy."""

    name: str
    body: dict[str, Any]
    actor: Actor


class GetTeam(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_team: the team's budget and spend; requesters only for their own teams."""

    team: str
    actor: Actor


class SetTeamBudget(msgspec.Struct, frozen=True, kw_only=True):
    """policy.set_team_budget: ``body`` is ``{"monthly_usd": N}`` (null removes the budget)."""

    team: str
    body: dict[str, Any]
    actor: Actor


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


RPC_MESSAGES: dict[str, type[Any]] = {
    "intake.create_request": CreateRequest,
    "intake.get_request": GetRequest,
    "intake.list_requests": ListRequests,
    "intake.list_events": GetRequest,
    "intake.list_all_events": ListAllEvents,
    "intake.reconcile": ReconcileRequest,
    "intake.extend": ExtendRequest,
    "intake.delete": DeleteRequest,
    "approval.approve": ApproveRequest,
    "approval.reject": RejectRequest,
    # Served by every service (the kit registers them) as <service>.<verb>.
    "kit.ping": Ping,
    "kit.list_dead_letters": ListDeadLetters,
    "kit.replay_dead_letter": ReplayDeadLetter,
    "policy.list_classes": ListClasses,
    "policy.get_class": GetClass,
    "policy.upsert_class": UpsertClass,
    "policy.list_quota_profiles": ListQuotaProfiles,
    "policy.get_quota_profile": GetQuotaProfile,
    "policy.upsert_quota_profile": UpsertQuotaProfile,
    "policy.list_policy_packs": ListPolicyPacks,
    "policy.get_policy_pack": GetPolicyPack,
    "policy.upsert_policy_pack": UpsertPolicyPack,
    "policy.get_team": GetTeam,
    "policy.set_team_budget": SetTeamBudget,
    "policy.plan": PlanRequest,
    "renderer.render": RenderPreview,
}
