"""Bearer tokens from an OpenID Connect provider: discovery, JWKS caching, key rotation.

- Discovery: ``<issuer>/.well-known/openid-configuration`` names the JWKS URI and the
  signing algorithms the provider uses; its ``issuer`` must equal the configured one.
- Algorithms: the provider's ``id_token_signing_alg_values_supported`` (RS256 when absent,
  the OIDC default) intersected with ``PLATFORM_OIDC_ALGORITHMS``, itself limited to
  asymmetric algorithms. ``none`` and every HMAC algorithm are never accepted here, so a
  public key from the JWKS can never be used as an HMAC secret (algorithm confusion).
- Keys: the JWKS is cached for ``PLATFORM_OIDC_JWKS_CACHE_SECONDS``. A token whose ``kid``
  is not in the cache triggers a refetch (the provider rotated keys), at most once per
  ``PLATFORM_OIDC_JWKS_MIN_REFRESH_SECONDS`` so a flood of forged ``kid``\\ s cannot make the
  gateway hammer the provider. A key must fit the token's algorithm (RSA for RS/PS, EC for
  ES), be meant for signatures, and match the algorithm the JWK itself declares.
- Claims: signature, ``iss``, ``aud`` (``PLATFORM_OIDC_AUDIENCE``) and ``exp`` are required.

When the provider cannot be reached and no keys are cached, verification raises
:class:`ProviderUnavailable` (503 at the API, not 401: the token may well be valid). Error
messages never contain the provider's URLs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

# Key type each algorithm family needs.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


class InvalidToken(Exception):
    """The token was not accepted; the message is safe to return to the caller."""


class ProviderUnavailable(Exception):
    """The identity provider's discovery document or keys cannot be obtained right now."""


def decode_claims(token: str, key: Any, algorithms: list[str], **checks: Any) -> dict[str, Any]:
    """``jwt.decode(token, key, algorithms=algorithms, **checks)``: the verified claims, or
    :class:`InvalidToken` saying what was wrong in words safe to return to the caller.

    Shared by both verifiers so a token fails the same way whichever of them checks it.
    """
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=algorithms, **checks)
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("the token was issued by an unexpected issuer") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("the token is meant for a different audience") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken(
            f"the token's algorithm is not accepted (accepted: {', '.join(algorithms)})"
        ) from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not verify") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("the token is not valid yet") from None
    except jwt.PyJWTError:
        raise InvalidToken("the token is malformed") from None
    return claims


@dataclass(frozen=True)
class _Key:
    """A usable public key from the JWKS, with what the JWK says about its use."""

    public_key: Any
    key_type: str
    declared_algorithm: str | None

    def fits(self, algorithm: str) -> bool:
        """The key may verify ``algorithm``: right key type, and the JWK's own ``alg`` if it has one."""
        if self.declared_algorithm is not None and self.declared_algorithm != algorithm:
            return False
        return self.key_type == _KEY_TYPES.get(algorithm[:2])


@dataclass
class _Keys:
    by_kid: dict[str, _Key]
    unnamed: list[_Key]
    fetched_at: float


class OidcVerifier:
    """Verifies tokens issued by one OIDC provider (the ``TokenVerifier`` port)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        allowed_algorithms: list[str],
        cache_seconds: float = 300.0,
        min_refresh_seconds: float = 10.0,
        leeway_seconds: float = 30.0,
        http_timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.allowed_algorithms = list(allowed_algorithms)
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.leeway = leeway_seconds
        self.http_timeout = http_timeout_seconds
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: _Keys | None = None
        self._last_refresh = float("-inf")
        # When a refresh of expired keys was last tried (successful or not).
        self._last_attempt = float("-inf")
        # One fetch at a time: a burst of requests after the cache expires makes one call.
        self._lock = asyncio.Lock()

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- fetching ----------------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        if self._client is None:
            # No redirects: the provider's documents are served where it says they are.
            self._client = httpx.AsyncClient(timeout=self.http_timeout, follow_redirects=False)
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"the identity provider's {what} cannot be fetched") from exc
        if response.status_code != 200:
            raise ProviderUnavailable(f"the identity provider's {what} answered HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError as exc:
            raise ProviderUnavailable(f"the identity provider's {what} is not JSON") from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"the identity provider's {what} is not a JSON object")
        return document

    async def _discover(self) -> dict[str, Any]:
        now = self._clock()
        if self._discovery is not None and now - self._discovered_at < self.cache_seconds:
            return self._discovery
        try:
            document = await self._get_json(self.discovery_url, "discovery document")
        except ProviderUnavailable:
            if self._discovery is not None:
                return self._discovery  # a stale document beats refusing every token
            raise
        if str(document.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
            # OIDC Discovery 4.3: a mismatch means the document is not this issuer's.
            raise ProviderUnavailable("the identity provider's discovery document names another issuer")
        if not isinstance(document.get("jwks_uri"), str):
            raise ProviderUnavailable("the identity provider's discovery document has no jwks_uri")
        self._discovery = document
        self._discovered_at = now
        return document

    def algorithms(self) -> list[str]:
        """Algorithms accepted now: the allow-list, narrowed to what the provider advertises."""
        advertised = (self._discovery or {}).get("id_token_signing_alg_values_supported") or ["RS256"]
        return [alg for alg in self.allowed_algorithms if alg in advertised]

    async def _fetch_keys(self) -> _Keys:
        discovery = await self._discover()
        document = await self._get_json(str(discovery["jwks_uri"]), "key set")
        by_kid: dict[str, _Key] = {}
        unnamed: list[_Key] = []
        for entry in document.get("keys") or []:
            # Only public signing keys of the asymmetric families: a symmetric ("oct") key in
            # a JWKS would otherwise be an HMAC secret anyone can read.
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("kty") not in set(_KEY_TYPES.values()):
                continue
            try:
                parsed = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue  # a key we cannot use: skip it, keep the rest
            declared = entry.get("alg")
            key = _Key(
                public_key=parsed.key,
                key_type=str(entry["kty"]),
                declared_algorithm=declared if isinstance(declared, str) else None,
            )
            if isinstance(entry.get("kid"), str):
                by_kid[entry["kid"]] = key
            else:
                unnamed.append(key)
        return _Keys(by_kid=by_kid, unnamed=unnamed, fetched_at=self._clock())

    def _usable_without_fetching(self) -> _Keys | None:
        """Keys to use right away: fresh ones, or stale ones while a refresh is in progress or
        was tried recently. An unreachable provider then costs one attempt per
        ``min_refresh_seconds``, not a timeout on every request queued behind the lock."""
        keys = self._keys
        if keys is None:
            return None
        now = self._clock()
        if now - keys.fetched_at < self.cache_seconds:
            return keys
        if self._lock.locked() or now - self._last_attempt < self.min_refresh_seconds:
            return keys
        return None

    async def _current_keys(self) -> _Keys:
        usable = self._usable_without_fetching()
        if usable is not None:
            return usable
        async with self._lock:
            usable = self._usable_without_fetching()
            if usable is not None:
                return usable
            keys = self._keys
            self._last_attempt = self._clock()
            try:
                self._keys = await self._fetch_keys()
                self._last_refresh = self._clock()
            except ProviderUnavailable:
                if keys is None:
                    raise
                log.warning("identity provider unreachable; using the cached keys")
                return keys
            return self._keys

    async def _refresh_for_unknown_kid(self) -> _Keys | None:
        """Refetch the JWKS for a key we do not know, unless we did so very recently."""
        async with self._lock:
            if self._clock() - self._last_refresh < self.min_refresh_seconds:
                return None
            self._last_refresh = self._clock()
            try:
                self._keys = await self._fetch_keys()
            except ProviderUnavailable:
                # The token names a key we cannot confirm: refuse it, keep the cached keys.
                return None
            return self._keys

    async def check(self) -> None:
        """Readiness: the discovery document and keys are available (cached ones count)."""
        await self._current_keys()

    # -- verification ------------------------------------------------------------------------

    async def _key_for(self, kid: Any, algorithm: str) -> _Key:
        keys = await self._current_keys()
        key = _pick(keys, kid, algorithm)
        if key is None and isinstance(kid, str):
            refreshed = await self._refresh_for_unknown_kid()
            key = _pick(refreshed, kid, algorithm) if refreshed is not None else None
        if key is None:
            raise InvalidToken("the token was signed with a key the identity provider does not publish")
        return key

    async def verify(self, token: str) -> Mapping[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the token is malformed") from None
        algorithm = header.get("alg")
        await self._current_keys()  # discovery first: it says which algorithms the provider uses
        accepted = self.algorithms()
        if algorithm not in accepted:
            raise InvalidToken(
                f"the token's algorithm is not accepted (accepted: {', '.join(accepted) or 'none'})"
            )
        key = await self._key_for(header.get("kid"), str(algorithm))
        if not key.fits(str(algorithm)):
            raise InvalidToken("the token's algorithm does not match its key")
        return decode_claims(
            token,
            key.public_key,
            [str(algorithm)],
            audience=self.audience,
            issuer=self._discovery["issuer"] if self._discovery else self.issuer,
            leeway=self.leeway,
            options={"require": ["exp", "iss", "aud"]},
        )


def _pick(keys: _Keys, kid: Any, algorithm: str) -> _Key | None:
    if isinstance(kid, str):
        return keys.by_kid.get(kid)
    # No kid (some providers with a single key): only an unambiguous match is used.
    candidates = [key for key in [*keys.unnamed, *keys.by_kid.values()] if key.fits(algorithm)]
    return candidates[0] if len(candidates) == 1 else None
