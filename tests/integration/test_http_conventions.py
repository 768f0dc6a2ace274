"""HTTP conventions of the API through the real gateway in front of the real policy and intake
(real NATS and Postgres): every error is an RFC 9457 problem that keeps ``error``, ``code`` and
``details``; every resource read carries an ``ETag`` and answers ``If-None-Match`` with 304."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.telemetry import REGISTRY
from tests.support.alerts import alert_expr, evaluate, registry_samples
from tests.support.api_flows import PREVIEW
from tests.support.bus import wait_until
from tests.support.gateway import auth, gateway_with_services

TOKEN_TTL = 4 * 3600
ADMIN = auth("admin", email="root@example.com", sub="root", ttl=TOKEN_TTL)
ALICE = auth("requester", teams=["payments"], ttl=TOKEN_TTL)
VIEWER = auth("viewer", teams=["payments"], ttl=TOKEN_TTL)
PROBLEM_MEMBERS = {"error", "code", "details", "type", "title", "status", "detail", "instance"}


@pytest.fixture(scope="module")
async def http(stack_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """One gateway and its services for the module: each test reads its own request or
    compares what it reads before and after its own change, so none depends on another."""
    async with (
        gateway_with_services(stack_env, ["policy", "intake"]) as (base_url, _),
        httpx.AsyncClient(base_url=base_url, timeout=10) as client,
    ):
        yield client


def assert_problem(response: httpx.Response, status: int, code: str, path: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) == PROBLEM_MEMBERS
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"/problems/{code}"
    assert body["title"]
    assert body["detail"] == body["error"]
    assert body["error"]
    assert body["instance"] == path
    return body


async def create_request(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post("/v1/environment-requests", json=PREVIEW, headers=ALICE)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_every_kind_of_error_is_a_problem_keeping_error_code_and_details(
    http: httpx.AsyncClient,
) -> None:
    bad_limit = await http.get("/v1/environment-requests", params={"limit": "many"}, headers=ALICE)
    body = assert_problem(bad_limit, 400, "validation", "/v1/environment-requests")
    assert [detail["field"] for detail in body["details"]] == ["limit"]

    no_token = await http.get("/v1/environment-requests")
    assert_problem(no_token, 401, "unauthorized", "/v1/environment-requests")
    assert no_token.headers["www-authenticate"] == "Bearer"

    viewer_creates = await http.post("/v1/environment-requests", json=PREVIEW, headers=VIEWER)
    assert_problem(viewer_creates, 403, "forbidden", "/v1/environment-requests")

    unknown = await http.get("/v1/environment-requests/req-missing", headers=ALICE)
    assert_problem(unknown, 404, "not_found", "/v1/environment-requests/req-missing")
    assert_problem(await http.get("/v1/nowhere", headers=ALICE), 404, "not_found", "/v1/nowhere")

    wrong_method = await http.put("/v1/environment-requests", headers=ALICE)
    assert_problem(wrong_method, 405, "method_not_allowed", "/v1/environment-requests")
    assert "GET" in wrong_method.headers["allow"]

    invalid = await http.post("/v1/environment-requests", json={**PREVIEW, "ttl_hours": 0}, headers=ALICE)
    body = assert_problem(invalid, 422, "validation", "/v1/environment-requests")
    assert "ttl_hours" in {detail["field"] for detail in body["details"]}

    created = await create_request(http)
    path = f"/v1/environment-requests/{created['id']}"
    assert (await http.delete(path, headers=ALICE)).status_code == 202
    again = await http.delete(path, headers=ALICE)
    assert_problem(again, 409, "conflict", path)

    # The renderer is not running: nobody answers its dead letters.
    replay = "/v1/dead-letters/renderer/1/replay"
    unavailable = await http.post(replay, headers=ADMIN)
    assert_problem(unavailable, 503, "unavailable", replay)
    assert unavailable.headers["retry-after"] == "5"


async def test_the_instance_is_the_path_as_sent(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/environment-classes/no%20such%20class", headers=ALICE)
    assert_problem(response, 404, "not_found", "/v1/environment-classes/no%20such%20class")


async def test_health_reports_stay_plain_json(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"status", "checks"}


async def settled(http: httpx.AsyncClient, path: str) -> bool:
    """Whether the request kept its version for half a second: policy's answer moves it on
    once after the create (only intake and policy run here, so nothing moves it further)."""
    before = (await http.get(path, headers=ALICE)).json()["version"]
    await asyncio.sleep(0.5)
    return bool(before > 1 and (await http.get(path, headers=ALICE)).json()["version"] == before)


async def test_an_environment_request_is_tagged_with_its_version(http: httpx.AsyncClient) -> None:
    created = await create_request(http)
    path = f"/v1/environment-requests/{created['id']}"
    await wait_until(lambda: settled(http, path), what="the request's version to stop changing")
    read = await http.get(path, headers=ALICE)
    assert read.status_code == 200
    etag = read.headers["etag"]
    assert etag == f'"{read.json()["version"]}"'

    unchanged = await http.get(path, headers={**ALICE, "If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    assert (await http.get(path, headers={**ALICE, "If-None-Match": f"W/{etag}"})).status_code == 304
    assert (await http.get(path, headers={**ALICE, "If-None-Match": '"0", *'})).status_code == 304

    # The ETag is what If-Match takes: a stale one refuses the change, the current one makes it.
    stale = '"0"'
    refused = await http.patch(path, json={"ttl_hours": 12}, headers={**ALICE, "If-Match": stale})
    assert_problem(refused, 409, "conflict", path)
    current = await http.get(path, headers=ALICE)
    changed = await http.patch(
        path, json={"ttl_hours": 12}, headers={**ALICE, "If-Match": current.headers["etag"]}
    )
    assert changed.status_code == 200, changed.text

    after = await http.get(path, headers={**ALICE, "If-None-Match": current.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] == f'"{after.json()["version"]}"' != current.headers["etag"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/environment-classes/preview",
        "/v1/quota-profiles/small",
        "/v1/policy-packs/baseline-security",
        "/v1/teams/payments",
    ],
)
async def test_catalog_documents_and_teams_are_tagged(http: httpx.AsyncClient, path: str) -> None:
    read = await http.get(path, headers=ALICE)
    assert read.status_code == 200, read.text
    etag = read.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag), etag  # strong: no W/ prefix

    unchanged = await http.get(path, headers={**ALICE, "If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", etag)
    stale = await http.get(path, headers={**ALICE, "If-None-Match": '"stale"'})
    assert stale.status_code == 200
    assert stale.json() == read.json()


async def test_a_tag_changes_when_the_document_does(http: httpx.AsyncClient) -> None:
    before = await http.get("/v1/teams/payments", headers=ALICE)
    set_budget = await http.put("/v1/teams/payments/budget", json={"monthly_usd": 1234}, headers=ADMIN)
    assert set_budget.status_code == 200, set_budget.text
    after = await http.get("/v1/teams/payments", headers={**ALICE, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.json()["monthly_budget_usd"] == 1234
    assert after.headers["etag"] != before.headers["etag"]


def without_name(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**{key: value for key, value in document.items() if key != "name"}, **changes}


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("/v1/environment-classes/if-match-class", {"description": "second"}),
        ("/v1/quota-profiles/if-match-profile", {"description": "second"}),
        ("/v1/policy-packs/if-match-pack", {"description": "second"}),
    ],
)
async def test_a_catalog_put_with_if_match_writes_only_over_what_was_read(
    http: httpx.AsyncClient, path: str, change: dict[str, Any]
) -> None:
    source = {
        "environment-classes": "/v1/environment-classes/preview",
        "quota-profiles": "/v1/quota-profiles/small",
        "policy-packs": "/v1/policy-packs/preview-networking",
    }[path.split("/")[2]]
    seed = without_name((await http.get(source, headers=ADMIN)).json())
    # Nothing there yet: `If-Match: *` (update only) does not hold, and nothing is created.
    missing = await http.put(path, json=seed, headers={**ADMIN, "If-Match": "*"})
    assert_problem(missing, 409, "conflict", path)
    assert (await http.get(path, headers=ADMIN)).status_code == 404
    assert (await http.put(path, json=seed, headers=ADMIN)).status_code == 201

    read = await http.get(path, headers=ADMIN)
    etag = read.headers["etag"]
    first = await http.put(
        path, json=without_name(read.json(), **change), headers={**ADMIN, "If-Match": etag}
    )
    assert first.status_code == 200, first.text
    # Someone else's write came first: the tag read before it no longer holds.
    lost = await http.put(
        path, json=without_name(read.json(), description="lost update"), headers={**ADMIN, "If-Match": etag}
    )
    body = assert_problem(lost, 409, "conflict", path)
    current = await http.get(path, headers=ADMIN)
    assert f"its ETag is now {current.headers['etag']}" in body["error"]
    assert current.json()["description"] == "second"
    # A weak tag never matches (strong comparison); a list matches when one of its tags does.
    weak = await http.put(
        path, json=without_name(current.json()), headers={**ADMIN, "If-Match": f"W/{current.headers['etag']}"}
    )
    assert_problem(weak, 409, "conflict", path)
    listed = await http.put(
        path,
        json=without_name(current.json(), description="third"),
        headers={**ADMIN, "If-Match": f'"other", {current.headers["etag"]}'},
    )
    assert listed.status_code == 200, listed.text
    assert (await http.get(path, headers=ADMIN)).json()["description"] == "third"


async def test_if_match_lines_are_one_list_and_a_malformed_one_is_a_400(http: httpx.AsyncClient) -> None:
    path = "/v1/quota-profiles/if-match-lines"
    seed = without_name((await http.get("/v1/quota-profiles/small", headers=ADMIN)).json())
    created = await http.put(path, json=seed, headers=ADMIN)
    assert created.status_code == 201, created.text
    # The PUT's answer carries the stored document's tag, as its GET does.
    etag = created.headers["etag"]
    assert etag == (await http.get(path, headers=ADMIN)).headers["etag"]
    # Two header lines are one list (RFC 9110 §5.3): the current tag on the second line holds.
    two_lines = await http.put(
        path,
        json=without_name(seed, description="two lines"),
        headers=[*ADMIN.items(), ("If-Match", '"other"'), ("If-Match", etag)],
    )
    assert two_lines.status_code == 200, two_lines.text
    for malformed in ("", "nope", etag.strip('"'), f"w/{etag}", f"*, {etag}"):
        refused = await http.put(path, json=seed, headers={**ADMIN, "If-Match": malformed})
        body = assert_problem(refused, 400, "validation", path)
        assert body["details"][0]["field"] == "If-Match", malformed
    assert (await http.get(path, headers=ADMIN)).json()["description"] == "two lines"


async def test_an_invalid_body_is_refused_whatever_if_match_says(http: httpx.AsyncClient) -> None:
    path = "/v1/environment-classes/preview"
    read = await http.get(path, headers=ADMIN)
    unknown_profile = without_name(read.json(), quota_profile="no-such-profile")
    refused = await http.put(path, json=unknown_profile, headers={**ADMIN, "If-Match": '"stale"'})
    body = assert_problem(refused, 422, "validation", path)
    assert [detail["field"] for detail in body["details"]] == ["quota_profile"]
    stale = await http.put(path, json=without_name(read.json()), headers={**ADMIN, "If-Match": '"stale"'})
    conflict = assert_problem(stale, 409, "conflict", path)
    assert conflict["details"] == {"etag": read.headers["etag"]}


async def test_a_budget_put_with_if_match_writes_only_over_what_was_read(http: httpx.AsyncClient) -> None:
    path = "/v1/teams/if-match-team"
    read = await http.get(path, headers=ADMIN)
    etag = read.headers["etag"]
    first = await http.put(f"{path}/budget", json={"monthly_usd": 700}, headers={**ADMIN, "If-Match": etag})
    assert first.status_code == 200, first.text
    stale = await http.put(f"{path}/budget", json={"monthly_usd": 9}, headers={**ADMIN, "If-Match": etag})
    assert_problem(stale, 409, "conflict", f"{path}/budget")
    assert (await http.get(path, headers=ADMIN)).json()["monthly_budget_usd"] == 700
    # The tag covers the spend: an environment counted since the read makes it stale too.
    before = (await http.get(path, headers=ADMIN)).headers["etag"]
    created = await http.post(
        "/v1/environment-requests", json={**PREVIEW, "team": "if-match-team"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text

    async def counted() -> bool:
        return bool((await http.get(path, headers=ADMIN)).json()["active_environments"])

    await wait_until(counted, what="the new environment counted in the team's spend")
    stale = await http.put(f"{path}/budget", json={"monthly_usd": 9}, headers={**ADMIN, "If-Match": before})
    assert_problem(stale, 409, "conflict", f"{path}/budget")
    current = (await http.get(path, headers=ADMIN)).headers["etag"]
    assert (
        await http.put(f"{path}/budget", json={"monthly_usd": 800}, headers={**ADMIN, "If-Match": current})
    ).status_code == 200


async def test_server_errors_fire_the_error_rate_alert_and_client_errors_do_not(
    http: httpx.AsyncClient,
) -> None:
    errors = alert_expr("PlatformHttpErrors")
    start = registry_samples(REGISTRY)
    for _ in range(20):
        assert (await http.get("/v1/environment-requests/req-missing", headers=ALICE)).status_code == 404
        assert (await http.get("/v1/environment-classes/preview", headers=ALICE)).status_code == 200
    assert not evaluate(errors, registry_samples(REGISTRY), before=start)  # 4xx are the caller's

    # The renderer is not running: every replay of its dead letters is a 503. The errors go on
    # between two scrapes (a series Prometheus first sees at its first error has no rate yet).
    assert (await http.post("/v1/dead-letters/renderer/1/replay", headers=ADMIN)).status_code == 503
    outage = registry_samples(REGISTRY)
    for _ in range(3):
        assert (await http.post("/v1/dead-letters/renderer/1/replay", headers=ADMIN)).status_code == 503
    for _ in range(7):
        assert (await http.get("/v1/environment-classes/preview", headers=ALICE)).status_code == 200
    assert evaluate(errors, registry_samples(REGISTRY), before=outage) == {(): pytest.approx(0.3)}
