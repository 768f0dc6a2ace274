"""Replies larger than the bus carries: paged so they fit, and a clear error when one cannot.

Real NATS (one with a small ``max_payload`` where a reply must not fit), real Postgres, the
real intake and policy behind the real gateway over HTTP, and the real platformctl. Timeline
entries are written through intake's own repository, as its event handler writes them.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest

from contracts.envelope import new_event
from contracts.events import (
    DriftItem,
    RequestBootstrapped,
    RequestPublished,
    RequestReconcileRequested,
    RequestRendered,
)
from contracts.models import Actor, EnvironmentPlan, LimitRangeValues, RequestSpec, TimelineEntry
from contracts.replies import Timeline
from contracts.rpc import LIST_EVENTS, ListRequestEvents
from libs.database import Pool, open_pool
from libs.embedded import EmbeddedNats
from libs.rpc import RpcClient, RpcError, RpcServer
from services.gateway.bootstrap import create_app
from services.intake.adapters import repository
from services.intake.domain.model import EnvironmentRequest
from tests.support.gateway import gateway_settings, gateway_with_services, mint
from tests.support.http import serve
from tests.support.platformctl import clean_env, platformctl
from tests.support.rendered_bundles import Bundle, preview_bundle

NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024
TEAM = "payments"
SPEC = RequestSpec(
    app="api",
    team=TEAM,
    class_name="preview",
    region="us-east-1",
    ttl_hours=4,
    owner="alice",
    repository="https://github.com/example/api.git",
)
PLAN = EnvironmentPlan(
    class_name="preview",
    namespaces=1,
    quota_profile="small",
    resource_quota={"pods": "10", "requests.cpu": "2", "requests.memory": "4Gi"},
    limit_range=LimitRangeValues(
        default={"cpu": "500m", "memory": "512Mi"},
        default_request={"cpu": "500m", "memory": "512Mi"},
        max={"cpu": "2", "memory": "2Gi"},
    ),
    policy_packs=["baseline-security", "preview-networking", "cost-guardrails"],
    estimated_monthly_cost_usd=150.0,
)


# -- a reply that cannot be sent -----------------------------------------------------------------


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[str]:
    """A NATS server that carries at most 64 KB per message."""
    server = EmbeddedNats(tmp_path / "nats", max_payload=64 * 1024)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def oversized_timeline(size: int) -> Timeline:
    """A timeline of about ``size`` bytes: what a service might build before paging existed."""
    entry = TimelineEntry(
        event_id="00000000-0000-0000-0000-000000000001",
        type="request.failed",
        source="intake",
        time=datetime.now(UTC),
        applied=True,
        status_after="failed",
        data={"error": "e" * 1000},
    )
    return Timeline(items=[entry] * (size // 1100 + 1))


@pytest.fixture
async def oversized_intake(small_nats: str) -> AsyncIterator[str]:
    """An intake stand-in on ``small_nats`` whose timeline reply is 100 KB: over the limit."""
    nc = await nats.connect(small_nats)
    server = RpcServer(nc, service="intake", prefix="platform.rpc")

    async def list_events(query: ListRequestEvents) -> Timeline:
        return oversized_timeline(100 * 1024)

    server.route(LIST_EVENTS, list_events)
    await server.start()
    try:
        yield small_nats
    finally:
        await server.stop(timeout=1)
        await nc.close()


async def test_a_reply_over_max_payload_is_answered_with_a_clear_error_at_once(
    oversized_intake: str, caplog: pytest.LogCaptureFixture
) -> None:
    nc = await nats.connect(oversized_intake)
    try:
        rpc = RpcClient(nc, "platform.rpc", timeout=5)
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="libs.rpc"), pytest.raises(RpcError) as raised:
            await rpc.ask(LIST_EVENTS, ListRequestEvents(id="req-1", actor=ADMIN))
        elapsed = time.monotonic() - started
    finally:
        await nc.close()
    assert elapsed < 1.0, f"the caller waited {elapsed:.1f} s (its timeout is 5 s)"
    assert raised.value.code == "reply_too_large"
    assert re.fullmatch(
        r"the intake service's reply was too large to send \(1\d\d\.\d KB > 64 KB\);"
        r" ask for a smaller page \(a lower limit\) where the call takes one; a change it asked"
        r" for was made all the same: read the resource to see it",
        raised.value.message,
    ), raised.value.message
    assert raised.value.details["max_payload"] == 65536
    [record] = [r for r in caplog.records if "could not be sent" in r.getMessage()]
    fields = record.__dict__["fields"]
    assert (fields["verb"], fields["max_payload"], fields["reason"]) == (
        "list_events",
        65536,
        "reply_too_large",
    )
    assert fields["reply_bytes"] > 65536
    assert "eeee" not in str(record.__dict__)  # the payload itself is never logged


async def test_the_gateway_answers_an_oversized_reply_with_502_well_before_its_rpc_timeout(
    oversized_intake: str,
) -> None:
    settings = gateway_settings(oversized_intake, "platform.rpc", PLATFORM_RPC_TIMEOUT_SECONDS="5")
    async with serve(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        started = time.monotonic()
        answer = await http.get(
            "/v1/environment-requests/req-0123456789abcdef/events",
            headers={"Authorization": f"Bearer {mint('admin')}"},
            timeout=10,
        )
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"answered after {elapsed:.1f} s (the RPC timeout is 5 s)"
    assert answer.status_code == 502
    assert "Retry-After" not in answer.headers  # the same call gets the same answer
    problem = answer.json()
    assert problem["code"] == "reply_too_large"
    assert problem["title"] == "Reply too large to send"
    assert problem["error"].startswith("the intake service's reply was too large to send (")
    assert "> 64 KB); ask for a smaller page (a lower limit) where the call takes one" in problem["error"]


# -- paging what is large --------------------------------------------------------------------------

ADMIN = Actor(subject="admin", actor="admin@example.com", role="admin", teams=[TEAM])


@pytest.fixture
async def intake_pool(platform_env: dict[str, str]) -> AsyncIterator[Pool]:
    pool = await open_pool(platform_env["PLATFORM_POSTGRES_DSN"], "intake", "large-replies-test", max_size=2)
    yield pool
    await pool.close()


async def stored_request(pool: Pool, request_id: str) -> EnvironmentRequest:
    request = EnvironmentRequest.submit(SPEC, "alice@example.com", datetime.now(UTC), request_id=request_id)
    async with pool.connection() as conn, conn.transaction():
        await repository.add(conn, request)
    return request


@functools.cache
def bundle_of(request_id: str) -> Bundle:
    """The request's real bundle, the same in every generation: rendered once, not per event."""
    return preview_bundle(request_id, TEAM, "api")


def generation_events(request_id: str, generation: int) -> list[tuple[str, str, Any]]:
    """One reconcile as the pipeline reports it: (type, source, data), with the real bundle."""
    bundle = bundle_of(request_id)
    path = f"clusters/us-east-1/teams/{TEAM}/api/{request_id}"
    sha = f"{generation:040x}"
    return [
        (
            "request.reconcile_requested",
            "intake",
            RequestReconcileRequested(
                request_id=request_id, generation=generation, spec=SPEC, plan=PLAN, requested_by="bob"
            ),
        ),
        (
            "request.rendered",
            "renderer",
            RequestRendered(
                request_id=request_id,
                generation=generation,
                gitops_path=path,
                namespace=bundle.namespace,
                digest=f"sha256:{generation:064x}",
                files=bundle.files,
                spec=SPEC,
            ),
        ),
        (
            "request.published",
            "git-publisher",
            RequestPublished(
                request_id=request_id,
                generation=generation,
                gitops_path=path,
                namespace=bundle.namespace,
                region="us-east-1",
                commit_sha=sha,
                branch="main",
                files=bundle.files,
            ),
        ),
        (
            "request.bootstrapped",
            "cluster-bootstrapper",
            RequestBootstrapped(
                request_id=request_id,
                generation=generation,
                cluster_status="applied",
                drift_status="drift_corrected",
                # A drift report of a workload someone edited by hand: a line per changed field.
                drift_summary=[
                    DriftItem(
                        kind="Deployment",
                        name="payments-api",
                        field=f"spec.template.spec.containers[{n}].env",
                        expected=[{"name": "FEATURE_FLAGS", "value": "checkout-v2,ledger-sync"}],
                        actual=[{"name": "FEATURE_FLAGS", "value": "checkout-v2,ledger-sync,debug-tracing"}],
                    )
                    for n in range(24)
                ],
                commit_sha=sha,
            ),
        ),
    ]


async def record(pool: Pool, request_id: str, events: list[tuple[str, str, Any]]) -> None:
    """Write ``events`` into the timeline as intake's event handler does."""
    async with pool.connection() as conn, conn.transaction():
        for event_type, source, data in events:
            envelope = new_event(event_type, source, request_id, data)
            await repository.append_timeline(
                conn, request_id, envelope, data, applied=True, status_after="ready"
            )


async def pages(
    http: httpx.AsyncClient, path: str, params: dict[str, Any], cursor_ends: bool
) -> list[dict[str, Any]]:
    """Every page of ``path``, following next_cursor until it is null (``cursor_ends``) or a
    page comes back empty (the feed, whose cursor is always set)."""
    answers = []
    while True:
        answer = await http.get(path, params=params)
        assert answer.status_code == 200, answer.text
        assert len(answer.content) < NATS_DEFAULT_MAX_PAYLOAD
        page = answer.json()
        answers.append(page)
        cursor = page["next_cursor"]
        if (cursor_ends and cursor is None) or (not cursor_ends and not page["items"]):
            return answers
        params = {**params, "after": cursor}


@pytest.fixture
async def api(platform_env: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    # The production RPC deadline (5 s), not the test gateway's 2 s: a 500-entry page takes
    # 0.04-0.16 s here, but once took over 2 s in CI with both workers busy.
    async with gateway_with_services(
        platform_env, ["policy", "intake"], PLATFORM_RPC_TIMEOUT_SECONDS="5"
    ) as (base_url, _):
        headers = {"Authorization": f"Bearer {mint('admin', teams=[TEAM])}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=15) as http:
            yield http, base_url


async def test_the_largest_page_of_the_event_feed_answers_within_the_bus_limit(
    api: tuple[httpx.AsyncClient, str], intake_pool: Pool
) -> None:
    http, _ = api
    request = await stored_request(intake_pool, "req-00000000000000a1")
    # 500 entries of realistic size: 125 reconciles, each with its bundle and a drift report.
    events = [event for generation in range(1, 126) for event in generation_events(request.id, generation)]
    await record(intake_pool, request.id, events)

    started = time.monotonic()
    first = await http.get("/v1/events", params={"limit": 500})
    assert time.monotonic() - started < 3.0
    assert first.status_code == 200, first.text
    # Together the 500 would not fit in one reply: the page stops short, and says where.
    assert 0 < len(first.json()["items"]) < 500
    everything = [first.json()] + await pages(
        http, "/v1/events", {"limit": 500, "after": first.json()["next_cursor"]}, False
    )
    items = [item for page in everything for item in page["items"]]
    assert sum(len(msgspec.json.encode(item)) for item in items) > NATS_DEFAULT_MAX_PAYLOAD
    assert [(item["type"], item["generation"]) for item in items] == [
        (event_type, data.generation) for event_type, _, data in events
    ]
    assert len({item["event_id"] for item in items}) == 500


async def test_a_request_with_500_generations_has_a_readable_timeline(
    api: tuple[httpx.AsyncClient, str], intake_pool: Pool
) -> None:
    http, base_url = api
    request = await stored_request(intake_pool, "req-00000000000000b2")
    for first in range(1, 501, 50):
        await record(
            intake_pool,
            request.id,
            [
                event
                for generation in range(first, first + 50)
                for event in generation_events(request.id, generation)
            ],
        )
    path = f"/v1/environment-requests/{request.id}/events"
    expected = [
        (event_type, generation)
        for generation in range(1, 501)
        for event_type, _, _ in generation_events(request.id, generation)
    ]

    # A client that reads the first page only gets the fields it always got, and a cursor.
    started = time.monotonic()
    first = await http.get(path)
    assert time.monotonic() - started < 3.0
    assert first.status_code == 200
    assert set(first.json()) == {"items", "next_cursor"}
    assert 0 < len(first.json()["items"]) <= 100  # the default page, or less if 100 would not fit
    assert first.json()["items"][0]["type"] == "request.reconcile_requested"

    everything = await pages(http, path, {"limit": 500}, True)
    items = [item for page in everything for item in page["items"]]
    assert [(item["type"], item["generation"]) for item in items] == expected
    # The bundle is kept by reference: names, sizes and hashes, the digest and the commit.
    rendered = items[1]["data"]
    assert rendered["digest"] == f"sha256:{1:064x}"
    assert [file["name"] for file in rendered["files"]] == [f.name for f in preview_bundle(request.id).files]
    assert set(rendered["files"][0]) == {"name", "size_bytes", "sha256"}
    assert items[2]["data"]["commit_sha"] == f"{1:040x}"

    token = mint("admin", teams=[TEAM])
    shown = await platformctl(
        "request",
        "events",
        "--id",
        request.id,
        "-o",
        "json",
        env=clean_env(PLATFORM_API=base_url, PLATFORM_TOKEN=token),
        limit_seconds=60,
    )
    assert shown.code == 0, shown.stderr
    printed = shown.json()["items"]
    assert [(item["type"], item["generation"]) for item in printed] == expected


async def test_paging_a_timeline_refuses_a_cursor_that_is_not_one(
    api: tuple[httpx.AsyncClient, str], intake_pool: Pool
) -> None:
    http, _ = api
    request = await stored_request(intake_pool, "req-00000000000000c3")
    path = f"/v1/environment-requests/{request.id}/events"
    for bad in ("²", "1.2", "-1", "99999999999999999999"):
        answer = await http.get(path, params={"after": bad})
        assert answer.status_code in (400, 422), (bad, answer.text)
        assert answer.json()["details"][0]["field"] == "after"
    for limit in (0, 501):
        answer = await http.get(path, params={"limit": limit})
        assert answer.status_code == 422
        assert answer.json()["details"][0]["field"] == "limit"
