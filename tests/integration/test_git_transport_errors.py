"""Which git failures the consumer retries through an outage, against real git remotes.

A remote that cannot be reached (fetch or push transport failure) is transient: the event is
retried for PLATFORM_RECONCILE_RETRY_FOR_SECONDS. A remote that refuses the commit (a hook
rejected it) is not: retrying would push the same commit into the same refusal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from libs.errors import is_transient
from services.git_publisher.adapters.git_repository import GitError, GitRepository, Identity, PushRejected
from tests.support.git_remotes import bare_remote, git, search_path

IDENTITY = Identity(name="Platform Bot", email="bot@example.com")


def repository(local: Path, remote_url: str) -> GitRepository:
    return GitRepository(
        local,
        branch="main",
        identity=IDENTITY,
        remote_url=remote_url,
        push_enabled=True,
        timeout_seconds=20,
        search_path=search_path(),
    )


def commit_in(local: Path) -> str:
    """A root commit with an empty tree in the bare repository ``local``."""
    tree = git(f"--git-dir={local}", "hash-object", "-w", "-t", "tree", "--stdin", stdin=b"")
    return git(
        "-c", "user.name=t", "-c", "user.email=t@example.com",
        f"--git-dir={local}", "commit-tree", tree, "-m", "test",
    )  # fmt: skip


async def test_an_unreachable_remote_fails_the_fetch_transiently(tmp_path: Path) -> None:
    local = repository(tmp_path / "local.git", "https://127.0.0.1:1/org/gitops.git")
    await local.prepare()
    with pytest.raises(GitError) as raised:
        await local.fetch()
    assert raised.value.message == "git fetch failed"
    assert is_transient(raised.value)


async def test_a_remote_gone_during_the_push_fails_it_transiently(tmp_path: Path) -> None:
    remote = bare_remote(tmp_path / "remote.git")
    local = repository(tmp_path / "local.git", remote.url)
    await local.prepare()
    commit = commit_in(local.path)
    shutil.rmtree(remote.path)  # the remote is unreachable now
    with pytest.raises(GitError) as raised:
        await local.push(commit, None)
    assert not isinstance(raised.value, PushRejected)
    assert is_transient(raised.value)


async def test_a_commit_refused_by_the_remote_fails_for_good(tmp_path: Path) -> None:
    remote = bare_remote(tmp_path / "remote.git")
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'policy: unsigned commits are refused' >&2\nexit 1\n")
    hook.chmod(0o755)
    local = repository(tmp_path / "local.git", remote.url)
    await local.prepare()
    with pytest.raises(PushRejected) as raised:
        await local.push(commit_in(local.path), None)
    assert raised.value.message == "git push rejected by the remote"
    assert not is_transient(raised.value)
    assert remote.pushes() == 0
