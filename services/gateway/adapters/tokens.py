"""Bearer token verification.

:class:`TokenVerifier` is the port: given the raw token it returns verified claims or
raises :class:`InvalidToken`. Two implementations:

- :class:`StaticSecretVerifier`: HS256/384/512 tokens signed with ``PLATFORM_JWT_HS256_SECRET``
  (development, static setups);
- :class:`~services.gateway.adapters.oidc.OidcVerifier`: tokens of an OIDC provider
  (discovery + JWKS, asymmetric algorithms only).

Both may be configured at once (dev: minted tokens and the company IdP). :class:`TokenRouter`
then picks the verifier by the token's ``alg`` header: HMAC algorithms go to the static
secret only and asymmetric ones to the provider's keys only, so neither verifier ever sees
a token of the other kind; that is what makes algorithm confusion (an RS256 public key used
as an HS256 secret) impossible, and ``none`` or any other algorithm is refused outright.

Whichever verifier checks it, a token is also refused (401) when it is not in canonical
compact form (three unpadded base64url segments, each exactly as its bytes encode: an extra
``=`` or altered spare bits would give one token many spellings), when ``exp``, ``iat`` or
``nbf`` is not a number, or when it is valid for longer than
``PLATFORM_JWT_MAX_LIFETIME_SECONDS`` (from ``iat`` or ``nbf``, the earlier, to ``exp``;
from now when it has neither): a token leaked from a careless issuer with ``exp`` in the
year 3000 is not a key for ever.
:class:`Authenticator` turns an ``Authorization`` header into a :class:`Principal`.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt
from prometheus_client import Counter

from libs.telemetry import REGISTRY
from services.gateway.adapters.oidc import InvalidToken, OidcVerifier, ProviderUnavailable, decode_claims
from services.gateway.domain.claims import ClaimNames, Principal, resolve_principal
from services.gateway.domain.errors import RETRY_AFTER_SECONDS, HttpError, Unauthenticated
from services.gateway.settings import HMAC_ALGORITHMS, OIDC_ALGORITHMS, GatewaySettings

__all__ = [
    "Authenticator",
    "InvalidToken",
    "OidcVerifier",
    "ProviderUnavailable",
    "StaticSecretVerifier",
    "TokenRouter",
    "TokenVerifier",
    "authenticator_from_settings",
]


TOKEN_VERIFICATIONS = Counter(
    "platform_gateway_token_verifications_total",
    "Bearer tokens the gateway verified, by result (accepted: a caller with a role; refused: "
    "invalid, or valid but naming no usable caller; provider_unavailable).",
    ["result"],
    registry=REGISTRY,
)


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Mapping[str, Any]:
        """Return the claims of ``token`` after checking signature, algorithm, expiry, issuer
        and audience; raise :class:`InvalidToken` otherwise."""
        ...


class StaticSecretVerifier:
    """HMAC-signed JWTs with one shared secret.

    The accepted algorithms are an explicit allow-list of HMAC algorithms: ``none`` and
    any asymmetric algorithm (algorithm confusion with a public key as HMAC secret) can
    never verify. ``exp`` is required.
    """

    def __init__(
        self,
        secret: str,
        algorithms: list[str],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: float = 30.0,
    ) -> None:
        rejected = [a for a in algorithms if a not in HMAC_ALGORITHMS]
        if rejected or not algorithms:
            raise ValueError(f"only {', '.join(HMAC_ALGORITHMS)} can be used with a static secret")
        if not secret:
            raise ValueError("the static secret must not be empty")
        self._key = secret.encode()
        self.algorithms = list(algorithms)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway_seconds

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> StaticSecretVerifier:
        if not settings.jwt_secret:
            raise ValueError("PLATFORM_JWT_HS256_SECRET is required")
        return cls(
            settings.jwt_secret.reveal(),
            settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    async def verify(self, token: str) -> Mapping[str, Any]:
        with warnings.catch_warnings():
            # PyJWT warns on every call when the secret is shorter than the hash
            # output (HS512 wants 64 bytes); strict mode enforces a minimum at start-up
            # instead of flooding the log per request.
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            return decode_claims(
                token,
                self._key,
                self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )


# The signature may be empty (an unsigned token): the router then names "alg none" as the problem.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TIME_CLAIMS = ("exp", "iat", "nbf")
DEFAULT_MAX_LIFETIME_SECONDS = 24 * 3600.0


def _canonical_segment(segment: str) -> bool:
    """``segment`` is exactly the unpadded base64url encoding of what it decodes to."""
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() == segment


def check_compact_form(token: str) -> None:
    """Refuse a token that is not three canonical, unpadded base64url segments."""
    if _COMPACT.fullmatch(token) is None or not all(_canonical_segment(part) for part in token.split(".")):
        raise InvalidToken("the token is not a compact JWT (three unpadded base64url segments)")


# JSON integers have no size limit; a time claim beyond a float's range is no time at all.
_LARGEST_TIME = sys.float_info.max


def check_lifetime(claims: Mapping[str, Any], max_lifetime_seconds: float, now: float) -> None:
    """``exp``, ``iat`` and ``nbf`` are numbers, and the token is valid for at most
    ``max_lifetime_seconds`` (see the module docstring)."""
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidToken(f"the token's {name!r} claim must be a number (seconds since 1970)")
        if isinstance(value, int) and not -_LARGEST_TIME <= value <= _LARGEST_TIME:
            raise InvalidToken(f"the token's {name!r} claim is not a time (seconds since 1970)")
    if "exp" not in claims:
        raise InvalidToken("the token has no 'exp' claim")
    starts = [float(claims[name]) for name in ("iat", "nbf") if name in claims]
    start = min(starts) if starts else now
    if float(claims["exp"]) - start > max_lifetime_seconds:
        raise InvalidToken(
            f"the token is valid for longer than the {max_lifetime_seconds:g} seconds this API accepts "
            "(PLATFORM_JWT_MAX_LIFETIME_SECONDS); ask for a shorter-lived token"
        )


class TokenRouter:
    """Sends each token to the verifier for its algorithm family (see the module docstring),
    and applies the checks both share: canonical form, numeric times, maximum lifetime."""

    def __init__(
        self,
        static: StaticSecretVerifier | None,
        oidc: OidcVerifier | None,
        *,
        max_lifetime_seconds: float = DEFAULT_MAX_LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if static is None and oidc is None:
            raise ValueError("at least one token verifier is required")
        self.static = static
        self.oidc = oidc
        self.max_lifetime_seconds = max_lifetime_seconds
        self._clock = clock

    async def verify(self, token: str) -> Mapping[str, Any]:
        check_compact_form(token)
        claims = await self._verify_signed(token)
        check_lifetime(claims, self.max_lifetime_seconds, self._clock())
        return claims

    async def _verify_signed(self, token: str) -> Mapping[str, Any]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise InvalidToken("the token is malformed") from None
        if algorithm in HMAC_ALGORITHMS and self.static is not None:
            return await self.static.verify(token)
        if algorithm in OIDC_ALGORITHMS and self.oidc is not None:
            return await self.oidc.verify(token)
        accepted = [
            *(self.static.algorithms if self.static else []),
            *(self.oidc.algorithms() if self.oidc else []),
        ]
        # Only a known algorithm name is echoed: the header is attacker-controlled text.
        shown = f" {algorithm}" if algorithm in (*HMAC_ALGORITHMS, *OIDC_ALGORITHMS, "none") else ""
        raise InvalidToken(f"the token's algorithm{shown} is not accepted (accepted: {', '.join(accepted)})")


class Authenticator:
    """``Authorization: Bearer <token>`` -> :class:`Principal`."""

    def __init__(
        self, verifier: TokenVerifier, claim_names: ClaimNames, oidc: OidcVerifier | None = None
    ) -> None:
        self.verifier = verifier
        self.claim_names = claim_names
        # Kept for readiness (provider reachable) and for closing its HTTP client.
        self.oidc = oidc

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.strip():
            raise Unauthenticated.no_credentials()
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'", token_presented=False)
        try:
            claims = await self.verifier.verify(token.strip())
        except InvalidToken as exc:
            TOKEN_VERIFICATIONS.labels("refused").inc()
            raise Unauthenticated(str(exc), token_presented=True) from None
        except ProviderUnavailable as exc:
            TOKEN_VERIFICATIONS.labels("provider_unavailable").inc()
            # Not the caller's fault and maybe a valid token: ask them to come back.
            raise HttpError(
                503, "unavailable", f"{exc}; retry later", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        try:
            principal = resolve_principal(claims, self.claim_names)
        except HttpError:
            # Signed, but naming nobody, no role or unusable claims: not an accepted token.
            TOKEN_VERIFICATIONS.labels("refused").inc()
            raise
        TOKEN_VERIFICATIONS.labels("accepted").inc()
        return principal

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()


def authenticator_from_settings(settings: GatewaySettings) -> Authenticator:
    names = ClaimNames(
        roles=settings.roles_claim,
        actor=settings.actor_claim,
        subject=settings.subject_claim,
        teams=settings.teams_claim,
    )
    static = StaticSecretVerifier.from_settings(settings) if settings.jwt_secret else None
    oidc = None
    if settings.oidc_issuer_url and settings.oidc_audience:
        oidc = OidcVerifier(
            settings.oidc_issuer_url,
            settings.oidc_audience,
            allowed_algorithms=settings.oidc_algorithms,
            cache_seconds=settings.oidc_jwks_cache_seconds,
            min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds,
            leeway_seconds=settings.jwt_leeway_seconds,
            http_timeout_seconds=settings.oidc_http_timeout_seconds,
        )
    router = TokenRouter(static, oidc, max_lifetime_seconds=settings.jwt_max_lifetime_seconds)
    return Authenticator(router, names, oidc=oidc)
