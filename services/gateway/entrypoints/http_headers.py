"""Headers at the gateway's edge: security headers on every response, and request headers
that must come once.

The security headers are added by a ``before_send`` hook of the app, so they are on every
response the app sends (routes, errors, 404s of the router, the API reference), not only on
responses of matched routes. The Content-Security-Policy fits the API reference page
(:mod:`.api_reference`): scripts, styles, images and fetches from the gateway itself only,
no inline script, no framing; JSON responses are no documents, so it costs them nothing.

A credential header sent twice is refused (400 naming it) before authentication: which of
two ``Authorization`` headers counts would otherwise be up to whichever component reads it
first, and a proxy in front may have checked the other one.
"""

from __future__ import annotations

from typing import Final

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.domain.errors import BadRequest
from services.gateway.entrypoints.errors import send_error

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        # Swagger UI sets element styles at run time; no script can come of a style.
        "style-src 'self' 'unsafe-inline'",
        # The stylesheet's icons are data: URLs.
        "img-src 'self' data:",
        "font-src 'self'",
        # The page fetches the OpenAPI document and "Try it out" calls the API: same origin.
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # For browsers without CSP frame-ancestors.
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Request headers a request may carry once: the credentials the gateway checks.
SINGLE_VALUED: Final = ("Authorization", "X-Platform-Approval-Signature")


async def add_security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the security headers on the start of every HTTP response."""
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value


class SingleValuedHeadersMiddleware(ASGIMiddleware):
    """Answers 400 naming the header when a request repeats one of :data:`SINGLE_VALUED`."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        repeated = repeated_headers(scope)
        if repeated:
            details = [{"field": name, "message": "must be sent once"} for name in repeated]
            error = BadRequest(f"header sent more than once: {', '.join(repeated)}", details)
            await send_error(scope, send, error)
            return
        await next_app(scope, receive, send)


def repeated_headers(scope: Scope) -> list[str]:
    """Those of :data:`SINGLE_VALUED` that occur more than once in the request (names as documented)."""
    names = [name.lower() for name, _ in scope.get("headers", [])]
    return [header for header in SINGLE_VALUED if names.count(header.lower().encode("latin-1")) > 1]
