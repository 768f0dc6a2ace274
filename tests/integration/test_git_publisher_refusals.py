"""Changes that fail on their own: the rest of their batch is still published.

A remote's own checks (a pre-receive hook like secret scanning or a file-size limit) refusing
one bundle, or a generation marker nobody can read, fail only the change they concern; every
other change that shared its batch lands. Real bare remotes; assertions on what they hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from libs.errors import is_transient
from services.git_publisher.adapters.git_repository import PushRejected
from services.git_publisher.domain.changes import Change
from services.git_publisher.service_layer.batching import CommitBatcher
from services.git_publisher.service_layer.publisher import (
    DirectPublisher,
    GenerationMarkerUnreadable,
    Published,
    PublishResult,
    Superseded,
)
from tests.support.git_remotes import BareRemote, clone, git
from tests.support.gitops_changes import bundle, directory, marker

SECRET_SCANNING = """#!/bin/sh
# Like secret scanning: refuse any push whose new tip holds a file containing SECRET.
while read old new ref; do
  if git grep -q SECRET "$new" -- 2>/dev/null; then
    echo "push declined: a file contains a secret" >&2
    exit 1
  fi
done
exit 0
"""


async def submitted_together(
    publisher: DirectPublisher, changes: Sequence[Change]
) -> list[PublishResult | BaseException]:
    """What each handler gets back when ``changes`` are submitted within one batch window."""
    batcher = CommitBatcher(publisher, window_seconds=0.2)
    stopping = asyncio.Event()
    runner = asyncio.create_task(batcher.run(stopping))
    try:
        return await asyncio.gather(*(batcher.submit(c) for c in changes), return_exceptions=True)
    finally:
        stopping.set()
        await asyncio.wait_for(runner, 5)


def commit_by_hand(remote: BareRemote, folder: Path, path: str, content: bytes) -> None:
    """Someone edits ``path`` on the branch directly (an operator, a script)."""
    work = clone(remote, folder)
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_bytes(content)
    git("add", path, cwd=work)
    git("commit", "--quiet", "-m", f"edit {path} by hand", cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)


async def test_a_bundle_the_remote_refuses_fails_alone_and_its_batch_mates_are_published(
    publisher: DirectPublisher, remote: BareRemote
) -> None:
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text(SECRET_SCANNING)
    hook.chmod(0o755)

    results = await submitted_together(
        publisher, [bundle(2), bundle(3, variant=" SECRET"), bundle(4), bundle(5)]
    )

    innocent = [results[0], results[2], results[3]]
    assert all(isinstance(result, Published) and result.committed for result in innocent), results
    refused = results[1]
    assert isinstance(refused, PushRejected), results
    assert refused.message == "git push rejected by the remote"
    assert not is_transient(refused)  # fails fast: retrying pushes the same secret again
    for n in (2, 4, 5):
        assert remote.files(directory(n)), f"request {n} was not published"
    assert remote.files(directory(3)) == []
    # One commit per published change, in submission order, none for the refused one.
    assert list(reversed(remote.commits())) == [r.commit_sha for r in innocent if isinstance(r, Published)]


@pytest.mark.parametrize(
    "hand_edited",
    [b"generation: 7\r\nstate: published\r\n", b"generation:7\n", b"generation: 7   \nstate: removed  \n"],
    ids=["crlf", "no-space", "trailing-spaces"],
)
async def test_a_hand_edited_marker_still_fences_older_generations(
    tmp_path: Path, publisher: DirectPublisher, remote: BareRemote, hand_edited: bytes
) -> None:
    commit_by_hand(remote, tmp_path / "work", marker(1), hand_edited)
    head = remote.commits()

    [older] = await publisher.publish([bundle(1, 3)])

    assert older == Superseded(7)
    assert remote.commits() == head
    assert remote.files(directory(1)) == []


async def test_an_unreadable_marker_refuses_only_its_own_change(
    tmp_path: Path, publisher: DirectPublisher, remote: BareRemote
) -> None:
    commit_by_hand(remote, tmp_path / "work", marker(1), b"generation: seven\n")

    results = await submitted_together(publisher, [bundle(1, 3), bundle(2)])

    refused, innocent = results
    # Failing closed: a stale generation must not pass a fence it cannot read, and the
    # error names the file an operator has to fix.
    assert isinstance(refused, GenerationMarkerUnreadable), results
    assert not is_transient(refused)
    assert marker(1) in refused.message
    assert innocent == Published(remote.commits()[0], committed=True), results
    assert remote.files(directory(1)) == []
    assert remote.files(directory(2))
    assert remote.show(marker(1)) == "generation: seven"

    # Once the file is fixed, the same change goes through.
    commit_by_hand(remote, tmp_path / "work-again", marker(1), b"generation: 2\n")
    [published] = await publisher.publish([bundle(1, 3)])
    assert published == Published(remote.commits()[0], committed=True)
    assert remote.files(directory(1))
