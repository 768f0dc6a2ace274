"""Who is calling, decided once per request; what they may do, decided by each route's guard.

:class:`AuthenticationMiddleware` verifies the bearer token of every route that documents
the bearer scheme (``security=SECURITY``), so the OpenAPI document and the enforcement
cannot disagree, and stores the caller as ``request.user``. Guards built by
:func:`requires` only authorize: role x action (``domain.roles``) and, for team-scoped
routes, the presence of a teams claim. A refused token is answered by the middleware in
the usual error body; the route's handler, guards and parameter parsing never run.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Guard, Receive, Scope, Send

from services.gateway.adapters.tokens import Authenticator
from services.gateway.domain.errors import HttpError, PermissionDenied
from services.gateway.domain.rate_limits import RateLimits
from services.gateway.domain.roles import (
    ACTION_PHRASES,
    Action,
    allowed_roles,
    is_allowed,
    lacks_team_scope,
    who_can,
)
from services.gateway.entrypoints.dependencies import caller_of, runtime_of
from services.gateway.entrypoints.errors import send_error

SECURITY_SCHEME = "BearerAuth"
# The methods that change something: what a caller's rate limit counts.
CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SECURITY: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]


def _is_public(scope: Scope) -> bool:
    """Routes that do not document the bearer scheme (health, metrics, the API reference),
    and OPTIONS on any path: Litestar answers it with the ``Allow`` header alone (nothing
    the public OpenAPI document does not say), and CORS preflights carry no credentials
    by design. Hence guards belong on routes, not controllers (a controller's guards
    would run on OPTIONS too, and refuse it for want of a caller)."""
    if scope.get("method") == "OPTIONS":
        return True
    handler = scope.get("route_handler")
    return not isinstance(handler, HTTPRouteHandler) or SECURITY[0] not in handler.resolve_security()


class AuthenticationMiddleware(ASGIMiddleware):
    """Verifies the token once and sets ``scope["user"]`` to the :class:`Principal`; then
    counts a change against its subject's rate limit (reads are not limited here)."""

    scopes = (ScopeType.HTTP,)
    should_bypass_for_scope = staticmethod(_is_public)

    def __init__(self, authenticator: Authenticator, rate_limits: RateLimits) -> None:
        self.authenticator = authenticator
        self.rate_limits = rate_limits

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        authorization = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"), None
        )
        try:
            principal = await self.authenticator.authenticate(authorization)
        except HttpError as refused:
            # Answered here, inside the telemetry and deadline middleware, so the refusal
            # is counted and traced with its real status.
            await send_error(scope, send, refused)
            return
        if scope.get("method") in CHANGING_METHODS:
            try:
                self.rate_limits.count_change(principal.subject, principal.actor)
            except HttpError as refused:
                await send_error(scope, send, refused)
                return
        scope["user"] = principal
        await next_app(scope, receive, send)


def requires(action: Action, *, team_scoped: bool = False) -> Guard:
    """Guard: the caller's role may perform ``action``.

    ``team_scoped`` routes (everything about environment requests and teams) also refuse
    non-admin tokens without a teams claim when team scoping is enforced. The owning
    service then limits the caller to the teams in its token.
    """

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = caller_of(connection)
        if not is_allowed(principal.role, action):
            allowed = allowed_roles(action)
            raise PermissionDenied(
                f"the {principal.role.value} role cannot {ACTION_PHRASES[action]}; {who_can(allowed)}",
                details={"role": principal.role.value, "allowed_roles": [role.value for role in allowed]},
            )
        settings = runtime_of(connection).settings
        if team_scoped and lacks_team_scope(
            principal.role, principal.teams, enforced=settings.team_scope_enforced
        ):
            raise PermissionDenied(
                f"your token does not say which teams you act for (it has no {settings.teams_claim} "
                "claim), and this API requires that",
                details={"claim": settings.teams_claim},
            )

    return guard
