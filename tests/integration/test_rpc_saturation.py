"""A saturated service answers "unavailable" before its caller gives up, and a command whose
caller got an error never commits afterwards.

A kit service with a one-connection pool serves a "create" verb that holds its connection
for a while; a burst of calls arrives at once, with a caller timeout like the gateway's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest

from contracts.rpc import RpcVerb
from libs.errors import PlatformError
from libs.rpc import RpcClient, RpcError
from libs.service_kit import ServiceKit
from libs.settings import PlatformSettings, load_settings

CALLER_TIMEOUT = 2.0  # the gateway's PLATFORM_RPC_TIMEOUT_SECONDS, scaled down


class CreateItem(msgspec.Struct, frozen=True):
    id: int


class CreatedItem(msgspec.Struct, frozen=True):
    id: int


CREATE = RpcVerb("saturated", "create", CreateItem, CreatedItem)


@pytest.fixture
async def kit(platform_env: dict[str, str]) -> AsyncIterator[ServiceKit]:
    settings = load_settings(
        PlatformSettings,
        {
            **platform_env,
            "PLATFORM_POSTGRES_POOL_MAX": "1",
            "PLATFORM_POSTGRES_POOL_WAIT_SECONDS": "0.5",
            "PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS": "1.5",
        },
    )
    service = await ServiceKit.open(service="saturated", schema="saturated", settings=settings, package=None)
    async with service.pool.connection() as conn:
        await conn.execute("CREATE TABLE items (id integer PRIMARY KEY, committed_at timestamptz)")

    async def create(command: CreateItem) -> CreatedItem:
        async with service.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO items (id, committed_at) VALUES (%s, clock_timestamp())", [command.id]
            )
            await asyncio.sleep(0.4)  # slow work inside the transaction
        return CreatedItem(id=command.id)

    service.route(CREATE, create)
    await service.start()
    yield service
    await service.stop()


async def call(rpc: RpcClient, n: int) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        await rpc.call(CREATE.service, CREATE.name, CreateItem(id=n), timeout=CALLER_TIMEOUT)
        outcome = "ok"
    except RpcError as exc:  # an answer from the service
        outcome = f"answered {exc.code}"
    except PlatformError as exc:  # the caller gave up waiting
        outcome = f"gave up ({exc.code})"
    return n, outcome, time.monotonic() - started


async def test_a_burst_on_a_tiny_pool_is_answered_unavailable_in_time_and_nothing_commits_late(
    kit: ServiceKit, platform_env: dict[str, str]
) -> None:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    try:
        rpc = RpcClient(nc, kit.settings.rpc_prefix)
        results = await asyncio.gather(*(call(rpc, n) for n in range(12)))
        # Stopping lets every call still in progress finish: no commit can come after this.
        await kit.rpc.stop()
    finally:
        await nc.close()

    outcomes = {outcome for _, outcome, _ in results}
    ok = sorted(n for n, outcome, _ in results if outcome == "ok")
    assert ok, results  # the pool does serve some
    assert outcomes == {"ok", "answered unavailable"}, results  # nobody was left to time out
    assert max(elapsed for _, _, elapsed in results) < CALLER_TIMEOUT, results
    async with kit.pool.connection() as conn:
        rows: list[dict[str, Any]] = await (await conn.execute("SELECT id FROM items ORDER BY id")).fetchall()
    # Exactly the calls answered ok committed: no create landed after its caller got an error.
    assert [row["id"] for row in rows] == ok
