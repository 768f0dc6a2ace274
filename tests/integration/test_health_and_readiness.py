"""Liveness, readiness and the dependency report, through the real kit and the real gateway.

``/readyz`` answers "can this process do its own job now" (a service: its database and
NATS; the gateway: its NATS connection). External dependencies (the git remote, cluster
regions, the identity provider, the backends as the gateway sees them) are reported by
``/status``, ``GET /v1/status`` and metrics, and never take a replica out of its Service.
``/healthz`` answers "is this process wedged" (its event loop, its consumers' loops, its
NATS client).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from libs.embedded import free_port
from libs.health import LoopHeartbeat
from libs.ops_server import OpsServer
from libs.rpc import RpcClient
from libs.service_kit import ServiceKit
from services.gateway.bootstrap import create_app
from tests.support.api_flows import SIGNATURE_HEADER, example, signature
from tests.support.bus import wait_until
from tests.support.gateway import auth, gateway_settings
from tests.support.http import serve
from tests.support.services import catalog_replicated, running_service, running_services

ALICE = auth("requester", teams=["payments"])
BOB = "bob@example.com"
VIEWER = auth("viewer", email="vic@example.com", sub="vic")


@pytest.fixture
def remote_port() -> int:
    """A loopback port nothing listens on: the GitOps remote is down."""
    return free_port()


@pytest.fixture
def env(platform_env: dict[str, str], remote_port: int, tmp_path: Path) -> dict[str, str]:
    return {
        **platform_env,
        "PLATFORM_GITOPS_REPO_URL": f"http://127.0.0.1:{remote_port}/gitops.git",
        "PLATFORM_GITOPS_REPO_PATH": str(tmp_path / "publisher.git"),
        "PLATFORM_GIT_PUSH_ENABLED": "true",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


@contextlib.asynccontextmanager
async def ops_port(kit: ServiceKit) -> AsyncIterator[httpx.AsyncClient]:
    """The service's ops port, wired as ``platformd <service>`` wires it (libs.service_runner)."""
    server = OpsServer("127.0.0.1", 0, kit)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
            yield http
    finally:
        await server.stop()


def assert_no_infrastructure(text: str, *secrets: str) -> None:
    for marker in ("127.0.0.1", "localhost", "http://", "nats://", "postgresql://", *secrets):
        assert marker not in text


def assert_since(entry: dict[str, Any], started: datetime) -> None:
    since = datetime.fromisoformat(entry["since"])
    assert started <= since <= datetime.now(UTC)


# -- readiness: own job only; dependencies are reported ------------------------------------------


async def test_the_gateway_stays_ready_while_the_git_remote_is_down_and_reports_it(
    env: dict[str, str], remote_port: int
) -> None:
    """Creating, reading and approving keep working; /v1/status says what waits and why."""
    started = datetime.now(UTC)
    # renderer and cluster_bootstrapper are not running at all: backends that are stopped.
    async with running_services(["policy", "intake", "approval", "git_publisher"], env):
        nc = await nats.connect(env["PLATFORM_NATS_URL"])
        try:
            await catalog_replicated(RpcClient(nc, env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5))
        finally:
            await nc.close()
        settings = gateway_settings(env["PLATFORM_NATS_URL"], env["PLATFORM_RPC_SUBJECT_PREFIX"])
        async with (
            serve(create_app(settings)) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=15) as http,
        ):
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "checks": {"nats": "ok"}}

            created = await http.post("/v1/environment-requests", json=example("production"), headers=ALICE)
            assert created.status_code == 201, created.text
            request_id = created.json()["id"]
            read = await http.get(f"/v1/environment-requests/{request_id}", headers=VIEWER)
            assert read.status_code == 200
            await wait_until(
                lambda: _status_is(http, request_id, "pending_approval"), what="production request pending"
            )
            approved = await http.post(
                f"/v1/environment-requests/{request_id}/approve",
                headers={
                    **auth("approver", email=BOB, sub="bob"),
                    SIGNATURE_HEADER: signature(request_id, BOB),
                },
            )
            assert approved.status_code == 200, approved.text
            assert approved.json()["status"] == "approved"

            response = await http.get("/v1/status", headers=VIEWER)
            assert (await http.get("/readyz")).status_code == 200
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    entries = {(item["reported_by"], item["name"]): item for item in body["dependencies"]}
    remote = entries[("git_publisher", "gitops_remote")]
    assert remote["state"] == "down"
    assert remote["last_error"] == "git fetch failed"
    assert_since(remote, started)
    assert remote["last_success_at"] is None
    stopped = entries[("gateway", "service/renderer")]
    assert (stopped["state"], stopped["last_error"]) == ("down", "the renderer service is not answering")
    assert_since(stopped, started)
    assert entries[("gateway", "service/git_publisher")]["state"] == "up"  # its own job: database, NATS
    assert entries[("gateway", "service/intake")]["state"] == "up"
    assert_no_infrastructure(response.text, str(remote_port))


async def _status_is(http: httpx.AsyncClient, request_id: str, status: str) -> bool:
    response = await http.get(f"/v1/environment-requests/{request_id}", headers=VIEWER)
    return bool(response.json()["status"] == status)


async def test_a_service_is_ready_without_its_git_remote_and_not_without_its_database(
    env: dict[str, str], remote_port: int, pg_admin_dsn: str
) -> None:
    started = datetime.now(UTC)
    database = str(conninfo_to_dict(env["PLATFORM_POSTGRES_DSN"])["dbname"])
    async with running_service("git_publisher", env) as kit, ops_port(kit) as ops:
        ready = await ops.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "nats": "ok"}}

        status = await ops.get("/status")
        assert status.status_code == 200
        remote = status.json()["dependencies"]["gitops_remote"]
        assert (remote["state"], remote["last_error"]) == ("down", "git fetch failed")
        assert_since(remote, started)
        assert status.json()["ready"] is True
        assert_no_infrastructure(status.text, str(remote_port))
        assert 'platform_dependency_up{dependency="gitops_remote"} 0.0' in (await ops.get("/metrics")).text

        _allow_connections(pg_admin_dsn, database, allowed=False)
        try:
            not_ready = await wait_until(
                lambda: _readyz(ops, 503), timeout=30, what="not ready without a database"
            )
            assert not_ready["status"] == "not_ready"
            assert not_ready["checks"]["nats"] == "ok"
            assert not_ready["checks"]["database"] != "ok"
            assert_no_infrastructure(str(not_ready), database)
        finally:
            _allow_connections(pg_admin_dsn, database, allowed=True)
        await wait_until(lambda: _readyz(ops, 200), timeout=60, what="ready again with the database back")


def _allow_connections(admin_dsn: str, database: str, *, allowed: bool) -> None:
    """The database goes away for this service (new connections refused, open ones cut), or
    comes back."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            )


async def _readyz(ops: httpx.AsyncClient, status: int) -> dict[str, Any] | None:
    response = await ops.get("/readyz")
    body: dict[str, Any] = response.json()
    return body if response.status_code == status else None


# -- liveness: what is wedged inside the process ----------------------------------------------------


async def test_healthz_names_a_consumer_whose_loop_died(platform_env: dict[str, str]) -> None:
    async with running_service("approval", platform_env) as kit, ops_port(kit) as ops:
        healthy = await ops.get("/healthz")
        assert (healthy.status_code, healthy.json()) == (200, {"status": "ok"})

        consumer = kit.consumers[0]
        loop_task = consumer._task
        assert loop_task is not None
        loop_task.cancel()  # the consumer's fetch loop dies; everything else keeps turning
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task

        response = await ops.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unhealthy",
            "failing": {f"consumer/{consumer.name}": "its fetch loop was cancelled"},
        }
        # Liveness, not readiness: the database and NATS are fine.
        assert (await ops.get("/readyz")).status_code == 200


async def test_healthz_fails_right_after_the_event_loop_was_stuck(platform_env: dict[str, str]) -> None:
    async with running_service("policy", platform_env) as kit, ops_port(kit) as ops:
        heartbeat = kit.heartbeat
        heartbeat.period, heartbeat.stale_after = 0.25, 0.5
        # The tick sleeping when the period changed measures its lag against the new one:
        # only the tick after it is on time.
        for _ in range(2):
            since = heartbeat.last_tick
            await wait_until(functools.partial(_ticked_since, heartbeat, since), timeout=5, what="a tick")
        assert (await ops.get("/healthz")).status_code == 200
        # The lag a stall of S seconds shows is S less the part of it the heartbeat was
        # asleep anyway (up to one period): only a stall longer than stale_after + period is
        # seen whatever the heartbeat's phase.
        time.sleep(heartbeat.stale_after + heartbeat.period + 0.3)  # noqa: ASYNC251 - the point: code that blocks the event loop
        response = await ops.get("/healthz")
        assert response.status_code == 503
        assert list(response.json()["failing"]) == ["event_loop"]
        assert response.json()["failing"]["event_loop"].startswith("the event loop was stuck for")
        # The next heartbeat tick is on time again: alive.
        since = heartbeat.last_tick
        await wait_until(functools.partial(_ticked_since, heartbeat, since), timeout=5, what="a tick")
        assert (await ops.get("/healthz")).status_code == 200


async def _ticked_since(heartbeat: LoopHeartbeat, tick: float | None) -> bool:
    return heartbeat.last_tick != tick


async def test_the_gateway_healthz_fails_when_its_nats_client_gave_up(nats_url: str, isolation: Any) -> None:
    nc = await nats.connect(nats_url)
    settings = gateway_settings(nats_url, isolation.rpc_prefix)
    async with serve(create_app(settings, nc)) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        await nc.close()  # closed for good: no reconnect will ever bring it back
        response = await http.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {
            "status": "unhealthy",
            "failing": {"nats": "the NATS client is closed and will not reconnect"},
        }
        not_ready = await http.get("/readyz")
        assert (not_ready.status_code, not_ready.json()["checks"]["nats"]) == (
            503,
            "failing (ConnectionError)",
        )
