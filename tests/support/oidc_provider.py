"""A small OpenID Connect provider on a real loopback socket: discovery, JWKS, key rotation,
and the sign-in grants a command-line client uses.

It serves what the gateway reads (``/.well-known/openid-configuration`` and the JWKS) from
keys the test controls, and mints tokens with them the way an identity provider would
(RS256/ES256 with a ``kid``). Tests rotate keys, take the provider down and count how
often the gateway fetched the key set.

For ``platformctl login`` it is also the authorization server of one public client
(``client_id``, no secret): the device authorization grant (RFC 8628; the user "signs in"
by opening the verification URL, ``&consent=deny`` refuses), the authorization code grant
with PKCE S256 (``/authorize`` signs the user in at once and redirects to the loopback
redirect URI, RFC 8252), refresh tokens (rotated on each use; a used one presented again
ends the whole sign-in, as providers that detect reuse do) and revocation (RFC 7009).
Whoever signs in gets the claims in ``user``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.http import serve


@dataclass
class SigningKey:
    kid: str
    private_key: Any
    algorithm: str

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private_key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg=self.algorithm)
        return jwk

    def public_pem(self) -> bytes:
        return bytes(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def rsa_key(kid: str | None = None) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid or f"rsa-{uuid.uuid4().hex[:8]}", private, "RS256")


def ec_key(kid: str | None = None) -> SigningKey:
    return SigningKey(kid or f"ec-{uuid.uuid4().hex[:8]}", ec.generate_private_key(ec.SECP256R1()), "ES256")


@dataclass
class DeviceGrant:
    user_code: str
    expires_at: float
    # None until the user answers at the verification URL.
    approved: bool | None = None


@dataclass
class CodeGrant:
    redirect_uri: str
    code_challenge: str


@dataclass
class Provider:
    """State of the running provider; change it between requests."""

    issuer: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    algorithms: list[str] = field(default_factory=lambda: ["RS256"])
    up: bool = True
    # Seconds to hang before answering: a provider that accepts connections but stalls.
    stall_seconds: float = 0.0
    jwks_fetches: int = 0
    discovery_fetches: int = 0
    client_id: str = "platformctl"
    user: dict[str, Any] = field(
        default_factory=lambda: {"sub": "u-42", "email": "olivia@example.com", "role": "requester"}
    )
    access_token_ttl: int = 600
    device_interval: int = 1
    device_code_ttl: int = 60
    # The next this many device-code polls are answered slow_down.
    slow_down_polls: int = 0
    devices: dict[str, DeviceGrant] = field(default_factory=dict)
    codes: dict[str, CodeGrant] = field(default_factory=dict)
    # The live refresh tokens and who signed in; each token ever issued and its sign-in.
    refresh_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    sign_ins: dict[str, str] = field(default_factory=dict)
    # Seconds a refresh takes: long enough for two clients to be refreshing at once.
    refresh_delay_seconds: float = 0.0
    # What happened, for the tests to check: each grant type that got tokens, the
    # monotonic time of each device-code poll, each revoked token.
    grants: list[str] = field(default_factory=list)
    polls: list[float] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def rotate(self) -> SigningKey:
        """Replace every published key by a new one (the old ones stop verifying)."""
        new = rsa_key()
        self.keys = [new]
        return new

    def token(
        self,
        key: SigningKey | None = None,
        *,
        audience: str = "platform",
        ttl: int = 600,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "sub": "u-42",
            "email": "olivia@example.com",
            "role": "requester",
            "iat": now,
            "exp": now + ttl,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(
            payload, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, **(headers or {})}
        )

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": self.algorithms,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "device_authorization_endpoint": f"{self.issuer}/device_authorization",
            "revocation_endpoint": f"{self.issuer}/revoke",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "grant_types_supported": [
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
            ],
            "code_challenge_methods_supported": ["S256"],
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        query = dict(parse_qsl(scope["query_string"].decode()))
        form = dict(parse_qsl((await _body(receive)).decode()))
        if form.get("grant_type") == "refresh_token":
            await asyncio.sleep(self.refresh_delay_seconds)
        status, body, headers = self._answer(scope["method"], scope["path"], query, form)
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    *((name.encode(), value.encode()) for name, value in headers.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _answer(
        self, method: str, path: str, query: dict[str, str], form: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not self.up:
            return 503, {"error": "down"}, {}
        if path == "/.well-known/openid-configuration":
            self.discovery_fetches += 1
            return 200, self.discovery(), {}
        if path == "/jwks":
            self.jwks_fetches += 1
            return 200, {"keys": [key.public_jwk() for key in self.keys]}, {}
        if path == "/authorize" and method == "GET":
            return self._authorize(query)
        if path == "/device" and method == "GET":
            return self._user_answers_device(query)
        posts = {
            "/device_authorization": self._device_authorization,
            "/token": self._token_request,
            "/revoke": self._revoke,
        }
        if path in posts and method == "POST":
            if form.get("client_id") != self.client_id:
                return 401, {"error": "invalid_client"}, {}
            status, body = posts[path](form)
            return status, body, {}
        return 404, {"error": "not found"}, {}

    def _device_authorization(self, _: dict[str, str]) -> tuple[int, dict[str, Any]]:
        device_code, user_code = secrets.token_urlsafe(24), secrets.token_hex(4).upper()
        self.devices[device_code] = DeviceGrant(user_code, time.time() + self.device_code_ttl)
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{self.issuer}/device",
            "verification_uri_complete": f"{self.issuer}/device?{urlencode({'user_code': user_code})}",
            "expires_in": self.device_code_ttl,
            "interval": self.device_interval,
        }

    def _user_answers_device(self, query: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        for grant in self.devices.values():
            if grant.user_code == query.get("user_code"):
                grant.approved = query.get("consent") != "deny"
                return 200, {"signed_in": grant.approved}, {}
        return 404, {"error": "unknown code"}, {}

    def _authorize(self, query: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        redirect_uri = query.get("redirect_uri", "")
        target = urlsplit(redirect_uri)
        if (
            query.get("client_id") != self.client_id
            or query.get("response_type") != "code"
            or query.get("code_challenge_method") != "S256"
            or not query.get("code_challenge")
            or not query.get("state")
            or (target.scheme, target.hostname) != ("http", "127.0.0.1")
        ):
            return 400, {"error": "invalid_request"}, {}
        code = secrets.token_urlsafe(24)
        self.codes[code] = CodeGrant(redirect_uri, query["code_challenge"])
        location = f"{redirect_uri}?{urlencode({'code': code, 'state': query['state']})}"
        return 302, {}, {"location": location}

    def _token_request(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant_type, claims = form.get("grant_type", ""), dict(self.user)
        if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
            refused = self._device_poll(form.get("device_code", ""))
        elif grant_type == "authorization_code":
            refused = self._code_exchange(form)
        elif grant_type == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        else:
            refused = "unsupported_grant_type"
        if refused:
            return 400, {"error": refused}
        self.grants.append(grant_type)
        return 200, self._issue(claims, sign_in=secrets.token_hex(8))

    def _refresh(self, refresh_token: str) -> tuple[int, dict[str, Any]]:
        """Rotation: a refresh token works once, and the new one continues the same sign-in.
        One used before (a copy someone kept) ends that sign-in: all its tokens stop working."""
        claims = self.refresh_tokens.pop(refresh_token, None)
        sign_in = self.sign_ins.get(refresh_token)
        if claims is None or sign_in is None:
            if sign_in is not None:
                self.reused.append(refresh_token)
                for live in [token for token in self.refresh_tokens if self.sign_ins[token] == sign_in]:
                    del self.refresh_tokens[live]
            return 400, {"error": "invalid_grant"}
        self.grants.append("refresh_token")
        return 200, self._issue(claims, sign_in)

    def _device_poll(self, device_code: str) -> str | None:
        """The OAuth error of this poll, or None once the user has signed in."""
        self.polls.append(time.monotonic())
        grant = self.devices.get(device_code)
        if grant is None:
            return "invalid_grant"
        if self.slow_down_polls:
            self.slow_down_polls -= 1
            return "slow_down"
        if time.time() > grant.expires_at:
            return "expired_token"
        if grant.approved is None:
            return "authorization_pending"
        del self.devices[device_code]
        return None if grant.approved else "access_denied"

    def _code_exchange(self, form: dict[str, str]) -> str | None:
        grant = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if (
            grant is None
            or grant.redirect_uri != form.get("redirect_uri")
            or grant.code_challenge != challenge
        ):
            return "invalid_grant"
        return None

    def _issue(self, claims: dict[str, Any], sign_in: str) -> dict[str, Any]:
        refresh_token = secrets.token_urlsafe(24)
        self.refresh_tokens[refresh_token] = claims
        self.sign_ins[refresh_token] = sign_in
        return {
            "access_token": self.token(ttl=self.access_token_ttl, **claims),
            "id_token": self.token(audience=self.client_id, ttl=self.access_token_ttl, **claims),
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "refresh_token": refresh_token,
            "scope": "openid profile email offline_access",
        }

    def _revoke(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.refresh_tokens.pop(form.get("token", ""), None) is not None:
            self.revoked.append(form["token"])
        return 200, {}


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


@contextlib.asynccontextmanager
async def oidc_provider() -> AsyncIterator[Provider]:
    provider = Provider(keys=[rsa_key()])
    async with serve(provider) as base_url:
        provider.issuer = base_url
        yield provider
