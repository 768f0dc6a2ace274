"""Signing in with the identity provider the API names: discovery, the device authorization
grant (RFC 8628), refreshing and revoking tokens. The browser flow is in
:mod:`services.tools.platformctl.browser_login`.

Only the provider's standard endpoints are used, as a public client (no client secret):
what the gateway publishes at ``GET /v1/auth/config`` and the provider at
``/.well-known/openid-configuration`` is all a sign-in needs.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from services.tools.platformctl.client import ApiClient, CliError, redact
from services.tools.platformctl.exit_codes import EXIT_API, EXIT_AUTH

AUTH_CONFIG = "/v1/auth/config"
# offline_access asks for a refresh token, so a session outlives one access token.
SCOPES = "openid profile email offline_access"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HTTP_TIMEOUT_SECONDS = 30.0
# RFC 8628 3.5: without an interval the client waits 5 s; after slow_down, 5 s more each time.
DEFAULT_POLL_SECONDS = 5.0
SLOW_DOWN_SECONDS = 5.0
# Whatever the provider asks: never hammering it, never waiting minutes for one poll.
MIN_POLL_SECONDS = 1.0
MAX_POLL_SECONDS = 60.0
# How long a device code lives when the provider does not say.
DEFAULT_CODE_SECONDS = 600.0

Note = Callable[[str], None]


class TokenError(CliError):
    """The provider answered a token request with an OAuth error (``authorization_pending``,
    ``invalid_grant``, ...)."""

    def __init__(self, error: str, description: str | None) -> None:
        detail = f": {description}" if description else ""
        super().__init__(f"the identity provider refused: {error}{detail}", exit_code=EXIT_AUTH)
        self.error = error


@dataclass(frozen=True)
class Provider:
    """The identity provider as one API signs in with it."""

    issuer: str
    client_id: str
    audience: str | None
    token_endpoint: str
    device_authorization_endpoint: str | None = None
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None


def discover(api: ApiClient) -> Provider:
    """The API's issuer, audience and client id, and the issuer's endpoints."""
    published = api.get_public(AUTH_CONFIG)
    where = redact(api.base_url)
    if not isinstance(published, dict) or not published.get("issuer"):
        raise CliError(
            f"the API at {where} names no identity provider to sign in with "
            "(it takes development tokens: 'platformctl token mint')"
        )
    if not published.get("client_id"):
        raise CliError(
            f"the API at {where} names no client to sign in as (its PLATFORM_OIDC_CLIENT_ID is not set)"
        )
    issuer = str(published["issuer"])
    require_https(issuer, "the identity provider")
    document = _provider_json("GET", f"{issuer.rstrip('/')}/.well-known/openid-configuration", issuer)
    if document.get("issuer") != issuer:
        # A discovery document for another issuer would hand our codes to someone else.
        raise CliError(f"the identity provider's discovery document names another issuer than {issuer}")
    if not isinstance(document.get("token_endpoint"), str):
        raise CliError(f"the identity provider at {issuer} has no token endpoint")
    provider = Provider(
        issuer=issuer,
        client_id=str(published["client_id"]),
        audience=published.get("audience"),
        token_endpoint=document["token_endpoint"],
        device_authorization_endpoint=document.get("device_authorization_endpoint"),
        authorization_endpoint=document.get("authorization_endpoint"),
        revocation_endpoint=document.get("revocation_endpoint"),
    )
    for endpoint in (
        provider.token_endpoint,
        provider.device_authorization_endpoint,
        provider.authorization_endpoint,
        provider.revocation_endpoint,
    ):
        if endpoint is not None:
            require_https(endpoint, "the identity provider's endpoint")
    return provider


def require_https(url: str, what: str, exit_code: int = EXIT_API) -> None:
    """Codes, tokens and sign-ins travel over https only; plain http only to this machine
    (a development gateway or provider on loopback), where nobody on the network sees it.
    ``exit_code``: an API that names a plain http provider is the API's fault (3); a plain
    http URL the user typed is a usage error."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
        return
    raise CliError(
        f"{what} {redact(url)} is not https: platformctl signs in over https only "
        "(plain http only to this machine: localhost, 127.0.0.1, ::1)",
        exit_code=exit_code,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def device_login(provider: Provider, note: Note) -> dict[str, Any]:
    """RFC 8628: show the code, then poll the token endpoint until the user has signed in
    somewhere else (a phone, another machine's browser). Returns the token response."""
    if not provider.device_authorization_endpoint:
        raise CliError("the identity provider offers no device sign-in; use 'platformctl login --browser'")
    grant = _provider_json(
        "POST", provider.device_authorization_endpoint, provider.issuer, form=_request_form(provider)
    )
    if not all(isinstance(grant.get(key), str) for key in ("device_code", "user_code", "verification_uri")):
        raise CliError("the identity provider's device authorization answer lacks a code or a URL")
    note(f"To sign in, open {grant['verification_uri']} and enter the code {grant['user_code']}")
    if isinstance(grant.get("verification_uri_complete"), str):
        note(f"(or open {grant['verification_uri_complete']})")
    note("Waiting for the sign-in to complete...")
    interval = _poll_interval(_seconds(grant.get("interval"), DEFAULT_POLL_SECONDS))
    deadline = time.monotonic() + _seconds(grant.get("expires_in"), DEFAULT_CODE_SECONDS)
    form = {
        "grant_type": DEVICE_CODE_GRANT,
        "device_code": grant["device_code"],
        "client_id": provider.client_id,
    }
    # The last poll is when the code expires, however long the interval.
    while (remaining := deadline - time.monotonic()) > 0:
        time.sleep(min(interval, remaining))
        try:
            return token_request(provider.token_endpoint, provider.issuer, form)
        except TokenError as exc:
            if exc.error == "slow_down":
                interval = _poll_interval(interval + SLOW_DOWN_SECONDS)
            elif exc.error == "access_denied":
                raise CliError("the sign-in was denied", exit_code=EXIT_AUTH) from None
            elif exc.error == "expired_token":
                break
            elif exc.error != "authorization_pending":
                raise
    raise CliError(
        "the code expired before the sign-in was completed; run 'platformctl login' again",
        exit_code=EXIT_AUTH,
    )


def _seconds(value: Any, default: float) -> float:
    """A number of seconds the provider sent; ``default`` when it sent none (or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def _poll_interval(seconds: float) -> float:
    return min(max(seconds, MIN_POLL_SECONDS), MAX_POLL_SECONDS)


def refresh(provider: Provider, refresh_token: str) -> dict[str, Any]:
    return token_request(
        provider.token_endpoint,
        provider.issuer,
        {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": provider.client_id},
    )


def revoke(provider: Provider, token: str) -> None:
    """RFC 7009: the provider forgets ``token`` (a refresh token), if it offers revocation."""
    if provider.revocation_endpoint:
        _provider_json(
            "POST",
            provider.revocation_endpoint,
            provider.issuer,
            form={"token": token, "token_type_hint": "refresh_token", "client_id": provider.client_id},
        )


def token_request(endpoint: str, issuer: str, form: dict[str, str]) -> dict[str, Any]:
    """One call to the token endpoint; the OAuth error of a refusal as :class:`TokenError`."""
    answer = _provider_json("POST", endpoint, issuer, form=form)
    if not isinstance(answer.get("access_token"), str):
        raise CliError("the identity provider's token answer has no access_token")
    return answer


def bearer_token(answer: dict[str, Any], audience: str | None, now: float) -> tuple[str, float | None]:
    """The token to send to the API, and when it expires (epoch seconds).

    The access token, unless it is not meant for the API and the ID token is: providers
    that cannot issue JWT access tokens for an API sign in with the ID token, whose
    audience is the client id (the gateway's audience is then set to it). The gateway
    checks the signature and the audience itself; this only picks which one to send.
    """
    access, identity = answer["access_token"], answer.get("id_token")
    use_identity = (
        audience is not None
        and isinstance(identity, str)
        and not _meant_for(access, audience)
        and _meant_for(identity, audience)
    )
    token = identity if use_identity and isinstance(identity, str) else access
    if token == access and isinstance(answer.get("expires_in"), int | float):
        return token, now + float(answer["expires_in"])
    return token, expiry_of(token)


def expiry_of(token: str) -> float | None:
    """The ``exp`` of a JWT (not verified: only to know when to refresh); None otherwise."""
    claims = _unverified_claims(token)
    exp = claims.get("exp") if claims else None
    return float(exp) if isinstance(exp, int | float) else None


def _meant_for(token: str, audience: str) -> bool:
    claims = _unverified_claims(token)
    aud = claims.get("aud") if claims else None
    return audience == aud or (isinstance(aud, list) and audience in aud)


def _unverified_claims(token: str) -> dict[str, Any] | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def _request_form(provider: Provider) -> dict[str, str]:
    form = {"client_id": provider.client_id, "scope": SCOPES}
    if provider.audience:
        # Providers that issue access tokens per API (Auth0 and others) need to be told which;
        # the others ignore parameters they do not know (RFC 6749 3.1).
        form["audience"] = provider.audience
    return form


def _provider_json(
    method: str, url: str, issuer: str, *, form: dict[str, str] | None = None
) -> dict[str, Any]:
    try:
        response = httpx.request(
            method, url, data=form, headers={"Accept": "application/json"}, timeout=HTTP_TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the identity provider at {issuer} ({type(exc).__name__})") from None
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = None
    if isinstance(body, dict) and response.status_code >= 400 and isinstance(body.get("error"), str):
        raise TokenError(body["error"], body.get("error_description"))
    if response.status_code >= 400:
        raise CliError(f"the identity provider at {issuer} answered HTTP {response.status_code}")
    if not isinstance(body, dict):
        raise CliError(f"the identity provider at {issuer} sent a reply that is not a JSON object")
    return body
