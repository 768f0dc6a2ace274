"""Inputs a black-box probe found answered wrongly, through the gateway in front of the real
intake and policy: each is a 4xx naming what is wrong (issue 11, "input and token edge cases").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.api_flows import request_body
from tests.support.gateway import auth, gateway_with_services

TOKEN_TTL = 4 * 3600
ALICE = auth("requester", teams=["payments"], ttl=TOKEN_TTL)


@pytest.fixture(scope="module")
async def http(stack_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """One gateway and its services for the module: each case is a refusal or a request of
    its own (its own app name or idempotency key), so the cases do not share what they read."""
    async with (
        gateway_with_services(stack_env, ["policy", "intake", "renderer"]) as (base_url, _),
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        yield client


def refused_field(response: httpx.Response, status: int) -> dict[str, str]:
    """The single detail of a refusal naming one field."""
    assert response.status_code == status, response.text
    [detail] = [{k: v for k, v in d.items() if k in ("field", "message")} for d in response.json()["details"]]
    return detail


@pytest.mark.parametrize(
    "after", ["\u00b2.1", "1.\u00b2", "\u0663.1", "99999999999999999999.1", "1.2.3", "-1.2"]
)
async def test_a_feed_cursor_that_is_not_ascii_digits_is_a_422_naming_after(
    http: httpx.AsyncClient, after: str
) -> None:
    """Regression: ``after=².1`` passed ``str.isdigit()`` and ``int()`` raised: a 500. Now the
    422 any malformed cursor (``after=abc``) has always had."""
    response = await http.get("/v1/events", params={"after": after}, headers=ALICE)
    assert refused_field(response, 422)["field"] == "after"


async def test_the_feed_still_takes_its_own_cursors_and_end(http: httpx.AsyncClient) -> None:
    first = await http.get("/v1/events", params={"after": "end"}, headers=ALICE)
    assert first.status_code == 200, first.text
    again = await http.get("/v1/events", params={"after": first.json()["next_cursor"]}, headers=ALICE)
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("repository", "message"),
    [
        ("-oProxyCommand@github.com:x/y.git", "must not have a user or host starting with '-'"),
        ("ssh://-oProxyCommand@github.com/x", "must not have a user or host starting with '-'"),
        ("ssh://git@-oProxyCommand=x/y.git", "must not have a user or host starting with '-'"),
        ("https://-github.com/x/y.git", "must not have a user or host starting with '-'"),
        ("https://github.com:65536/x/y.git", "must have a port between 1 and 65535"),
        ("ssh://git@github.com:99999/x/y.git", "must have a port between 1 and 65535"),
        ("ssh://git@github.com:0/x/y.git", "must have a port between 1 and 65535"),
    ],
)
async def test_a_repository_url_git_would_read_as_an_option_is_refused(
    http: httpx.AsyncClient, repository: str, message: str
) -> None:
    """Regression: these were stored and rendered into the Application's ``repoURL``."""
    response = await http.post(
        "/v1/environment-requests", json=request_body(repository=repository), headers=ALICE
    )
    assert refused_field(response, 422) == {"field": "repository", "message": message}


@pytest.mark.parametrize(
    "revision",
    [
        "main\u202e",  # right-to-left override
        "\ufeffmain",  # byte-order mark
        "main\u0085",  # NEL
        "$(touch /tmp/x)",
        "`id`",
        "main;id",
        "main|id",
        "ma\u00efn",
        "a.lock",
        "a/.hidden",
        "a..b",
        "release/",
        "@",
    ],
)
async def test_a_revision_outside_git_ref_names_is_refused(http: httpx.AsyncClient, revision: str) -> None:
    response = await http.post(
        "/v1/environment-requests", json=request_body(revision=revision), headers=ALICE
    )
    detail = refused_field(response, 422)
    assert detail["field"] == "revision"
    assert detail["message"].startswith("must be a git branch, tag or commit")


@pytest.mark.parametrize(
    "revision",
    [
        "pr-42",
        "main",
        "v1.2.3",
        "feature/x",
        "release/2024.01",
        "v1.2.3+build.5",
        "refs/heads/main",
        "a" * 40,
    ],
)
async def test_ordinary_revisions_stay_valid(http: httpx.AsyncClient, revision: str) -> None:
    response = await http.post(
        "/v1/environment-requests",
        params={"dry_run": "true"},
        json=request_body(revision=revision),
        headers=ALICE,
    )
    assert response.status_code == 200, response.text


async def test_a_body_of_thousands_of_unknown_keys_gets_a_short_answer(http: httpx.AsyncClient) -> None:
    """Regression: a 50 KB body of unknown keys was answered with a 304 KB error body."""
    unknown = {f"k{i:04d}": 1 for i in range(5000)}
    content = json.dumps({**request_body(), **unknown}).encode()
    assert len(content) > 50_000
    response = await http.post(
        "/v1/environment-requests",
        content=content,
        headers={**ALICE, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 5_000
    body = response.json()
    assert [detail["field"] for detail in body["details"]] == [f"k{i:04d}" for i in range(20)]
    assert body["error"].endswith("and 4980 more (the first 20 problems are listed)")
    assert body["error"].startswith("invalid environment request: k0000, k0001,")


async def test_a_long_unknown_key_is_named_by_its_start(http: httpx.AsyncClient) -> None:
    key = "x" * 60_000
    response = await http.post("/v1/environment-requests", json={**request_body(), key: 1}, headers=ALICE)
    detail = refused_field(response, 422)
    assert detail == {"field": "x" * 61 + "...", "message": "unknown field"}
    assert len(response.content) < 2_000


async def test_replaying_an_idempotency_key_checks_the_team_scope_like_a_read(
    http: httpx.AsyncClient,
) -> None:
    """Regression: the replay returned the stored request to the same actor even when the
    new token no longer covered its team."""
    key = {"Idempotency-Key": "payments-pr-7"}
    created = await http.post("/v1/environment-requests", json=request_body(), headers={**ALICE, **key})
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]

    moved = auth("requester", teams=["search"], ttl=TOKEN_TTL)  # same actor, another team now
    replay = await http.post("/v1/environment-requests", json=request_body(), headers={**moved, **key})
    read = await http.get(f"/v1/environment-requests/{request_id}", headers=moved)
    assert replay.status_code == read.status_code == 403, replay.text
    assert replay.json()["error"] == read.json()["error"]
    assert "payments" not in replay.json()["error"]  # the request's team is not named

    again = await http.post("/v1/environment-requests", json=request_body(), headers={**ALICE, **key})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == request_id


async def test_a_keyed_request_id_cannot_be_computed_from_actor_and_key(http: httpx.AsyncClient) -> None:
    """Regression: the id was sha256([actor, key]), so it could be known before the request
    existed; now it is keyed with intake's secret, and a dry run still shows the id to come."""
    key = "payments-pr-8"
    headers = {**ALICE, "Idempotency-Key": key}
    planned = await http.post(
        "/v1/environment-requests", params={"dry_run": "true"}, json=request_body(), headers=headers
    )
    created = await http.post("/v1/environment-requests", json=request_body(), headers=headers)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    guessable = "req-" + hashlib.sha256(json.dumps(["alice@example.com", key]).encode()).hexdigest()[:16]
    assert request_id != guessable
    assert planned.json()["request_id"] == request_id


async def test_keyed_ids_survive_a_restart_of_intake(platform_env: dict[str, str]) -> None:
    """The key lives in intake's database: another intake process (a restart, a replica)
    derives the same id for the same actor and key."""
    headers = {**ALICE, "Idempotency-Key": "payments-pr-9"}
    planned = []
    for _ in range(2):
        async with (
            gateway_with_services(platform_env, ["policy", "intake", "renderer"]) as (base_url, _),
            httpx.AsyncClient(base_url=base_url, timeout=10) as client,
        ):
            answer = await client.post(
                "/v1/environment-requests", params={"dry_run": "true"}, json=request_body(), headers=headers
            )
            assert answer.status_code == 200, answer.text
            planned.append(answer.json()["request_id"])
    assert planned[0] == planned[1]
