"""Run real services in the test process, through their own composition roots, and wait
until they answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from contracts.models import Actor
from contracts.rpc import CreateRequest, GetRequest
from libs.errors import PlatformError
from libs.rpc import RpcClient
from libs.service_kit import ServiceKit
from libs.settings import load_settings
from services.tools.platformd.registry import service_entry
from tests.support.api_flows import PREVIEW
from tests.support.bus import wait_until


@contextlib.asynccontextmanager
async def running_service(name: str, environment: Mapping[str, str]) -> AsyncIterator[ServiceKit]:
    """Bootstrap and start ``name`` exactly as ``platformd <name>`` would; stop it afterwards."""
    entry = service_entry(name)
    settings = load_settings(entry.settings_class, environment)
    kit = await entry.bootstrap_function()(settings)
    await kit.start()
    try:
        yield kit
    finally:
        await kit.stop()


@contextlib.asynccontextmanager
async def running_services(
    names: list[str], environment: Mapping[str, str]
) -> AsyncIterator[dict[str, ServiceKit]]:
    """Start ``names`` in order, as :func:`running_service` does each; afterwards stop them all
    at once, as separate processes would stop: each drains its own work and none waits for
    another's (one after the other, their drains added up to a second per test)."""
    kits: dict[str, ServiceKit] = {}
    try:
        for name in names:
            entry = service_entry(name)
            kit = await entry.bootstrap_function()(load_settings(entry.settings_class, environment))
            await kit.start()
            kits[name] = kit
        yield kits
    finally:
        stopped = await asyncio.gather(*(kit.stop() for kit in kits.values()), return_exceptions=True)
        for outcome in stopped:
            if isinstance(outcome, BaseException):
                raise outcome


async def answering(rpc: RpcClient, *services: str) -> bool:
    """Whether each of ``services`` answers ``ping`` as ready (not started yet: no)."""
    try:
        replies = [await rpc.call(name, "ping", {}) for name in services]
    except PlatformError:
        return False
    return all(reply["ready"] for reply in replies)


async def queued_preview(rpc: RpcClient, actor: Actor) -> dict[str, Any]:
    """A preview request created by ``actor`` once intake takes requests, as it is when queued
    (policy, intake and approval running; nothing renders it, so it stays queued)."""
    await catalog_replicated(rpc)
    created = await rpc.call("intake", "create_request", CreateRequest(body=PREVIEW, actor=actor))
    request_id = created["request"]["id"]

    async def queued() -> Any:
        current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=actor))
        return current if current["status"] == "queued" else None

    return dict(await wait_until(queued, what="request queued"))


async def catalog_replicated(rpc: RpcClient) -> None:
    """Wait until intake is ready, which it is once policy's class catalog has reached it;
    before that it refuses every new request."""
    await wait_until(lambda: answering(rpc, "intake"), what="class catalog replicated to intake")
