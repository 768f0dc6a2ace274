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

from contracts.models import EnvironmentClass, EnvironmentRequestView, TimelineEntry


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
