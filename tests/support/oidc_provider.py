"""A small OpenID Connect provider on a real loopback socket: discovery, JWKS, key rotation.

It serves what the gateway reads (``/.well-known/openid-configuration`` and the JWKS) from
keys the test controls, and mints tokens with them the way an identity provider would
(RS256/ES256 with a ``kid``). Tests rotate keys, take the provider down and count how
often the gateway fetched the key set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

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
        path = scope["path"]
        status, body = 404, {"error": "not found"}
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        if not self.up:
            status, body = 503, {"error": "down"}
        elif path == "/.well-known/openid-configuration":
            self.discovery_fetches += 1
            status, body = (
                200,
                {
                    "issuer": self.issuer,
                    "jwks_uri": f"{self.issuer}/jwks",
                    "id_token_signing_alg_values_supported": self.algorithms,
                    "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                },
            )
        elif path == "/jwks":
            self.jwks_fetches += 1
            status, body = 200, {"keys": [key.public_jwk() for key in self.keys]}
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def oidc_provider() -> AsyncIterator[Provider]:
    provider = Provider(keys=[rsa_key()])
    async with serve(provider) as base_url:
        provider.issuer = base_url
        yield provider
