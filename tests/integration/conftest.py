"""Fixtures shared by the git-publisher integration tests: a bare remote and a publisher on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.git_publisher.service_layer.publisher import DirectPublisher
from tests.support.git_remotes import BareRemote, bare_remote
from tests.support.gitops_changes import make_publisher


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
