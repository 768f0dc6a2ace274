"""Settings of the gateway: the kit's process, telemetry and bus groups, the token group
(JWT and OIDC, below), and its own HTTP settings.

The original names are kept where they still mean something. How the HTTP timeouts map
onto uvicorn, which has no per-request read or write deadline of its own:

- ``PLATFORM_HTTP_READ_TIMEOUT_SECONDS``: how long an idle keep-alive connection is kept
  (uvicorn ``timeout_keep_alive``; Go's server also falls back to the read timeout for
  idle connections) and how long reading a request body may take before a 408.
- ``PLATFORM_HTTP_WRITE_TIMEOUT_SECONDS``: the deadline for producing a response; past it
  the request is cut off with a 503 so a stuck call cannot hold a connection forever.
- ``PLATFORM_HTTP_READ_HEADER_TIMEOUT_SECONDS`` and ``PLATFORM_HTTP_MAX_CONNECTIONS``: what
  uvicorn lacks, added by :mod:`services.gateway.entrypoints.http_server` (a connection
  must send its request headers in time; connections beyond the cap are refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from libs.settings import (
    Bounds,
    BusSettings,
    ProcessSettings,
    Secret,
    SecuritySettings,
    SettingsError,
    TelemetrySettings,
    setting,
    split_address,
)

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# What an OIDC provider's tokens may be signed with: asymmetric only, so a public key can
# never be used as an HMAC secret (algorithm confusion), and never "none".
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")


@dataclass(frozen=True)
class TokenSettings(SecuritySettings):
    """How callers are authenticated (a static HMAC secret, an OIDC provider) and scoped to teams."""

    jwt_secret: Secret | None = setting(
        "PLATFORM_JWT_HS256_SECRET",
        None,
        doc="Shared secret for HS256/384/512 bearer tokens (development and static setups).",
    )
    jwt_algorithms: list[str] = setting(
        "PLATFORM_JWT_ALGORITHMS",
        list(HMAC_ALGORITHMS),
        doc="Algorithms accepted with the static secret (HMAC only), comma separated.",
    )
    jwt_issuer: str | None = setting(
        "PLATFORM_JWT_ISSUER",
        None,
        doc="Required `iss` of static-secret tokens, when set (must be set in strict mode).",
    )
    jwt_audience: str | None = setting(
        "PLATFORM_JWT_AUDIENCE",
        None,
        doc="Required `aud` of static-secret tokens, when set (must be set in strict mode).",
    )
    jwt_leeway_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_JWT_LEEWAY_SECONDS", 30.0, doc="Clock skew tolerated on `exp`, `nbf` and `iat`."
    )
    jwt_max_lifetime_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_JWT_MAX_LIFETIME_SECONDS",
        86400.0,
        doc="Longest a token may be valid, from its `iat` or `nbf` (else now) to its `exp`; "
        "longer-lived tokens are refused (401). Applies to static and OIDC tokens.",
    )
    allow_static_jwt_in_prod: bool = setting(
        "PLATFORM_ALLOW_STATIC_JWT_IN_PROD",
        False,
        doc="Allow the static JWT secret in strict production mode.",
    )
    roles_claim: str = setting(
        "PLATFORM_OIDC_ROLES_CLAIM", "role", doc="Claim holding the role (string or list)."
    )
    actor_claim: str = setting("PLATFORM_OIDC_ACTOR_CLAIM", "email", doc="Claim naming the acting user.")
    subject_claim: str = setting(
        "PLATFORM_OIDC_SUBJECT_CLAIM",
        "sub",
        doc="Claim with the subject; the actor when the actor claim is absent.",
    )
    teams_claim: str = setting(
        "PLATFORM_OIDC_TEAMS_CLAIM",
        "teams",
        doc="Claim listing the caller's teams; absent means unrestricted.",
    )
    oidc_issuer_url: str | None = setting(
        "PLATFORM_OIDC_ISSUER_URL",
        None,
        doc="OIDC issuer; its discovery document and JWKS verify RS/ES/PS-signed tokens.",
    )
    oidc_audience: str | None = setting(
        "PLATFORM_OIDC_AUDIENCE", None, doc="Required `aud` of OIDC tokens (required with the issuer)."
    )
    oidc_client_id: str | None = setting(
        "PLATFORM_OIDC_CLIENT_ID",
        None,
        doc="Public OIDC client id `platformctl login` uses (no secret); shown by GET /v1/auth/config.",
    )
    oidc_algorithms: list[str] = setting(
        "PLATFORM_OIDC_ALGORITHMS",
        list(OIDC_ALGORITHMS),
        doc="Allow-list of OIDC token algorithms; only those the provider also advertises are used.",
    )
    oidc_jwks_cache_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_OIDC_JWKS_CACHE_SECONDS", 300.0, doc="How long the discovery document and JWKS are cached."
    )
    oidc_jwks_min_refresh_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_OIDC_JWKS_MIN_REFRESH_SECONDS",
        10.0,
        doc="Least time between JWKS refetches caused by tokens with an unknown `kid` (key rotation).",
    )
    oidc_http_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_OIDC_HTTP_TIMEOUT_SECONDS", 5.0, doc="Timeout of discovery and JWKS requests."
    )
    enforce_team_scope: bool | None = setting(
        "PLATFORM_ENFORCE_TEAM_SCOPE",
        None,
        doc="Refuse request routes to non-admin tokens without a teams claim (always on in strict mode).",
    )

    @property
    def team_scope_enforced(self) -> bool:
        return self.is_strict or bool(self.enforce_team_scope)

    def validate(self) -> list[str]:
        problems = super().validate()
        if not self.jwt_secret and not self.oidc_issuer_url:
            # Authentication is always on: without a way to verify tokens nothing could be served.
            problems.append(
                "PLATFORM_JWT_HS256_SECRET or PLATFORM_OIDC_ISSUER_URL is required (the API always authenticates)"
            )
        problems.extend(self._oidc_problems())
        if self.is_strict:
            problems.extend(self._strict_problems())
        unsupported = [a for a in self.jwt_algorithms if a not in HMAC_ALGORITHMS]
        if unsupported:
            problems.append(
                f"PLATFORM_JWT_ALGORITHMS: {', '.join(unsupported)} not allowed with a static secret "
                f"(use {', '.join(HMAC_ALGORITHMS)})"
            )
        if not self.jwt_algorithms:
            problems.append("PLATFORM_JWT_ALGORITHMS must name at least one algorithm")
        return problems

    def _oidc_problems(self) -> list[str]:
        problems = []
        unsupported = [a for a in self.oidc_algorithms if a not in OIDC_ALGORITHMS]
        if unsupported:
            problems.append(
                f"PLATFORM_OIDC_ALGORITHMS: {', '.join(unsupported)} not allowed for OIDC tokens "
                f"(use {', '.join(OIDC_ALGORITHMS)})"
            )
        if not self.oidc_algorithms:
            problems.append("PLATFORM_OIDC_ALGORITHMS must name at least one algorithm")
        if self.oidc_issuer_url:
            parts = urlsplit(self.oidc_issuer_url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                problems.append("PLATFORM_OIDC_ISSUER_URL must be an http(s) URL")
            elif parts.username or parts.password:
                problems.append("PLATFORM_OIDC_ISSUER_URL must not contain credentials")
            if not self.oidc_audience:
                # Without an audience check any token of the provider (for any app) would do.
                problems.append("PLATFORM_OIDC_AUDIENCE is required with PLATFORM_OIDC_ISSUER_URL")
        return problems

    def _strict_problems(self) -> list[str]:
        """Strict production (SPEC.md "Auth"): each refusal names the variable to fix."""
        problems = []
        if not self.oidc_issuer_url:
            problems.append("PLATFORM_OIDC_ISSUER_URL is required in strict production mode")
        elif urlsplit(self.oidc_issuer_url).scheme != "https":
            problems.append("PLATFORM_OIDC_ISSUER_URL must use https in strict production mode")
        if not self.oidc_audience:
            problems.append("PLATFORM_OIDC_AUDIENCE is required in strict production mode")
        if self.enforce_team_scope is False:
            problems.append(
                "PLATFORM_ENFORCE_TEAM_SCOPE=false is refused in strict production mode (team scoping is always on)"
            )
        if self.jwt_secret:
            if not self.allow_static_jwt_in_prod:
                problems.append(
                    "PLATFORM_JWT_HS256_SECRET is refused in strict production mode "
                    "unless PLATFORM_ALLOW_STATIC_JWT_IN_PROD=true"
                )
            problems += self.short_secret_problems("PLATFORM_JWT_HS256_SECRET", self.jwt_secret)
            # A shared secret often signs tokens for more than one service: without an issuer
            # and audience check, a token minted for another of them would be accepted here.
            problems += [
                f"{variable} is required with PLATFORM_JWT_HS256_SECRET in strict production mode"
                for variable, value in (
                    ("PLATFORM_JWT_ISSUER", self.jwt_issuer),
                    ("PLATFORM_JWT_AUDIENCE", self.jwt_audience),
                )
                if not value
            ]
        return problems


@dataclass(frozen=True)
class GatewaySettings(ProcessSettings, TokenSettings, TelemetrySettings, BusSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "gateway", doc="Name used in logs and metrics.")
    address: str = setting("PLATFORM_ADDRESS", "127.0.0.1:8080", doc="host:port the HTTP API listens on.")
    port: Annotated[int | None, Bounds(ge=0, le=65535)] = setting(
        "PORT", None, doc="Overrides the port of PLATFORM_ADDRESS (platforms that set PORT)."
    )
    approval_settle_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_APPROVAL_SETTLE_SECONDS",
        5.0,
        doc="How long approve/reject wait for the request to show the decision before answering.",
    )
    http_read_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_HTTP_READ_TIMEOUT_SECONDS",
        15.0,
        doc="Idle keep-alive time of a connection and the limit for reading a request body.",
    )
    http_write_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_HTTP_WRITE_TIMEOUT_SECONDS", 30.0, doc="Deadline for producing a response (then 503)."
    )
    http_read_header_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_HTTP_READ_HEADER_TIMEOUT_SECONDS",
        10.0,
        doc="Time a connection has to send a request's complete headers (from its start, or from the "
        "request's first byte on a kept-alive connection); then it is closed (408 if part arrived).",
    )
    http_max_connections: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_HTTP_MAX_CONNECTIONS",
        1000,
        doc="Open connections the gateway holds at most; one more is answered 503 with Retry-After "
        "and closed. A backstop: limit per client in the reverse proxy (docs/security.md).",
    )
    readiness_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_READINESS_TIMEOUT_SECONDS",
        2.0,
        doc="Time the /readyz check, and each ping behind /v1/status, may take.",
    )
    rpc_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_RPC_TIMEOUT_SECONDS", 5.0, doc="Time a service may take to answer a request/reply call."
    )
    max_body_bytes: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_MAX_BODY_BYTES", 65536, doc="Largest accepted request body."
    )
    rate_limit_subject_per_minute: Annotated[int, Bounds(ge=0)] = setting(
        "PLATFORM_RATE_LIMIT_SUBJECT_PER_MINUTE",
        300,
        doc="Changes (POST, PUT, PATCH, DELETE) one caller (token subject) may make a minute, all at "
        "once at most; more are answered 429 with Retry-After. Per gateway replica; 0 turns it off.",
    )
    rate_limit_subject_generations_per_minute: Annotated[int, Bounds(ge=0)] = setting(
        "PLATFORM_RATE_LIMIT_SUBJECT_GENERATIONS_PER_MINUTE",
        30,
        doc="Creates and reconciles (each a new generation: a commit and work for every service) one "
        "caller may make a minute, all at once at most; more are answered 429 with Retry-After. Per "
        "gateway replica; 0 turns it off.",
    )
    rate_limit_team_per_minute: Annotated[int, Bounds(ge=0)] = setting(
        "PLATFORM_RATE_LIMIT_TEAM_PER_MINUTE",
        120,
        doc="Environment requests (creates, not dry runs) one team may submit a minute, whoever sends "
        "them; more are answered 429 with Retry-After. Per gateway replica; 0 turns it off.",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.rpc_timeout_seconds >= self.http_write_timeout_seconds:
            # Otherwise the response deadline would cut off calls the services may still answer.
            problems.append(
                "PLATFORM_RPC_TIMEOUT_SECONDS must be shorter than PLATFORM_HTTP_WRITE_TIMEOUT_SECONDS"
            )
        elif 2 * (self.approval_settle_seconds + self.rpc_timeout_seconds) >= self.http_write_timeout_seconds:
            # approve waits for the decision to settle twice around two calls; all of it must
            # fit in the response deadline, or a slow approval would end in a 503.
            problems.append(
                "PLATFORM_HTTP_WRITE_TIMEOUT_SECONDS must exceed twice "
                "PLATFORM_APPROVAL_SETTLE_SECONDS + PLATFORM_RPC_TIMEOUT_SECONDS"
            )
        try:
            split_address(self.address, "PLATFORM_ADDRESS")
        except SettingsError as exc:
            problems.extend(exc.problems)
        return problems

    def listen_address(self) -> tuple[str, int]:
        """(host, port) to bind: ``PLATFORM_ADDRESS`` with ``PORT`` overriding the port."""
        host, port = split_address(self.address, "PLATFORM_ADDRESS")
        return host, (self.port if self.port is not None else port)
