"""A Postgres restart: callers get "unavailable" (503 at the gateway), never an internal
error, and the services carry on by themselves once the database is back."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest

from contracts.models import Actor
from contracts.rpc import CreateRequest, GetRequest
from libs.embedded import EmbeddedPostgres
from libs.errors import PlatformError
from libs.rpc import RpcClient
from tests.support.api_flows import request_body
from tests.support.bus import wait_until
from tests.support.isolation import Isolation, platform_environment
from tests.support.services import catalog_replicated, running_services

ALICE = Actor(subject="alice", actor="alice@example.com", role="requester")
PREVIEW = request_body(app="outage", ttl_hours=4, repository="https://github.com/example/app.git")


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test's own, so it can be stopped without hurting anything else."""
    folder = Path(tempfile.mkdtemp(prefix="pcp-outage-"))
    server = EmbeddedPostgres(folder, fast_unsafe=True)
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE platform")
    try:
        yield server
    finally:
        # remove_data also deletes the cluster kept outside ``folder`` when running as root.
        server.remove_data()
        shutil.rmtree(folder, ignore_errors=True)


async def status_of(rpc: RpcClient, request_id: str) -> Any:
    try:
        return (await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE)))["status"]
    except PlatformError:
        return None


async def test_database_restart_is_unavailable_then_recovers(
    private_postgres: EmbeddedPostgres, nats_url: str
) -> None:
    isolation = Isolation.new()
    env = platform_environment(private_postgres.dsn("platform"), nats_url, isolation)
    nc = await nats.connect(nats_url)
    rpc = RpcClient(nc, isolation.rpc_prefix, timeout=5)
    try:
        async with running_services(["policy", "intake", "approval"], env):
            await catalog_replicated(rpc)
            before = (await rpc.call("intake", "create_request", CreateRequest(body=PREVIEW, actor=ALICE)))[
                "request"
            ]

            private_postgres.stop()
            with pytest.raises(PlatformError) as during:
                await rpc.call(
                    "intake", "create_request", CreateRequest(body={**PREVIEW, "app": "during"}, actor=ALICE)
                )
            assert during.value.code == "unavailable"

            private_postgres.start()
            # The same request is served again, and work staged before the outage completes.
            await wait_until(lambda: status_of(rpc, before["id"]), timeout=60, what="intake serving again")
            queued = await wait_until(
                lambda: _is(rpc, before["id"], "queued"), timeout=60, what="pipeline resumed after the outage"
            )
            assert queued
            after = (
                await rpc.call(
                    "intake", "create_request", CreateRequest(body={**PREVIEW, "app": "after"}, actor=ALICE)
                )
            )["request"]
            assert await wait_until(
                lambda: _is(rpc, after["id"], "queued"), timeout=30, what="new work flows"
            )
    finally:
        await nc.jetstream().delete_stream(isolation.stream)
        await nc.close()


async def _is(rpc: RpcClient, request_id: str, status: str) -> bool:
    return await status_of(rpc, request_id) == status
