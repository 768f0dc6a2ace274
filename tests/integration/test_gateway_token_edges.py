"""Bearer tokens a probe found accepted that must not be, signed for real with PyJWT and sent
to the gateway over HTTP (issue 11, "input and token edge cases"): each is a 401 saying why,
or a 403 for a token that carries no platform role.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from tests.support.gateway import JWT_SECRET, GatewayStack, gateway_stack, mint
from tests.support.isolation import Isolation


@pytest.fixture(scope="module")
async def stack(nats_url: str) -> AsyncIterator[GatewayStack]:
    """One gateway with its stand-ins for the module: checking a token keeps nothing, and a
    case that creates a request answers only for its own."""
    async with gateway_stack(nats_url, Isolation.new().rpc_prefix) as running:
        yield running


@pytest.fixture(scope="module")
async def http(stack: GatewayStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        yield client


def signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


async def whoami(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})


def assert_401(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    for word in words:
        assert word in response.json()["error"]


NOW = int(time.time())
BASE = {"sub": "u-1", "email": "alice@example.com", "role": "requester"}


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({**BASE, "iat": NOW, "exp": 10**30}, ("valid for longer than the 86400 seconds",)),
        # Regression: beyond a float's range, converting it was a 500.
        ({**BASE, "iat": NOW, "exp": 10**400}, ("'exp' claim is not a time",)),
        ({**BASE, "iat": -(10**400), "exp": NOW + 3600}, ("'iat' claim is not a time",)),
        ({**BASE, "exp": NOW + 2 * 86400}, ("valid for longer than",)),  # no iat: from now
        ({**BASE, "iat": NOW - 30 * 86400, "exp": NOW + 3600}, ("valid for longer than",)),
        ({**BASE, "iat": NOW, "nbf": NOW - 86400, "exp": NOW + 3600}, ("valid for longer than",)),
        ({**BASE, "iat": NOW, "exp": str(NOW + 3600)}, ("'exp' claim must be a number",)),
        ({**BASE, "iat": str(NOW), "exp": NOW + 3600}, ("'iat' claim must be a number",)),
        ({**BASE, "iat": NOW, "nbf": True, "exp": NOW + 3600}, ("'nbf' claim must be a number",)),
        ({**BASE, "iat": NOW}, ("'exp'",)),
    ],
    ids=[
        "exp-1e30",
        "exp-beyond-a-float",
        "iat-beyond-a-float",
        "two-days-without-iat",
        "issued-a-month-ago",
        "nbf-a-day-early",
        "exp-a-string",
        "iat-a-string",
        "nbf-a-boolean",
        "no-exp",
    ],
)
async def test_a_token_without_a_bounded_numeric_lifetime_is_refused(
    http: httpx.AsyncClient, claims: dict[str, Any], words: tuple[str, ...]
) -> None:
    """Regression: ``exp`` of 10^30 and ``exp`` as a string were accepted."""
    assert_401(await whoami(http, signed(claims)), *words)


async def test_a_token_of_the_maximum_lifetime_is_accepted(http: httpx.AsyncClient) -> None:
    response = await whoami(http, signed({**BASE, "iat": NOW, "exp": NOW + 86400}))
    assert response.status_code == 200, response.text


async def test_the_maximum_lifetime_is_a_setting(nats_url: str, isolation: Any) -> None:
    async with (
        gateway_stack(nats_url, isolation.rpc_prefix, PLATFORM_JWT_MAX_LIFETIME_SECONDS="600") as stack,
        httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client,
    ):
        assert (await whoami(client, mint("viewer", ttl=600))).status_code == 200
        assert_401(await whoami(client, mint("viewer", ttl=601)), "600 seconds")


@pytest.mark.parametrize(
    "spelling",
    [
        lambda token: token + "=",
        lambda token: token + "==",
        lambda token: token.replace(".", "=.", 1),
    ],
    ids=["padded-signature", "double-padded", "padded-header"],
)
async def test_only_the_canonical_spelling_of_a_token_verifies(
    http: httpx.AsyncClient, spelling: Any
) -> None:
    """Regression: an extra ``=`` on the signature still verified."""
    token = mint("viewer")
    assert (await whoami(http, token)).status_code == 200
    assert_401(await whoami(http, spelling(token)), "compact JWT")


async def test_non_canonical_spare_bits_in_the_signature_are_refused(http: httpx.AsyncClient) -> None:
    """A 32-byte HS256 signature is 43 characters whose last carries 2 spare bits: setting
    them gives another string that decodes to the same bytes."""
    token = mint("viewer")
    head, _, signature = token.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    variant = f"{head}.{signature[:-1]}{alphabet[last ^ 1]}"
    assert variant != token
    assert_401(await whoami(http, variant), "compact JWT")


@pytest.mark.parametrize("role", ["ADMIN", "Admin", "admin "])
async def test_role_names_are_exact(http: httpx.AsyncClient, role: str) -> None:
    """Regression: ``ADMIN`` was read as admin."""
    response = await whoami(http, mint(role))
    assert response.status_code == 403, response.text
    assert "no platform role" in response.json()["error"]


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"email": "approver@example.com\n"}, ("'email' claim contains control characters",)),
        ({"email": "a" * 40_000 + "@example.com"}, ("'email' claim is longer than 254 characters",)),
        ({"sub": "s" * 256, "email": None}, ("'sub' claim is longer than 255 characters",)),
        ({"email": "approver\u202e@example.com"}, ("bidirectional",)),
    ],
)
async def test_an_unstorable_actor_cannot_approve(
    stack: GatewayStack, http: httpx.AsyncClient, claims: dict[str, Any], words: tuple[str, ...]
) -> None:
    """Regression: an approver whose e-mail could never go into a commit trailer (a newline,
    40 KB) could approve; the request then failed for ever. Such a token authenticates nobody."""
    created = await http.post(
        "/v1/environment-requests",
        json={
            "app": "payments-api",
            "team": "payments",
            "class": "preview",
            "region": "us-east-1",
            "ttl_hours": 24,
            "owner": "alice@example.com",
            "repository": "https://github.com/example/payments-api.git",
        },
        headers={"Authorization": f"Bearer {mint('requester')}"},
    )
    assert created.status_code == 201, created.text
    token = mint("approver", **{k: v for k, v in claims.items() if v is not None})
    if claims.get("email", "") is None:
        token = signed({"sub": claims["sub"], "role": "approver", "iat": NOW, "exp": NOW + 600})
    response = await http.post(
        f"/v1/environment-requests/{created.json()['id']}/approve",
        headers={"Authorization": f"Bearer {token}", "X-Platform-Approval-Signature": "0" * 64},
    )
    assert_401(response, *words)
