"""Request/reply messages between the gateway and the services.

Subject: ``<rpc prefix>.<service>.<verb>``. Reply: ``{"ok": true, "data": ...}`` or
``{"ok": false, "error": {"code", "message", "details"}}`` with ``code`` one of
:data:`ERROR_CODES`.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from contracts.models import Actor

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


class GetClass(msgspec.Struct, frozen=True, kw_only=True):
    """policy.get_class."""

    name: str


class ListClasses(msgspec.Struct, frozen=True, kw_only=True):
    """policy.list_classes."""


class Ping(msgspec.Struct, frozen=True, kw_only=True):
    """<service>.ping: readiness of the service behind the endpoint."""


RPC_MESSAGES: dict[str, type[Any]] = {
    "intake.create_request": CreateRequest,
    "intake.get_request": GetRequest,
    "intake.list_requests": ListRequests,
    "intake.list_events": GetRequest,
    "policy.list_classes": ListClasses,
    "policy.get_class": GetClass,
}
