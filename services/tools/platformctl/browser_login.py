"""``platformctl login --browser``: the authorization code flow with PKCE (RFC 7636) and a
loopback redirect (RFC 8252 7.3), as native apps sign in.

platformctl listens on ``127.0.0.1`` on a port the system picks, for one request only
(the provider's redirect back), and opens the sign-in page with :mod:`webbrowser`, which
honours ``BROWSER``. The URL is printed too, for a machine without a browser: open it
anywhere that can reach this machine's loopback (an SSH tunnel), or use the device flow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import threading
import webbrowser
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from services.tools.platformctl.client import CliError
from services.tools.platformctl.exit_codes import EXIT_AUTH
from services.tools.platformctl.oidc import SCOPES, Note, Provider, token_request

CALLBACK_PATH = "/callback"
WAIT_SECONDS = 300.0


def code_challenge(verifier: str) -> str:
    """S256: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class Redirect:
    """What the provider's redirect to the loopback brought: a code, or an error."""

    state: str
    code: str | None = None
    error: str | None = None
    arrived: threading.Event = field(default_factory=threading.Event)


def browser_login(provider: Provider, note: Note, wait_seconds: float = WAIT_SECONDS) -> dict[str, Any]:
    """Send the user to the provider's sign-in page and trade the code it redirects back
    with for tokens. Returns the token response."""
    if not provider.authorization_endpoint:
        raise CliError("the identity provider offers no browser sign-in; use 'platformctl login'")
    # The state ties the redirect to this login (a page cannot inject its own code); the
    # verifier makes a code useless to anyone who sees it without also knowing the verifier.
    redirect = Redirect(state=secrets.token_urlsafe(32))
    verifier = secrets.token_urlsafe(64)
    with loopback(redirect) as redirect_uri:
        query = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": redirect_uri,
            "scope": SCOPES,
            "state": redirect.state,
            "code_challenge": code_challenge(verifier),
            "code_challenge_method": "S256",
            **({"audience": provider.audience} if provider.audience else {}),
        }
        separator = "&" if urlsplit(provider.authorization_endpoint).query else "?"
        url = f"{provider.authorization_endpoint}{separator}{urlencode(query)}"
        note(f"Opening the sign-in page in your browser; if it does not open, visit:\n{url}")
        webbrowser.open(url)
        if not redirect.arrived.wait(wait_seconds):
            raise CliError(
                "the browser did not come back from the sign-in page in time; run login again",
                exit_code=EXIT_AUTH,
            )
    if redirect.error or not redirect.code:
        raise CliError(
            f"the sign-in failed: {redirect.error or 'no code in the redirect'}", exit_code=EXIT_AUTH
        )
    return token_request(
        provider.token_endpoint,
        provider.issuer,
        {
            "grant_type": "authorization_code",
            "code": redirect.code,
            "redirect_uri": redirect_uri,
            "client_id": provider.client_id,
            "code_verifier": verifier,
        },
    )


@contextmanager
def loopback(redirect: Redirect) -> Iterator[str]:
    """Listen on 127.0.0.1 (never all interfaces) until the block ends; yields the redirect URI."""
    server = HTTPServer(("127.0.0.1", 0), _callback_handler(redirect))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{CALLBACK_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def _callback_handler(redirect: Redirect) -> type[BaseHTTPRequestHandler]:
    class Callback(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            if parts.path != CALLBACK_PATH:
                self._answer(404, "Not found.")
            elif redirect.arrived.is_set() or not hmac.compare_digest(query.get("state", ""), redirect.state):
                # Not the redirect of this login (another page, a replay): ignored, keep waiting.
                self._answer(400, "This is not the sign-in platformctl is waiting for.")
            else:
                redirect.code, redirect.error = query.get("code"), query.get("error")
                self._answer(
                    200 if redirect.code else 400,
                    "Signed in: you can close this tab and go back to the terminal."
                    if redirect.code
                    else f"The sign-in failed: {redirect.error}.",
                )
                redirect.arrived.set()

        def _answer(self, status: int, text: str) -> None:
            body = f"<!doctype html><title>platformctl</title><p>{html.escape(text)}</p>\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """No access log on the terminal."""

    return Callback
