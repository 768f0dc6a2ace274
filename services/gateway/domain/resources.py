"""The API's representations: the shapes the services reply with and the gateway serves.

The items themselves are the contracts' models (``EnvironmentClass``,
``EnvironmentRequestView``, ``TimelineEntry``); these Structs are the envelopes around
them. Decoding every reply into them means a malformed reply becomes a clean 500 at the
gateway instead of a half-valid body for the client, and the OpenAPI document is
generated from the same types.
"""

from __future__ import annotations

from typing import Any

import msgspec

from contracts.models import DeadLetterView, EnvironmentClass, EnvironmentRequestView, TimelineEntry


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response. ``details`` is null or, for validation errors, a list of
    ``{"field", "message"}`` objects naming each failing field."""

    error: str
    code: str
    details: Any = None


class WhoAmI(msgspec.Struct, frozen=True, kw_only=True):
    """The caller as the server resolved it from the token."""

    actor: str
    role: str
    teams: list[str] | None
    subject: str


class ClassList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EnvironmentClass]


class RequestPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EnvironmentRequestView]
    next_cursor: str | None = None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
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


class DeadLetter(DeadLetterView, frozen=True, kw_only=True):
    """An event a consumer gave up on. ``service`` names where it is kept (and replayed)."""

    service: str | None = None


class DeadLetterPage(msgspec.Struct, frozen=True, kw_only=True):
    """Dead letters newest first; ``unavailable`` lists services that did not answer."""

    items: list[DeadLetter]
    unavailable: list[str] = []


class CreateOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``intake.create_request``: ``created`` is false on an idempotent replay."""

    created: bool
    request: EnvironmentRequestView


class PingReply(msgspec.Struct, frozen=True, kw_only=True):
    """Reply of ``<service>.ping``."""

    service: str
    ready: bool
    checks: dict[str, str] = {}


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """``status`` is ``ready`` or ``not_ready``; ``checks`` maps each dependency to ``ok`` or
    a short reason that never names hosts or addresses."""

    status: str
    checks: dict[str, str]
