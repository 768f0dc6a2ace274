"""Replies of the RPC verbs that are envelopes around the contracts' models.

The services build them and the gateway decodes them (:data:`contracts.rpc.RPC_VERBS` pairs
each verb with its reply type), so both sides share one definition and the published
schemas describe what really crosses the bus. The items are :mod:`contracts.models` types.
"""

from __future__ import annotations

import msgspec

from contracts.models import (
    DeadLetterView,
    EnvironmentClass,
    EnvironmentRequestView,
    PolicyPack,
    QuotaProfile,
    TimelineEntry,
)


class CreateOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``intake.create_request``: ``created`` is false on an idempotent replay."""

    created: bool
    request: EnvironmentRequestView


class RequestPage(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``intake.list_requests``; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[EnvironmentRequestView]
    next_cursor: str | None = None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``intake.list_events``: one request's events, oldest first."""

    items: list[TimelineEntry]


class EventFeed(msgspec.Struct, frozen=True, kw_only=True):
    """Timeline entries of every visible request, oldest first; pass ``next_cursor`` as
    ``after`` to continue (it is set even on an empty page, so a follower keeps its place)."""

    items: list[TimelineEntry]
    next_cursor: str


class ApprovalOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``approval.approve``: the quorum's progress after this approval."""

    request_id: str
    approver: str
    approvals_received: int
    approvals_required: int
    status: str


class RejectionOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``approval.reject``: who rejected the request; ``status`` is ``rejected``."""

    request_id: str
    rejected_by: str
    status: str


class DeadLetterList(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``<service>.list_dead_letters``: newest first."""

    items: list[DeadLetterView]


class ClassList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EnvironmentClass]


class QuotaProfileList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[QuotaProfile]


class PolicyPackList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PolicyPack]


class ClassUpsert(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``policy.upsert_class``: ``revision`` travels in ``class.upserted``."""

    created: bool
    revision: int
    environment_class: EnvironmentClass = msgspec.field(name="class")


class QuotaProfileUpsert(msgspec.Struct, frozen=True, kw_only=True):
    created: bool
    profile: QuotaProfile


class PolicyPackUpsert(msgspec.Struct, frozen=True, kw_only=True):
    created: bool
    pack: PolicyPack
