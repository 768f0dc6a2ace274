"""Which git-publisher failures are retried for long (transient) and which fail fast.

Transient: a push that lost the race for the branch, a local git failure that a later try
can get past (a lock file left behind, a full disk). Real git; real remotes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.errors import is_transient
from services.git_publisher.adapters.git_repository import BATCH_REF, GitError
from services.git_publisher.service_layer.publisher import Published
from tests.support.git_remotes import BareRemote, bare_remote
from tests.support.gitops_changes import bundle, make_publisher

pytestmark = pytest.mark.integration


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    return bare_remote(tmp_path / "remote.git")


async def test_a_push_that_lost_the_race_on_the_remote_is_transient(
    tmp_path: Path, remote: BareRemote
) -> None:
    # A hosted remote's checks take a moment; a push that started first can then lose the
    # ref update to one that started later: "[remote rejected] (failed to update ref)".
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nsleep 1\n")
    hook.chmod(0o755)
    a = make_publisher(tmp_path / "a.git", remote)
    b = make_publisher(tmp_path / "b.git", remote)
    for replica in (a, b):
        replica.push_attempts = 1  # one round: what the last round on a busy branch raises
        await replica.repository.prepare()
    await a.publish([bundle(9)])

    results = await asyncio.gather(a.publish([bundle(1)]), b.publish([bundle(2)]), return_exceptions=True)

    errors = [result for result in results if isinstance(result, BaseException)]
    assert len(errors) == 1, results  # exactly one replica lost the race
    [error] = errors
    assert isinstance(error, GitError)
    assert error.message == "git push rejected: the remote branch moved", error.detail
    assert is_transient(error)


async def test_a_lock_file_left_behind_fails_the_batch_transiently_until_it_is_gone(
    tmp_path: Path, remote: BareRemote
) -> None:
    publisher = make_publisher(tmp_path / "local.git", remote)
    publisher.push_attempts = 1
    await publisher.repository.prepare()
    # What a git killed mid-write leaves: the batch ref's lock, so fast-import cannot move it.
    lock = publisher.repository.path / f"{BATCH_REF}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")

    with pytest.raises(GitError) as raised:
        await publisher.publish([bundle(1)])
    assert is_transient(raised.value), raised.value.detail
    assert not remote.has_branch()

    lock.unlink()
    [result] = await publisher.publish([bundle(1)])
    assert result == Published(remote.commits()[0], committed=True)
