"""The HTTP API over a real socket, forwarding over a real NATS server to stand-in services."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families

from contracts.rpc import CreateRequest
from tests.support.api_flows import request_body
from tests.support.bus import wait_until
from tests.support.gateway import BACKENDS, GatewayStack, auth, gateway_stack, gateway_with_services, mint

SECRET_LIKE = ("nats://", "127.0.0.1", "localhost", "postgresql://", "Traceback")
PROBLEM_MEMBERS = {"error", "code", "details", "type", "title", "status", "detail", "instance"}

# The sign-in settings: public, since `platformctl login` reads them before it has a token.
PUBLIC_API_PATHS = {"/v1/auth/config"}


@pytest.fixture
async def stand_in_intake(nats_url: str, isolation: Any) -> AsyncIterator[str]:
    """The gateway in front of the stand-in intake, for one test."""
    async with gateway_stack(nats_url, isolation.rpc_prefix) as running:
        yield running.base_url


@pytest.fixture(scope="module")
async def real_intake(stack_env: dict[str, str]) -> AsyncIterator[str]:
    """The gateway in front of the real intake and policy, once for the module: each test
    reads only the requests it made itself (the listing one, a team of its own)."""
    async with gateway_with_services(stack_env, ["policy", "intake"]) as (base_url, _):
        yield base_url


@pytest.fixture(params=["stand-in intake", "real intake"])
def gateway_url(request: pytest.FixtureRequest) -> str:
    """The gateway in front of the stand-in intake, then of the real intake (and policy, whose
    catalog intake replicates): the tests using it are what the gateway promises whichever
    intake answers."""
    return str(
        request.getfixturevalue("stand_in_intake" if request.param == "stand-in intake" else "real_intake")
    )


@pytest.fixture
async def api(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        yield client


def assert_error_body(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == PROBLEM_MEMBERS
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body["detail"] == body["error"]
    assert body["status"] == status
    assert body["type"] == f"/problems/{code}"
    assert body["instance"] == response.request.url.raw_path.decode().split("?")[0]
    assert not any(marker in response.text for marker in SECRET_LIKE)
    return body


# -- authentication and authorization ------------------------------------------------------------


async def test_missing_token_is_401_with_a_bearer_challenge(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/environment-requests")
    assert_error_body(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        f"Bearer {mint(secret='some-other-secret-that-is-long-enough-0123456789')}",
        f"Bearer {mint(ttl=-3600)}",
        "Basic dXNlcjpwYXNz",
    ],
    ids=["garbage", "wrong-secret", "expired", "basic-auth"],
)
async def test_invalid_credentials_are_401(http: httpx.AsyncClient, header: str) -> None:
    response = await http.get("/v1/whoami", headers={"Authorization": header})
    assert_error_body(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_viewer_cannot_create(http: httpx.AsyncClient, stack: GatewayStack) -> None:
    response = await http.post("/v1/environment-requests", json=request_body(), headers=auth("viewer"))
    body = assert_error_body(response, 403, "forbidden")
    assert "viewer" in body["error"]
    assert stack.intake.received == []  # refused at the gateway, nothing forwarded


async def test_a_token_without_a_valid_role_is_403(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/whoami", headers=auth(["superuser"]))
    assert_error_body(response, 403, "forbidden")


async def test_whoami_shows_the_resolved_caller(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/v1/whoami", headers=auth(["viewer", "approver"], teams=["payments", "search"])
    )
    assert response.status_code == 200
    assert response.json() == {
        "actor": "alice@example.com",
        "role": "approver",
        "teams": ["payments", "search"],
        "subject": "user-1",
    }


@pytest.mark.parametrize("claims", [{"email": "alice@example.com\x00root"}, {"sub": "user-1\r\nX: y"}])
async def test_a_caller_named_with_control_characters_is_401(
    http: httpx.AsyncClient, claims: dict[str, str]
) -> None:
    response = await http.get("/v1/whoami", headers=auth("viewer", **claims))
    body = assert_error_body(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "\x00" not in body["error"]


# -- creating requests ---------------------------------------------------------------------------


async def test_create_forwards_the_actor_and_idempotency_key(
    http: httpx.AsyncClient, stack: GatewayStack
) -> None:
    response = await http.post(
        "/v1/environment-requests",
        json=request_body(labels={"pr": "42"}),
        headers={**auth("requester", teams=["payments"]), "Idempotency-Key": "retry-1"},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("req-")
    assert created["class"] == "preview"
    assert created["labels"] == {"pr": "42"}
    assert response.headers["Location"] == f"/v1/environment-requests/{created['id']}"
    [command] = stack.intake.received
    assert isinstance(command, CreateRequest)
    assert command.idempotency_key == "retry-1"
    assert (command.actor.actor, command.actor.subject, command.actor.role, command.actor.teams) == (
        "alice@example.com",
        "user-1",
        "requester",
        ["payments"],
    )
    assert command.body.model_dump(by_alias=True, exclude_none=True) == request_body(labels={"pr": "42"})


async def test_a_create_answers_201_with_the_request_and_its_location(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/environment-requests", json=request_body(labels={"pr": "42"}), headers=auth(teams=["payments"])
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"].startswith("req-")
    assert (created["class"], created["labels"], created["created_by"]) == (
        "preview",
        {"pr": "42"},
        "alice@example.com",
    )
    assert response.headers["Location"] == f"/v1/environment-requests/{created['id']}"


async def test_a_replay_returns_200_and_the_first_request(api: httpx.AsyncClient) -> None:
    headers = {**auth("requester"), "Idempotency-Key": "same-key"}
    first = await api.post("/v1/environment-requests", json=request_body(), headers=headers)
    again = await api.post("/v1/environment-requests", json=request_body(), headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert "Idempotent-Replayed" not in first.headers


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"app": "x",', "not valid JSON"),
        (b"[1, 2, 3]", "must be a JSON object, not an array"),
        (b'"just a string"', "must be a JSON object, not a string"),
        (b"", "empty"),
    ],
    ids=["truncated", "array", "string", "empty"],
)
async def test_malformed_bodies_are_400_naming_the_problem(
    http: httpx.AsyncClient, stack: GatewayStack, content: bytes, problem: str
) -> None:
    response = await http.post(
        "/v1/environment-requests", content=content, headers={**auth(), "Content-Type": "application/json"}
    )
    body = assert_error_body(response, 400, "validation")
    assert problem in body["error"]
    assert stack.intake.received == []


async def test_an_oversized_body_is_400(http: httpx.AsyncClient, stack: GatewayStack) -> None:
    big = request_body(owner="x" * 70_000)
    response = await http.post("/v1/environment-requests", json=big, headers=auth())
    body = assert_error_body(response, 400, "validation")
    assert "65536 bytes" in body["error"]
    assert stack.intake.received == []


async def test_an_oversized_chunked_body_is_400(http: httpx.AsyncClient) -> None:
    # No Content-Length: the limit must hold on the bytes actually received.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"owner": "'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}'

    response = await http.post("/v1/environment-requests", content=chunks(), headers=auth())
    assert_error_body(response, 400, "validation")


async def test_a_validation_reply_is_422_with_field_details(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/environment-requests", json={"app": "payments-api"}, headers=auth())
    body = assert_error_body(response, 422, "validation")
    fields = {item["field"] for item in body["details"]}
    assert fields == {"team", "class", "region", "ttl_hours", "owner", "repository"}


async def test_a_forbidden_reply_is_403(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/environment-requests", json=request_body(team="search"), headers=auth(teams=["payments"])
    )
    assert_error_body(response, 403, "forbidden")


# -- reading -------------------------------------------------------------------------------------


async def test_get_list_and_events(api: httpx.AsyncClient) -> None:
    # A team no other test makes requests for: the list is this test's request only.
    body = request_body(team="listing")
    created = (await api.post("/v1/environment-requests", json=body, headers=auth())).json()
    viewer = auth("viewer")
    got = await api.get(f"/v1/environment-requests/{created['id']}", headers=viewer)
    assert got.status_code == 200
    # The real request moves on (policy decides it); who it is does not.
    identity = ("id", "app", "team", "class", "region", "created_by", "created_at")
    assert {key: got.json()[key] for key in identity} == {key: created[key] for key in identity}
    page = await api.get("/v1/environment-requests", params={"team": "listing", "limit": 10}, headers=viewer)
    assert page.status_code == 200
    assert [item["id"] for item in page.json()["items"]] == [created["id"]]
    assert page.json()["next_cursor"] is None
    events = await api.get(f"/v1/environment-requests/{created['id']}/events", headers=viewer)
    assert events.status_code == 200
    assert [item["type"] for item in events.json()["items"]][:1] == ["request.submitted"]


async def test_list_filters_are_forwarded(http: httpx.AsyncClient, stack: GatewayStack) -> None:
    params = {"team": "payments", "status": "ready", "class": "preview", "cursor": "c1", "limit": "5"}
    response = await http.get("/v1/environment-requests", params=params, headers=auth("viewer"))
    assert response.status_code == 200
    [query] = stack.intake.received
    assert (query.team, query.status, query.class_name, query.cursor, query.limit) == (
        "payments",
        "ready",
        "preview",
        "c1",
        5,
    )


async def test_a_bad_query_parameter_is_400_in_the_error_shape(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/environment-requests", params={"limit": "lots"}, headers=auth("viewer"))
    body = assert_error_body(response, 400, "validation")
    assert body["details"][0]["field"] == "limit"


async def test_unknown_request_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/environment-requests/req-0000000000000000", headers=auth("viewer"))
    body = assert_error_body(response, 404, "not_found")
    assert "req-0000000000000000" in body["error"]


async def test_classes_are_sorted_by_name(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/environment-classes", headers=auth("viewer"))
    assert response.status_code == 200
    assert [item["name"] for item in response.json()["items"]] == ["preview", "shared-staging"]
    one = await http.get("/v1/environment-classes/preview", headers=auth("viewer"))
    assert one.status_code == 200
    assert one.json()["allowed_regions"] == ["us-east-1", "us-west-2"]
    missing = await http.get("/v1/environment-classes/nope", headers=auth("viewer"))
    assert_error_body(missing, 404, "not_found")


async def test_no_responder_is_503_with_retry_after(http: httpx.AsyncClient, stack: GatewayStack) -> None:
    await stack.stop("policy")
    response = await http.get("/v1/environment-classes", headers=auth("viewer"))
    body = assert_error_body(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "policy" in body["error"]


async def test_framework_errors_use_the_error_shape(http: httpx.AsyncClient) -> None:
    assert_error_body(await http.get("/v1/nothing-here"), 404, "not_found")
    not_allowed = await http.delete("/healthz")
    assert_error_body(not_allowed, 405, "method_not_allowed")
    assert "GET" in not_allowed.headers["Allow"]


async def test_the_trace_context_travels_to_the_service(http: httpx.AsyncClient, stack: GatewayStack) -> None:
    seen: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def spy(msg: Any) -> None:
        await seen.put(dict(msg.headers or {}))

    subscription = await stack.nc.subscribe(f"{stack.settings.rpc_prefix}.intake.get_request", cb=spy)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {**auth("viewer"), "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    await http.get("/v1/environment-requests/req-0000000000000001", headers=headers)
    forwarded = await asyncio.wait_for(seen.get(), 5)
    await subscription.unsubscribe()
    assert forwarded["traceparent"].split("-")[1] == trace_id


def concrete_paths(app: Litestar) -> list[str]:
    """Every path of the app's route table, each path parameter given a value of its type."""

    def value(match: re.Match[str]) -> str:
        return "1" if match["type"] == "int" else "x"

    return [re.sub(r"\{\w+:(?P<type>\w+)\}", value, route.path) for route in app.routes]


async def test_options_and_head_are_never_a_server_error_on_any_path(
    http: httpx.AsyncClient, stack: GatewayStack
) -> None:
    """OPTIONS needs no token on any path (preflights carry none): 204 with the methods the
    path allows. A guard that finds no caller is a 401, never a crash."""
    paths = concrete_paths(stack.app)
    assert len(paths) > 20
    for path in paths:
        options = await http.options(path)
        assert options.status_code == 204, (path, options.status_code, options.text)
        assert "OPTIONS" in options.headers["Allow"], path
        head = await http.head(path)
        assert head.status_code < 500, (path, head.status_code)


# -- operations ----------------------------------------------------------------------------------


async def test_healthz(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_the_gateways_own_nats_connection_only(http: httpx.AsyncClient) -> None:
    """Four of the six backends are not answering: the gateway is still ready (they are
    reported by /v1/status), so its replicas stay in their Service."""
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"nats": "ok"}}


async def test_status_reports_each_backend_as_seen_from_the_gateway(
    http: httpx.AsyncClient, stack: GatewayStack
) -> None:
    assert_error_body(await http.get("/v1/status"), 401, "unauthorized")
    response = await http.get("/v1/status", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    seen = {item["name"]: item for item in body["dependencies"] if item["reported_by"] == "gateway"}
    assert set(seen) == {f"service/{name}" for name in BACKENDS}
    assert seen["service/intake"]["state"] == "up"
    assert seen["service/approval"]["state"] == "down"
    assert seen["service/approval"]["last_error"] == "the approval service is not answering"
    assert seen["service/approval"]["since"] is not None
    assert not any(marker in response.text for marker in SECRET_LIKE)

    await stack.answer("approval", "renderer", "git_publisher", "cluster_bootstrapper")

    async def all_up() -> dict[str, Any] | None:
        # /v1/status checks afresh at most once a second: the change shows within a few.
        status = (await http.get("/v1/status", headers=auth("viewer"))).json()
        return status if status["status"] == "ok" else None

    body = await wait_until(all_up, timeout=10, interval=0.2, what="every dependency reported up")
    assert {item["state"] for item in body["dependencies"]} == {"up"}


async def test_metrics_count_requests_by_route_template(http: httpx.AsyncClient) -> None:
    await http.get("/v1/environment-requests/req-0000000000000002", headers=auth("viewer"))
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "platform_http_requests_total" in text
    assert 'route="/v1/environment-requests/{request_id}"' in text
    assert "platform_http_request_seconds_bucket" in text
    assert "req-0000000000000002" not in text


async def test_openapi_documents_every_route_and_the_error_body(http: httpx.AsyncClient) -> None:
    response = await http.get("/schema/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.text)
    # Other routes (catalog administration) may be registered beside these.
    assert set(document["paths"]) >= {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/whoami",
        "/v1/status",
        "/v1/environment-classes",
        "/v1/environment-classes/{name}",
        "/v1/environment-requests",
        "/v1/environment-requests/{request_id}",
        "/v1/environment-requests/{request_id}/events",
        "/v1/environment-requests/{request_id}/approve",
        "/v1/environment-requests/{request_id}/reject",
        "/v1/environment-requests/{request_id}/reconcile",
        "/v1/events",
        "/v1/dead-letters",
        "/v1/dead-letters/{service}/{dead_letter_id}/replay",
    }
    assert set(document["paths"]["/v1/environment-requests/{request_id}"]) == {"get", "patch", "delete"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            # Every API operation documents its auth and its error body.
            if path.startswith("/v1/") and path not in PUBLIC_API_PATHS:
                assert operation["security"] == [{"BearerAuth": []}], (method, path)
                assert "401" in operation["responses"], (method, path)
                assert operation["responses"]["401"]["content"]["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }, (method, path)
    page = await http.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "swagger" in page.text.lower()  # the interactive page
    approve = document["paths"]["/v1/environment-requests/{request_id}/approve"]["post"]
    assert any(p["name"] == "X-Platform-Approval-Signature" for p in approve["parameters"])
    assert document["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert set(document["components"]["schemas"]["ErrorBody"]["properties"]) == PROBLEM_MEMBERS
    create = document["paths"]["/v1/environment-requests"]["post"]
    assert create["security"] == [{"BearerAuth": []}]
    assert "class" in create["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert {"201", "200", "400", "401", "403", "422", "503"} <= set(create["responses"])
    # 200 is an idempotent replay or, with dry_run=true, the plan.
    replay_or_plan = create["responses"]["200"]["content"]["application/json"]["schema"]["oneOf"]
    assert {"$ref": "#/components/schemas/DryRunPlan"} in replay_or_plan
    assert "Location" in create["responses"]["201"]["headers"]


async def test_openapi_documents_every_error_with_the_body_it_really_has(http: httpx.AsyncClient) -> None:
    """Every error status of every operation is the problem body (with ``error``, ``code``, ``details``), never
    Litestar's default error schema, with the headers that status always carries."""
    document = (await http.get("/schema/openapi.json")).json()
    assert set(document["components"]["schemas"]["ErrorBody"]["properties"]) == PROBLEM_MEMBERS
    operations = [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        if path.startswith("/v1/") and path not in PUBLIC_API_PATHS
        for method, operation in item.items()
    ]
    assert len(operations) > 20
    for name, operation in operations:
        errors = {status: response for status, response in operation["responses"].items() if status >= "400"}
        assert {"400", "401", "403", "503"} <= set(errors), name
        for status, response in errors.items():
            assert set(response["content"]) == {"application/problem+json"}, (name, status)
            schema = response["content"]["application/problem+json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (name, status)
        assert errors["503"]["headers"]["Retry-After"]["required"] is True, name
        assert "WWW-Authenticate" in errors["401"]["headers"], name


TAGGED_READS = [
    "/v1/environment-requests/{request_id}",
    "/v1/environment-classes/{name}",
    "/v1/quota-profiles/{name}",
    "/v1/policy-packs/{name}",
    "/v1/teams/{team}",
]


async def test_openapi_documents_the_etag_and_304_of_every_resource_read(http: httpx.AsyncClient) -> None:
    document = (await http.get("/schema/openapi.json")).json()
    tagged = sorted(
        path for path, item in document["paths"].items() if "304" in item.get("get", {}).get("responses", {})
    )
    assert tagged == sorted(TAGGED_READS)
    for path in TAGGED_READS:
        read = document["paths"][path]["get"]
        assert "If-None-Match" in {parameter["name"] for parameter in read["parameters"]}, path
        for status in ("200", "304"):
            assert read["responses"][status]["headers"]["ETag"]["required"] is True, (path, status)
        assert "content" not in read["responses"]["304"], path


def verified_tokens(metrics_text: str) -> float:
    families = text_string_to_metric_families(metrics_text)
    family = next(f for f in families if f.name == "platform_gateway_token_verifications")
    return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))


async def test_a_request_verifies_its_token_once(http: httpx.AsyncClient) -> None:
    """Authentication runs once per request, before the guards; guards only authorize. A
    PUT of a class used to verify the token twice: once for the class routes' read guard,
    once for its own admin guard."""
    requests = [
        http.build_request("PUT", "/v1/environment-classes/preview", json={}, headers=auth("viewer")),
        http.build_request("GET", "/v1/environment-classes", headers=auth("viewer")),
    ]
    for request, status in zip(requests, (403, 200), strict=True):
        before = verified_tokens((await http.get("/metrics")).text)
        response = await http.send(request)
        assert response.status_code == status, response.text
        assert verified_tokens((await http.get("/metrics")).text) - before == 1, request


class AssetReferences(HTMLParser):
    """Every URL a browser would load for the page: src/href attributes and CSS url()s."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]

    def handle_data(self, data: str) -> None:
        self.urls += re.findall(r"url\(['\"]?([^'\")]+)", data)


async def test_the_api_reference_page_loads_nothing_from_other_hosts(http: httpx.AsyncClient) -> None:
    """Offline or in an air-gapped cluster the page must still work: every asset it references
    is served by the gateway itself, without a token, like the page; it runs no inline script
    (the Content-Security-Policy allows the gateway's own scripts only) and the start-up script
    loads the gateway's OpenAPI document."""
    page = await http.get("/schema")
    assert page.status_code == 200
    assert re.findall(r"(?:https?:)?//[\w.-]+", page.text) == []
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page.text) == [], "an inline script"
    assert re.findall(r"<style", page.text) == []
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "http" not in policy
    parser = AssetReferences()
    parser.feed(page.text)
    assert len(parser.urls) == 5, parser.urls  # bundle, preset, stylesheet, favicon, start-up script
    expected_types = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for url in parser.urls:
        assert url.startswith("/schema/static/"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert expected_types[url[url.rindex(".") :]] in asset.headers["content-type"], url
        assert len(asset.content) > 500, url
    assert "swagger-ui-bundle.js" in " ".join(parser.urls)
    starter = (await http.get("/schema/static/api-reference.js")).text
    assert "validatorUrl: null" in starter
    assert re.findall(r"https?://", starter) == []
    [document_url] = re.findall(r'data-openapi-url="([^"]+)"', page.text)
    document = await http.get(document_url)
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "platform-control-plane API"
    missing = await http.get("/schema/static/no-such-file.js")
    assert missing.status_code == 404


async def test_a_body_trickling_in_past_the_read_timeout_is_408(nats_url: str, isolation: Any) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b'{"app": '
        await asyncio.sleep(2.5)
        yield b'"x"}'

    async with (
        gateway_stack(nats_url, isolation.rpc_prefix, PLATFORM_HTTP_READ_TIMEOUT_SECONDS="1") as slow_stack,
        httpx.AsyncClient(base_url=slow_stack.base_url, timeout=10) as client,
    ):
        response = await client.post("/v1/environment-requests", content=slow(), headers=auth())
    assert_error_body(response, 408, "timeout")
    assert slow_stack.intake.received == []
