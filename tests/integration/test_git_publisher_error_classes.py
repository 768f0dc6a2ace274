"""Which git-publisher failures are retried for long (transient) and which fail fast.

Transient: a push that lost the race for the branch, a local git failure that a later try
can get past (a lock file left behind, a full disk), a rolling restart. A ``git gc`` failing
after a successful push is no failure of the batch at all. Real git; real remotes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.errors import Unavailable, is_transient
from libs.telemetry import REGISTRY
from services.git_publisher.adapters.git_repository import BATCH_REF, GC_EVERY_BATCHES, GitError
from services.git_publisher.service_layer.batching import CommitBatcher
from services.git_publisher.service_layer.publisher import Published
from tests.support.git_remotes import BareRemote, bare_remote, git
from tests.support.gitops_changes import applied, bundle, directory, make_publisher


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


async def test_a_failing_gc_after_the_push_leaves_the_batch_published(
    tmp_path: Path, remote: BareRemote
) -> None:
    publisher = make_publisher(tmp_path / "local.git", remote)
    await publisher.repository.prepare()
    # This batch is the one that runs "git gc --auto"; a broken gc config makes it fail.
    publisher.repository._batches = GC_EVERY_BATCHES - 1
    git(f"--git-dir={publisher.repository.path}", "config", "gc.auto", "not-a-number")
    failures_before = REGISTRY.get_sample_value("platform_git_gc_failures_total") or 0.0

    [result] = applied(await publisher.publish([bundle(1)]))

    assert result.committed
    assert remote.commits() == [result.commit_sha]
    assert remote.files(directory(1))
    assert REGISTRY.get_sample_value("platform_git_gc_failures_total") == failures_before + 1


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


async def test_a_change_submitted_while_the_publisher_shuts_down_is_retried(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path / "local.git", None)
    await publisher.repository.prepare()
    batcher = CommitBatcher(publisher, window_seconds=0.05)
    stopping = asyncio.Event()
    stopping.set()
    await asyncio.wait_for(batcher.run(stopping), 5)

    with pytest.raises(Unavailable) as raised:
        await batcher.submit(bundle(1))
    # A rolling restart must not cost the request one of its few attempts for a permanent error.
    assert raised.value.message == "git publisher is shutting down"
    assert is_transient(raised.value)
