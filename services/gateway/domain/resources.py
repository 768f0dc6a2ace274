"""The API's representations that only the gateway serves: errors, identity, health and
dead letters gathered from every service.

What the services reply with (``CreateOutcome``, ``RequestPage``, ``Timeline``...) is
defined once in :mod:`contracts.replies` and re-exported here for the HTTP layer; the
OpenAPI document is generated from the same types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from contracts.models import DeadLetterView
from contracts.replies import (
    ApprovalOutcome,
    ClassList,
    CreateOutcome,
    EventFeed,
    RequestPage,
    Timeline,
)

__all__ = [
    "ApprovalOutcome",
    "ClassList",
    "CreateOutcome",
    "DeadLetter",
    "DeadLetterPage",
    "DependencyStatus",
    "ErrorBody",
    "EventFeed",
    "Health",
    "PlatformStatus",
    "Readiness",
    "RequestPage",
    "Timeline",
    "WhoAmI",
]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response: an RFC 9457 problem (``application/problem+json``).

    ``error`` (the message), ``code`` (machine-readable) and ``details`` (null or, for
    validation errors, a list of ``{"field", "message"}`` objects naming each failing
    field) are the members clients have always read. ``type`` is ``/problems/<code>``
    (relative to the API's URL), ``title`` a fixed summary of the code, ``status`` the
    HTTP status, ``detail`` the message again and ``instance`` the request's path."""

    error: str
    code: str
    details: Any = None
    type: str
    title: str
    status: int
    detail: str
    instance: str


class WhoAmI(msgspec.Struct, frozen=True, kw_only=True):
    """The caller as the server resolved it from the token."""

    actor: str
    role: str
    teams: list[str] | None
    subject: str


class DeadLetter(DeadLetterView, frozen=True, kw_only=True):
    """An event a consumer gave up on. ``service`` names where it is kept (and replayed)."""

    service: str | None = None


class DeadLetterPage(msgspec.Struct, frozen=True, kw_only=True):
    """Dead letters newest first; ``unavailable`` lists services that did not answer."""

    items: list[DeadLetter]
    unavailable: list[str] = []


class Health(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``status`` is ``ok``, or ``unhealthy`` with ``failing`` naming each wedged part of the
    process (``event_loop``, ``nats``, ``dependency_checks``) and what is wrong with it."""

    status: str
    failing: dict[str, str] | None = None


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """``status`` is ``ready`` or ``not_ready``; ``checks`` maps each dependency to ``ok`` or
    a short reason that never names hosts or addresses."""

    status: str
    checks: dict[str, str]


class DependencyStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One dependency as the process that checks it last saw it.

    ``reported_by`` is ``gateway`` for what the gateway checks itself (the identity
    provider; each backend as ``service/<name>``: answering ``ping`` and ready) and the
    backend's name for what that backend checks (``gitops_remote``, ``kubernetes/<region>``).
    ``state`` is ``up``, ``down`` or ``unknown`` (not checked yet); ``since`` is when it
    entered that state as far as the reporter knows; ``last_error`` never names a host, URL
    or secret.
    """

    name: str
    reported_by: str
    state: str
    since: datetime | None = None
    last_error: str | None = None
    last_success_at: datetime | None = None
    checked_at: datetime | None = None


class PlatformStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/status``: ``ok`` when every dependency is up, else ``degraded``. A degraded
    platform keeps taking requests; work that needs a dependency that is down waits."""

    status: str
    dependencies: list[DependencyStatus]
