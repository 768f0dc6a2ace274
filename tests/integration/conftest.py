"""Fixtures shared by integration tests: the kit's settings for this test's database and
stream, a bare GitOps remote and a publisher on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.settings import PlatformSettings, load_settings
from services.git_publisher.service_layer.publisher import DirectPublisher
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
