"""OIDC authentication against a real issuer on loopback (discovery + JWKS over HTTP).

The gateway runs on a real socket and fetches the provider's documents itself; tokens are
RS256/ES256 JWTs signed by the provider's keys, as an identity provider would issue them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.gateway import GatewayStack, gateway_stack, mint
from tests.support.oidc_provider import Provider, ec_key, oidc_provider, rsa_key


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    async with oidc_provider() as running:
        yield running


def oidc_env(provider: Provider, **extra: str) -> dict[str, str]:
    return {
        "PLATFORM_OIDC_ISSUER_URL": provider.issuer,
        "PLATFORM_OIDC_AUDIENCE": "platform",
        # Rotation is tested by refetching at once; production keeps a floor against floods.
        "PLATFORM_OIDC_JWKS_MIN_REFRESH_SECONDS": "0",
        **extra,
    }


@pytest.fixture
async def gateway(nats_url: str, isolation: Any, provider: Provider) -> AsyncIterator[GatewayStack]:
    async with gateway_stack(nats_url, isolation.rpc_prefix, **oidc_env(provider)) as running:
        yield running


async def whoami(stack: GatewayStack, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        return await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})


def assert_401(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "unauthorized"
    assert fragment in body["error"], body["error"]
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "127.0.0.1" not in response.text  # never the provider's address


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forge_hs256(claims: dict[str, Any], secret: bytes, **header: Any) -> str:
    """An HS256 JWT signed with ``secret`` by hand (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT', **header})}.{b64(claims)}".encode()
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{signing_input.decode()}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_a_provider_token_is_accepted_and_its_claims_resolved(
    gateway: GatewayStack, provider: Provider
) -> None:
    token = provider.token(role=["viewer", "approver"], teams=["payments"])
    response = await whoami(gateway, token)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "actor": "olivia@example.com",
        "role": "approver",
        "teams": ["payments"],
        "subject": "u-42",
    }


async def test_wrong_audience_is_401(gateway: GatewayStack, provider: Provider) -> None:
    assert_401(await whoami(gateway, provider.token(audience="another-app")), "audience")


async def test_an_expired_token_is_401(gateway: GatewayStack, provider: Provider) -> None:
    assert_401(await whoami(gateway, provider.token(ttl=-3600)), "expired")


async def test_a_token_without_exp_is_401(gateway: GatewayStack, provider: Provider) -> None:
    assert_401(await whoami(gateway, provider.token(exp=None)), "exp")


async def test_another_issuer_is_401(gateway: GatewayStack, provider: Provider) -> None:
    assert_401(await whoami(gateway, provider.token(iss="https://evil.example.com")), "issuer")


async def test_alg_none_is_401(gateway: GatewayStack, provider: Provider) -> None:
    claims = jwt.decode(provider.token(), options={"verify_signature": False})
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT', 'kid': provider.keys[0].kid})}.{b64(claims)}."
    assert_401(await whoami(gateway, unsigned), "algorithm")


async def test_hs256_signed_with_the_public_key_is_401(gateway: GatewayStack, provider: Provider) -> None:
    # Algorithm confusion: the attacker knows the provider's public key (it is public) and
    # uses it as an HMAC secret. HMAC tokens never reach the provider's keys.
    claims = jwt.decode(provider.token(role="admin"), options={"verify_signature": False})
    forged = forge_hs256(claims, provider.keys[0].public_pem(), kid=provider.keys[0].kid)
    assert_401(await whoami(gateway, forged), "signature")


async def test_hs256_with_the_public_key_is_401_without_a_static_secret(
    nats_url: str, isolation: Any, provider: Provider
) -> None:
    claims = jwt.decode(provider.token(role="admin"), options={"verify_signature": False})
    forged = forge_hs256(claims, provider.keys[0].public_pem())
    env = oidc_env(provider, PLATFORM_JWT_HS256_SECRET="")
    async with gateway_stack(nats_url, isolation.rpc_prefix, **env) as oidc_only:
        assert_401(await whoami(oidc_only, forged), "algorithm")
        # ... and the minted development tokens are not accepted either.
        assert_401(await whoami(oidc_only, mint("admin")), "algorithm")
        assert (await whoami(oidc_only, provider.token())).status_code == 200


async def test_a_token_signed_by_an_unpublished_key_is_401(gateway: GatewayStack, provider: Provider) -> None:
    impostor = rsa_key(kid=provider.keys[0].kid)  # claims a published kid, signs with its own key
    assert_401(await whoami(gateway, provider.token(impostor)), "signature")


async def test_key_rotation_refetches_and_old_keys_stop_working(
    gateway: GatewayStack, provider: Provider
) -> None:
    old = provider.keys[0]
    assert (await whoami(gateway, provider.token(old))).status_code == 200
    fetches = provider.jwks_fetches
    new = provider.rotate()
    # A token with the new kid is not in the cache: the gateway refetches the key set.
    response = await whoami(gateway, provider.token(new))
    assert response.status_code == 200, response.text
    assert provider.jwks_fetches == fetches + 1
    # The old key is gone from the provider: unknown kid, refused.
    assert_401(await whoami(gateway, provider.token(old)), "key")


async def test_keys_are_cached_between_requests(gateway: GatewayStack, provider: Provider) -> None:
    for _ in range(5):
        assert (await whoami(gateway, provider.token())).status_code == 200
    assert provider.jwks_fetches == 1
    assert provider.discovery_fetches == 1


async def test_only_algorithms_the_provider_advertises(gateway: GatewayStack, provider: Provider) -> None:
    es = ec_key()
    provider.keys.append(es)
    # The provider publishes an EC key but advertises RS256 only: ES256 tokens are refused.
    assert_401(await whoami(gateway, provider.token(es)), "algorithm")


async def test_es256_when_advertised(nats_url: str, isolation: Any, provider: Provider) -> None:
    es = ec_key()
    provider.keys.append(es)
    provider.algorithms = ["RS256", "ES256"]
    async with gateway_stack(nats_url, isolation.rpc_prefix, **oidc_env(provider)) as stack:
        assert (await whoami(stack, provider.token(es))).status_code == 200
        # A JWK declared for one algorithm does not verify another (ES256 key, RS256 header).
        mismatched = provider.token(es, headers={"kid": provider.keys[0].kid})
        assert (await whoami(stack, mismatched)).status_code == 401


async def test_claim_names_are_configurable(nats_url: str, isolation: Any, provider: Provider) -> None:
    env = oidc_env(
        provider,
        PLATFORM_OIDC_ROLES_CLAIM="realm_access.roles",
        PLATFORM_OIDC_ACTOR_CLAIM="preferred_username",
        PLATFORM_OIDC_TEAMS_CLAIM="groups",
    )
    async with gateway_stack(nats_url, isolation.rpc_prefix, **env) as stack:
        token = provider.token(
            role=None, email=None, realm_access={"roles": ["requester", "admin"]}, groups=["search"]
        )
        response = await whoami(stack, token)
        assert response.json() == {"actor": "u-42", "role": "admin", "teams": ["search"], "subject": "u-42"}
        token = provider.token(preferred_username="oli", role=None, realm_access={"roles": ["viewer"]})
        assert (await whoami(stack, token)).json()["actor"] == "oli"


async def test_development_tokens_still_work_beside_oidc(gateway: GatewayStack) -> None:
    assert (await whoami(gateway, mint("viewer"))).status_code == 200


async def test_an_unreachable_provider_is_503_not_401(
    nats_url: str, isolation: Any, provider: Provider
) -> None:
    provider.up = False
    async with gateway_stack(nats_url, isolation.rpc_prefix, **oidc_env(provider)) as stack:
        response = await whoami(stack, provider.token())
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert "127.0.0.1" not in response.text
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            # The provider is a reported dependency, not the gateway's readiness: development
            # tokens (and cached keys) still work, so the replicas stay in their Service.
            assert (await http.get("/readyz")).status_code == 200
            down = await oidc_status(http)
        assert down["state"] == "down"
        assert down["last_error"] == "the identity provider's discovery document answered HTTP 503"
        provider.up = True
        assert (await whoami(stack, provider.token())).status_code == 200
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            await asyncio.sleep(1.1)  # /v1/status checks afresh at most once a second
            assert (await oidc_status(http))["state"] == "up"


async def oidc_status(http: httpx.AsyncClient) -> dict[str, Any]:
    """The provider's entry of GET /v1/status, read with a development token."""
    response = await http.get("/v1/status", headers={"Authorization": f"Bearer {mint('viewer')}"})
    assert response.status_code == 200, response.text
    assert "127.0.0.1" not in response.text
    [entry] = [item for item in response.json()["dependencies"] if item["name"] == "oidc"]
    assert entry["reported_by"] == "gateway"
    entry_value: dict[str, Any] = entry
    return entry_value


async def test_a_stalled_provider_does_not_stall_every_request(
    nats_url: str, isolation: Any, provider: Provider
) -> None:
    """Expired cached keys and a provider that hangs: one refresh attempt (bounded by the HTTP
    timeout) while every other request goes on with the cached keys; no new attempt before
    the refresh floor has passed."""
    env = oidc_env(
        provider,
        PLATFORM_OIDC_JWKS_CACHE_SECONDS="1",
        PLATFORM_OIDC_JWKS_MIN_REFRESH_SECONDS="30",
        PLATFORM_OIDC_HTTP_TIMEOUT_SECONDS="1",
    )
    async with gateway_stack(nats_url, isolation.rpc_prefix, **env) as stack:
        assert (await whoami(stack, provider.token())).status_code == 200
        await asyncio.sleep(1.2)  # the cached keys are now expired
        provider.stall_seconds = 30
        started = time.monotonic()
        responses = await asyncio.gather(*(whoami(stack, provider.token()) for _ in range(10)))
        assert [r.status_code for r in responses] == [200] * 10
        assert time.monotonic() - started < 5  # one bounded attempt, not ten in a row
        started = time.monotonic()
        assert (await whoami(stack, provider.token())).status_code == 200
        assert time.monotonic() - started < 0.5  # within the floor: no new attempt at all
