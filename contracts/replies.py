"""Replies of the RPC verbs that are envelopes around the contracts' models.

The services build them and the gateway decodes them (:data:`contracts.rpc.RPC_VERBS` pairs
each verb with its reply type), so both sides share one definition and the published
schemas describe what really crosses the bus. The items are :mod:`contracts.models` types.
"""

from __future__ import annotations

from typing import Literal

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
    """Reply of ``intake.list_events``: one request's events, oldest first; pass ``next_cursor``
    as ``after`` for the next page (null on the last page)."""

    items: list[TimelineEntry]
    # Added (optional): absent from intakes that answered the whole timeline at once.
    next_cursor: str | None = None


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


ReplayAction = Literal["re-execute", "skip"]


class ReplayedType(msgspec.Struct, frozen=True, kw_only=True):
    """One event type of one durable consumer in a replay: how many of its messages and what
    the replay does with them (``re-execute`` the handler, or ``skip`` it), and why."""

    consumer: str
    event_type: str
    messages: int
    action: ReplayAction
    reason: str


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``<service>.replay_events``: what was (or, on a dry run, would be) replayed.

    The stream is read from ``from_sequence`` through ``to_sequence`` (the stream's last
    message when the replay began). A replay reads a bounded page per call: ``next_sequence``
    is where the next call starts (same ``to_sequence``), null once the range is done.
    Re-executed messages are handed to the consumers, which handle them shortly afterwards.
    """

    service: str
    dry_run: bool
    from_sequence: int | None
    to_sequence: int
    next_sequence: int | None = None
    re_executed: int = 0
    skipped: int = 0
    types: list[ReplayedType] = []


class ClassList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EnvironmentClass]


class QuotaProfileList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[QuotaProfile]


class PolicyPackList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PolicyPack]


class ClassUpsert(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``policy.upsert_class``: ``revision`` travels in ``class.upserted``.

    ``unchanged``: the class was stored with this content already; nothing was written, the
    revision is the one it had and no ``class.upserted`` was published.
    """

    created: bool
    revision: int
    environment_class: EnvironmentClass = msgspec.field(name="class")
    unchanged: bool = False


class QuotaProfileUpsert(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``policy.upsert_quota_profile``; ``unchanged`` as in :class:`ClassUpsert`."""

    created: bool
    profile: QuotaProfile
    unchanged: bool = False


class PolicyPackUpsert(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``policy.upsert_policy_pack``; ``unchanged`` as in :class:`ClassUpsert`."""

    created: bool
    pack: PolicyPack
    unchanged: bool = False
