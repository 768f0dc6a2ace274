"""Run real services in the test process, through their own composition roots."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from libs.service_kit import ServiceKit
from libs.settings import load_settings
from services.platformd.registry import service_entry


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
    async with contextlib.AsyncExitStack() as stack:
        kits = {name: await stack.enter_async_context(running_service(name, environment)) for name in names}
        yield kits
