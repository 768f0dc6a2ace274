"""Rate limits at the gateway: one caller's changes, one team's creates (429 with Retry-After).

The real gateway in front of the real intake and policy on real NATS and Postgres, with
small limits: 20 changes a minute per caller, 3 creates a minute per team. Each test uses
callers and teams of its own, so the buckets of one test are not the next one's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.api_flows import request_body
from tests.support.gateway import auth, gateway_with_services

SUBJECT_PER_MINUTE = 20
TEAM_PER_MINUTE = 3
TOKEN_TTL = 3600


@pytest.fixture(scope="module")
async def http(stack_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    limits = {
        "PLATFORM_RATE_LIMIT_SUBJECT_PER_MINUTE": str(SUBJECT_PER_MINUTE),
        "PLATFORM_RATE_LIMIT_TEAM_PER_MINUTE": str(TEAM_PER_MINUTE),
    }
    async with (
        gateway_with_services(stack_env, ["policy", "intake", "renderer"], **limits) as (base_url, _),
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        yield client


def requester(name: str, *teams: str) -> dict[str, str]:
    return auth("requester", sub=name, email=f"{name}@example.com", teams=list(teams), ttl=TOKEN_TTL)


def rate_limited(response: httpx.Response, limit: str, per_minute: int) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == "rate_limited"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["details"] == {"limit": limit, "per_minute": per_minute, "retry_after_seconds": retry_after}
    assert body["error"].endswith(f"at most {per_minute} a minute; retry in {retry_after} s")
    return body


async def test_a_caller_over_its_change_limit_gets_429_and_may_go_on_after_retry_after(
    http: httpx.AsyncClient,
) -> None:
    dana = requester("dana", "payments")
    # Deleting a request that does not exist changes nothing but is a change all the same.
    answers = [
        (await http.delete(f"/v1/environment-requests/req-missing-{n}", headers=dana)).status_code
        for n in range(SUBJECT_PER_MINUTE)
    ]
    assert answers == [404] * SUBJECT_PER_MINUTE
    refused = await http.delete("/v1/environment-requests/req-missing-x", headers=dana)
    body = rate_limited(refused, "subject", SUBJECT_PER_MINUTE)
    assert body["error"].startswith("too many changes from dana@example.com:")
    # Reads are not changes; another caller has a bucket of its own.
    assert (await http.get("/v1/environment-requests", headers=dana)).status_code == 200
    erin = requester("erin", "payments")
    assert (await http.delete("/v1/environment-requests/req-missing-y", headers=erin)).status_code == 404
    # Retry-After is honest: after it, the caller's next change goes through.
    await asyncio.sleep(int(refused.headers["Retry-After"]))
    assert (await http.delete("/v1/environment-requests/req-missing-z", headers=dana)).status_code == 404


async def test_a_team_over_its_create_limit_gets_429_whoever_sends_them(http: httpx.AsyncClient) -> None:
    fay, gus = requester("fay", "ledger"), requester("gus", "ledger")
    # Refused creates in another team's name use none of that team's allowance.
    intruder = requester("ivy", "search")
    for n in range(TEAM_PER_MINUTE + 1):
        response = await http.post(
            "/v1/environment-requests", json=request_body(team="ledger", app=f"ivy-{n}"), headers=intruder
        )
        assert response.status_code == 403, response.text
    # Dry runs store nothing and are not counted against the team.
    for n in range(TEAM_PER_MINUTE + 1):
        planned = await http.post(
            "/v1/environment-requests",
            params={"dry_run": "true"},
            json=request_body(team="ledger", app=f"plan-{n}"),
            headers=fay,
        )
        assert planned.status_code == 200, planned.text
    created = [
        await http.post(
            "/v1/environment-requests", json=request_body(team="ledger", app=f"app-{n}"), headers=caller
        )
        for n, caller in enumerate([fay, gus, fay])
    ]
    assert [response.status_code for response in created] == [201] * TEAM_PER_MINUTE
    over = await http.post("/v1/environment-requests", json=request_body(team="ledger", app="app-4"), headers=gus)
    body = rate_limited(over, "team", TEAM_PER_MINUTE)
    assert body["error"].startswith("too many environment requests for team ledger:")
    # Nothing was stored for the refused create.
    listed = (await http.get("/v1/environment-requests", params={"team": "ledger"}, headers=fay)).json()
    assert sorted(item["app"] for item in listed["items"]) == ["app-0", "app-1", "app-2"]
    # Another team goes on creating.
    hal = requester("hal", "billing")
    other = await http.post("/v1/environment-requests", json=request_body(team="billing"), headers=hal)
    assert other.status_code == 201, other.text


async def test_the_api_reference_documents_429_on_every_change_and_on_no_read(http: httpx.AsyncClient) -> None:
    document = (await http.get("/schema/openapi.json")).json()
    changes = reads = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/v1/") or "security" not in operation:
                continue
            if method in ("post", "put", "patch", "delete"):
                changes += 1
                assert "429" in operation["responses"], f"{method} {path}"
                assert "Retry-After" in operation["responses"]["429"]["headers"]
            else:
                reads += 1
                assert "429" not in operation["responses"], f"{method} {path}"
    assert changes >= 10
    assert reads >= 10
