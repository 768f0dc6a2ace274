"""``GET /v1/auth/config``: how to sign in to this API, published without a token.

``platformctl login --api URL`` reads it before it has any token: the issuer to discover,
the audience its tokens must carry and the public client to sign in as. It also tells
``platformctl token mint`` whether development tokens are any use here. Nothing in it is
secret: the issuer and client id are what every login page shows anyway.
"""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from services.gateway.entrypoints.openapi import error_spec
from services.gateway.settings import GatewaySettings


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Sign-in settings of the API (``null`` where the gateway has no identity provider)."""

    issuer: str | None
    audience: str | None
    client_id: str | None
    strict_production: bool
    development_tokens: bool


class AuthConfigController(Controller):
    path = "/v1/auth"
    tags = ["identity"]

    @get(
        "/config",
        summary="How to sign in (no token needed)",
        sync_to_thread=False,
        # No caller to refuse; a query value with control characters is still a 400.
        responses={400: error_spec(400)},
    )
    def get_config(self, settings: NamedDependency[GatewaySettings]) -> AuthConfig:
        """The OIDC issuer, the audience tokens must carry and the public client id to sign in
        with (`platformctl login` needs nothing else); whether the gateway runs in strict
        production mode and whether it accepts development (static secret) tokens."""
        return AuthConfig(
            issuer=settings.oidc_issuer_url,
            audience=settings.oidc_audience,
            client_id=settings.oidc_client_id,
            strict_production=settings.is_strict,
            development_tokens=settings.jwt_secret is not None,
        )
