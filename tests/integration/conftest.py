"""Fixtures shared by integration tests: the kit's settings for this test's database and
stream, a bare GitOps remote and a publisher on it, and the real gateway in front of
stand-in services (``stack``, ``http``; a module with a stack of its own overrides them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.settings import PlatformSettings, load_settings
from services.git_publisher.service_layer.publisher import DirectPublisher
from tests.support.gateway import GatewayStack, gateway_stack
from tests.support.git_remotes import BareRemote, bare_remote
from tests.support.gitops_changes import make_publisher


@pytest.fixture
def settings(platform_env: dict[str, str]) -> PlatformSettings:
    """The kit's settings pointing at this test's database and stream."""
    return load_settings(PlatformSettings, platform_env)


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    """An empty bare GitOps remote on disk."""
    return bare_remote(tmp_path / "remote.git")


@pytest.fixture
async def publisher(tmp_path: Path, remote: BareRemote) -> DirectPublisher:
    """A direct-mode publisher with its own repository, pushing to ``remote``."""
    publisher = make_publisher(tmp_path / "local.git", remote)
    await publisher.repository.prepare()
    return publisher


@pytest.fixture
async def stack(nats_url: str, isolation: Any) -> AsyncIterator[GatewayStack]:
    """The real gateway in front of stand-in services answering on this test's RPC prefix."""
    async with gateway_stack(nats_url, isolation.rpc_prefix) as running:
        yield running


@pytest.fixture
async def http(stack: GatewayStack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``stack``'s gateway."""
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        yield client
