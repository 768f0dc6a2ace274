"""Rate limits at the gateway: one caller's changes, one team's creates (429 with Retry-After).

The real gateway in front of the real intake, policy and renderer on real NATS and Postgres,
with small limits: 20 changes and 2 creates or reconciles a minute per caller, 3 creates a
minute per team. Each test uses callers and teams of its own, so the buckets of one test are
not the next one's.
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
GENERATIONS_PER_MINUTE = 2
TEAM_PER_MINUTE = 3
TOKEN_TTL = 3600


@pytest.fixture(scope="module")
async def http(stack_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    limits = {
        "PLATFORM_RATE_LIMIT_SUBJECT_PER_MINUTE": str(SUBJECT_PER_MINUTE),
        "PLATFORM_RATE_LIMIT_SUBJECT_GENERATIONS_PER_MINUTE": str(GENERATIONS_PER_MINUTE),
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


async def create(http: httpx.AsyncClient, caller: dict[str, str], **body: Any) -> httpx.Response:
    return await http.post("/v1/environment-requests", json=request_body(**body), headers=caller)


async def test_a_team_over_its_create_limit_gets_429_whoever_sends_them(http: httpx.AsyncClient) -> None:
    fay, gus, kim = requester("fay", "ledger"), requester("gus", "ledger"), requester("kim", "ledger")
    # Refused creates in another team's name use none of that team's allowance.
    intruder = requester("ivy", "search")
    for n in range(TEAM_PER_MINUTE + 1):
        assert (await create(http, intruder, team="ledger", app=f"ivy-{n}")).status_code == 403
    # Neither do the team's own members' mistakes: a region the class does not allow is refused.
    for n in range(TEAM_PER_MINUTE + 1):
        assert (await create(http, fay, team="ledger", app=f"typo-{n}", region="mars-1")).status_code == 422
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
        await create(http, caller, team="ledger", app=f"app-{n}") for n, caller in enumerate([fay, gus, fay])
    ]
    assert [response.status_code for response in created] == [201] * TEAM_PER_MINUTE
    over = await create(http, kim, team="ledger", app="app-4")
    body = rate_limited(over, "team", TEAM_PER_MINUTE)
    assert body["error"].startswith("too many environment requests for team ledger:")
    # Nothing was stored for the refused create.
    listed = (await http.get("/v1/environment-requests", params={"team": "ledger"}, headers=fay)).json()
    assert sorted(item["app"] for item in listed["items"]) == ["app-0", "app-1", "app-2"]
    # A team's 429 costs the caller nothing of its own allowance: more of them than the
    # caller's changes a minute, and its next change still goes through.
    for n in range(SUBJECT_PER_MINUTE + 1):
        assert (await create(http, kim, team="ledger", app=f"kim-{n}")).status_code == 429
    assert (await http.delete("/v1/environment-requests/req-missing-k", headers=kim)).status_code == 404
    # Another team goes on creating.
    hal = requester("hal", "billing")
    assert (await create(http, hal, team="billing")).status_code == 201


async def test_one_caller_cannot_take_a_teams_allowance_nor_make_up_teams_to_create_more(
    http: httpx.AsyncClient,
) -> None:
    # No teams claim: acts for every team (team scoping off, as by default outside strict mode).
    max_ = auth("requester", sub="max", email="max@example.com", ttl=TOKEN_TTL)
    answers = [
        (await create(http, max_, team=f"made-up-{n}")).status_code for n in range(GENERATIONS_PER_MINUTE)
    ]
    assert answers == [201] * GENERATIONS_PER_MINUTE
    over = await create(http, max_, team="made-up-9")
    body = rate_limited(over, "generations", GENERATIONS_PER_MINUTE)
    assert body["error"].startswith("too many creates and reconciles from max@example.com:")
    # The team the refused create named lost nothing: its members still have their allowance.
    ned = requester("ned", "made-up-9")
    assert (await create(http, ned, team="made-up-9")).status_code == 201


async def test_reconciles_count_as_new_generations_unless_refused(http: httpx.AsyncClient) -> None:
    oli = requester("oli", "orders")
    request_id = (await create(http, oli, team="orders")).json()["id"]
    # Not ready yet: each reconcile is refused (409) and counts for nothing.
    for _ in range(GENERATIONS_PER_MINUTE + 1):
        refused = await http.post(f"/v1/environment-requests/{request_id}/reconcile", headers=oli)
        assert refused.status_code == 409, refused.text
    assert (await create(http, oli, team="orders", app="second")).status_code == 201
    # Two generations this minute: a third, create or reconcile, waits.
    reconcile = await http.post(f"/v1/environment-requests/{request_id}/reconcile", headers=oli)
    rate_limited(reconcile, "generations", GENERATIONS_PER_MINUTE)


async def test_an_idempotent_retry_gets_its_request_back_not_a_429(http: httpx.AsyncClient) -> None:
    pam = requester("pam", "shipping")
    key = {"Idempotency-Key": "shipping-pr-7"}
    answers = [
        await http.post(
            "/v1/environment-requests", json=request_body(team="shipping"), headers={**pam, **key}
        )
        for _ in range(TEAM_PER_MINUTE + 2)
    ]
    assert [response.status_code for response in answers] == [201] + [200] * (TEAM_PER_MINUTE + 1)
    assert len({response.json()["id"] for response in answers}) == 1


async def test_the_api_reference_documents_429_on_every_change_and_on_no_read(
    http: httpx.AsyncClient,
) -> None:
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
