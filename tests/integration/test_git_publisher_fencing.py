"""Publisher replicas fenced by the remote: an older generation never lands after a newer one.

Each replica is a real :class:`DirectPublisher` with its own bare repository, all pushing
to one bare remote; assertions are on what the remote holds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from nats.js import JetStreamContext

from contracts.events import RenderedFile, RequestRendered
from contracts.models import RequestSpec
from libs.telemetry import REGISTRY
from services.git_publisher.adapters.git_repository import GitRepository, PushRejected
from services.git_publisher.service_layer import publisher as publishing
from services.git_publisher.service_layer.publisher import DirectPublisher
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.git_remotes import BareRemote, bare_remote
from tests.support.gitops_changes import (
    applied,
    bundle,
    directory,
    make_publisher,
    marker,
    request_id,
    teardown,
)
from tests.support.isolation import Isolation
from tests.support.rendered_bundles import CORE_FILES
from tests.support.services import running_service

CONSUMER = "git-publisher-requests"


class HeldPushRepository(GitRepository):
    """A replica's repository whose first push waits, ready to send, until ``release`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.push_waiting = asyncio.Event()
        self.release = asyncio.Event()
        self.rejected_pushes = 0
        self._held = False

    async def push(self, commit: str, base: str | None) -> None:
        if not self._held:
            self._held = True
            self.push_waiting.set()
            await self.release.wait()
        try:
            await super().push(commit, base)
        except PushRejected:
            self.rejected_pushes += 1
            raise


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    return bare_remote(tmp_path / "remote.git")


async def replica(
    folder: Path, remote: BareRemote, repository_class: type[GitRepository] = GitRepository
) -> DirectPublisher:
    publisher = make_publisher(folder, remote, repository_class=repository_class)
    await publisher.repository.prepare()
    return publisher


def generations_in_history(remote: BareRemote, n: int) -> list[str]:
    """``Platform-Generation`` of every commit for ``request_id(n)`` on the branch, oldest first."""
    commits = remote.git(
        "log", "--reverse", "--format=%H", f"--grep=Platform-Request: {request_id(n)}", "main"
    )
    return [
        value
        for commit in commits.split()
        for key, value in remote.trailers(commit)
        if key == "Platform-Generation"
    ]


async def test_a_held_older_push_cannot_revive_an_environment_another_replica_tore_down(
    tmp_path: Path, remote: BareRemote
) -> None:
    a = await replica(tmp_path / "replica-a.git", remote, HeldPushRepository)
    b = await replica(tmp_path / "replica-b.git", remote)
    applied(await b.publish([bundle(1, 1)]))
    held = a.repository
    assert isinstance(held, HeldPushRepository)

    # Replica A has fetched, checked and built generation 2; its push is on the wire, held.
    a_publishing = asyncio.create_task(a.publish([bundle(1, 2, variant=" g2")]))
    await asyncio.wait_for(held.push_waiting.wait(), 10)
    # Meanwhile replica B tears down generation 3 and pushes first.
    [torn_down] = applied(await b.publish([teardown(1, 3)]))
    assert torn_down.committed
    held.release.set()
    [a_result] = await asyncio.wait_for(a_publishing, 20)

    # The remote: no directory at the head, the tombstone says 3, and no commit after the
    # teardown brought anything back.
    assert remote.files(directory(1)) == []
    assert remote.show(marker(1)) == "generation: 3\nstate: removed"
    assert remote.commits()[0] == torn_down.commit_sha
    assert generations_in_history(remote, 1) == ["1", "3"]
    assert remote.pushes() == 2  # both B's; A's was refused and never retried
    # A's push was really sent and rejected, and the rebuild on the new base met the fence.
    assert held.rejected_pushes == 1
    assert a_result == publishing.Superseded(3)


@pytest.mark.parametrize("gitops_path", [None, ""], ids=["directory-known", "never-rendered"])
async def test_a_teardown_before_any_publish_leaves_a_tombstone(
    tmp_path: Path, remote: BareRemote, gitops_path: str | None
) -> None:
    a = await replica(tmp_path / "replica-a.git", remote)
    b = await replica(tmp_path / "replica-b.git", remote)
    [tombstone] = applied(await b.publish([teardown(1, 2, gitops_path=gitops_path)]))
    assert tombstone.committed

    # The bundle of generation 1 arrives late, at another replica.
    [late] = await a.publish([bundle(1, 1)])

    assert remote.files(directory(1)) == []
    assert remote.show(marker(1)) == "generation: 2\nstate: removed"
    assert remote.commits() == [tombstone.commit_sha]
    # The tombstone commit touches the marker and nothing else.
    assert remote.git(
        "diff-tree", "--no-commit-id", "--name-only", "-r", "--root", remote.commits()[0]
    ) == marker(1)
    assert late == publishing.Superseded(2)


async def test_an_older_write_after_a_newer_one_is_fenced(tmp_path: Path, remote: BareRemote) -> None:
    a = await replica(tmp_path / "replica-a.git", remote)
    b = await replica(tmp_path / "replica-b.git", remote)
    [newer] = applied(await a.publish([bundle(1, 3, variant=" g3")]))

    [older] = await b.publish([bundle(1, 2, variant=" g2")])

    assert remote.commits() == [newer.commit_sha]
    assert (
        remote.show(f"{directory(1)}/namespace.yaml")
        == f"# namespace.yaml of {request_id(1)} g3\nkind: Thing"
    )
    assert remote.show(marker(1)) == "generation: 3\nstate: published"
    assert older == publishing.Superseded(3)


async def test_redelivering_the_same_generation_makes_no_second_commit(
    tmp_path: Path, remote: BareRemote
) -> None:
    a = await replica(tmp_path / "replica-a.git", remote)
    b = await replica(tmp_path / "replica-b.git", remote)
    [first] = applied(await a.publish([bundle(1, 2)]))

    [again_elsewhere] = applied(await b.publish([bundle(1, 2)]))
    [again_here] = applied(await a.publish([bundle(1, 2)]))

    assert remote.commits() == [first.commit_sha]
    assert remote.pushes() == 1
    assert again_elsewhere == again_here == publishing.Published(first.commit_sha, committed=False)


async def test_changes_of_one_request_in_one_batch_are_fenced_in_order(
    tmp_path: Path, remote: BareRemote
) -> None:
    a = await replica(tmp_path / "replica-a.git", remote)
    results = await a.publish([bundle(1, 2), bundle(1, 1), teardown(1, 3), bundle(1, 2), teardown(1, 3)])

    commits = remote.commits()
    assert results == [
        publishing.Published(commits[1], committed=True),
        publishing.Superseded(2),
        publishing.Published(commits[0], committed=True),
        publishing.Superseded(3),
        publishing.Published(commits[0], committed=False),
    ]
    assert generations_in_history(remote, 1) == ["2", "3"]
    assert remote.files(directory(1)) == []


# -- the head a publisher has just pushed, used without a fetch ----------------------------------------


class CountingRepository(GitRepository):
    """A replica's repository that counts its fetches and its pushes the remote rejected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetches = 0
        self.rejected_pushes = 0

    async def fetch(self) -> str | None:
        self.fetches += 1
        return await super().fetch()

    async def push(self, commit: str, base: str | None) -> None:
        try:
            await super().push(commit, base)
        except PushRejected:
            self.rejected_pushes += 1
            raise


async def counting_replica(folder: Path, remote: BareRemote) -> tuple[DirectPublisher, CountingRepository]:
    publisher = await replica(folder, remote, CountingRepository)
    assert isinstance(publisher.repository, CountingRepository)
    return publisher, publisher.repository


def fetches_skipped() -> float:
    return REGISTRY.get_sample_value("platform_git_fetches_skipped_total") or 0.0


async def test_a_batch_right_after_a_push_builds_on_it_without_a_fetch(
    tmp_path: Path, remote: BareRemote
) -> None:
    a, repository = await counting_replica(tmp_path / "replica-a.git", remote)
    skipped = fetches_skipped()
    [first] = applied(await a.publish([bundle(1, 1)]))
    [second] = applied(await a.publish([bundle(2, 1)]))

    assert repository.fetches == 1
    assert fetches_skipped() == skipped + 1
    assert remote.commits() == [second.commit_sha, first.commit_sha]
    assert remote.pushes() == 2
    assert remote.files(directory(1)) == remote.files(directory(2)) == sorted(CORE_FILES)
    # A redelivery makes no commit, so no push proves the head it would assume: it fetches,
    # and the metric does not count it as a batch without a fetch.
    [again] = applied(await a.publish([bundle(2, 1)]))
    assert again == publishing.Published(second.commit_sha, committed=False)
    assert (repository.fetches, fetches_skipped()) == (2, skipped + 1)


class CancelledAfterLanding(CountingRepository):
    """A repository whose next push lands on the remote, and then the caller is cancelled."""

    cancel_next_push = False

    async def push(self, commit: str, base: str | None) -> None:
        await super().push(commit, base)
        if self.cancel_next_push:
            self.cancel_next_push = False
            raise asyncio.CancelledError


async def test_a_batch_cancelled_after_its_push_landed_leaves_no_head_assumed(
    tmp_path: Path, remote: BareRemote
) -> None:
    a = await replica(tmp_path / "replica-a.git", remote, CancelledAfterLanding)
    repository = a.repository
    assert isinstance(repository, CancelledAfterLanding)
    applied(await a.publish([bundle(1, 1)]))
    repository.cancel_next_push = True
    with pytest.raises(asyncio.CancelledError):
        await a.publish([bundle(2, 1)])

    # Redelivered: found on the remote (fetched, not assumed), the commit the push made.
    [again] = applied(await a.publish([bundle(2, 1)]))

    assert again == publishing.Published(remote.commits()[0], committed=False)
    assert len(remote.commits()) == 2
    assert repository.rejected_pushes == 0


async def test_a_head_another_replica_moved_costs_one_rejected_push_and_the_fence_holds(
    tmp_path: Path, remote: BareRemote
) -> None:
    a, repository = await counting_replica(tmp_path / "replica-a.git", remote)
    b = await replica(tmp_path / "replica-b.git", remote)
    applied(await a.publish([bundle(1, 1)]))
    # Replica B tears generation 3 down right after; A still takes its own push for the head.
    [torn_down] = applied(await b.publish([teardown(1, 3)]))

    # A's next batch is built on that stale head: its push is rejected, and the batch is
    # rebuilt on the fetched head, where generation 2 meets the tombstone.
    stale, other = await a.publish([bundle(1, 2, variant=" g2"), bundle(2, 1)])

    assert repository.rejected_pushes == 1
    assert stale == publishing.Superseded(3)
    assert isinstance(other, publishing.Published)
    assert other.committed
    assert remote.commits()[:2] == [other.commit_sha, torn_down.commit_sha]
    assert remote.files(directory(1)) == []
    assert generations_in_history(remote, 1) == ["1", "3"]
    # A second writer is at work: A fetches before its next batches, so B moving the head
    # again costs A no second rejected push.
    applied(await b.publish([bundle(3, 1)]))
    applied(await a.publish([bundle(4, 1)]))
    assert repository.rejected_pushes == 1
    assert remote.files(directory(3)) == remote.files(directory(4)) == sorted(CORE_FILES)


async def reset_by_hand_after_two_batches(
    tmp_path: Path, remote: BareRemote
) -> tuple[DirectPublisher, CountingRepository, publishing.Published]:
    """Replica A publishes requests 1 and 2 in two batches; right away, an operator resets the
    branch to before request 2's commit. Returns A, its repository and request 1's result."""
    a, repository = await counting_replica(tmp_path / "replica-a.git", remote)
    [first] = applied(await a.publish([bundle(1, 1)]))
    applied(await a.publish([bundle(2, 1)]))
    remote.git("update-ref", "refs/heads/main", first.commit_sha)
    return a, repository, first


async def test_a_branch_reset_by_hand_is_not_undone_by_the_next_batch(
    tmp_path: Path, remote: BareRemote
) -> None:
    a, repository, first = await reset_by_hand_after_two_batches(tmp_path, remote)

    # The next batch is built on the head A pushed. A fast-forward from the reset branch
    # would bring request 2's commit back; the push expects A's head and is rejected.
    [third] = applied(await a.publish([bundle(3, 1)]))

    assert repository.rejected_pushes == 1
    assert remote.commits() == [third.commit_sha, first.commit_sha]
    assert remote.files(directory(2)) == []
    assert remote.files(directory(3)) == sorted(CORE_FILES)


async def test_a_change_in_place_at_an_assumed_head_is_checked_against_the_remote(
    tmp_path: Path, remote: BareRemote
) -> None:
    a, repository, first = await reset_by_hand_after_two_batches(tmp_path, remote)

    # Request 2's bundle again (a redelivery): in place at the head A pushed, but no push
    # would prove that head current, so A fetches and finds it gone.
    [again] = applied(await a.publish([bundle(2, 1)]))

    assert repository.fetches == 2
    assert again.committed
    assert remote.commits() == [again.commit_sha, first.commit_sha]
    assert remote.files(directory(2)) == sorted(CORE_FILES)


# -- the handler's outcome for a fenced change (real NATS, Postgres, git) -----------------------------


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


def rendered(n: int, generation: int) -> RequestRendered:
    return RequestRendered(
        request_id=request_id(n),
        generation=generation,
        gitops_path=directory(n) + "/",
        namespace=f"payments-app{n}-{request_id(n)[-8:]}",
        digest=f"sha256:{n:064x}",
        files=[RenderedFile(name=name, content=f"# {name} g{generation}\n") for name in CORE_FILES],
        spec=RequestSpec(
            app=f"app{n}",
            team="payments",
            class_name="preview",
            region="us-east-1",
            ttl_hours=24,
            owner="owner@example.com",
            repository="https://github.com/example/payments.git",
        ),
    )


async def test_a_bundle_fenced_by_the_branch_is_acknowledged_without_an_event(
    tmp_path: Path,
    remote: BareRemote,
    platform_env: dict[str, str],
    isolation: Isolation,
    js: JetStreamContext,
) -> None:
    # Another replica pushed the teardown of generation 3 and has not recorded it yet, so the
    # database shortcut cannot know; only the branch can.
    other = await replica(tmp_path / "other-replica.git", remote)
    [tombstone] = applied(await other.publish([teardown(1, 3)]))
    env = {
        **platform_env,
        "PLATFORM_GITOPS_REPO_URL": remote.url,
        "PLATFORM_GITOPS_REPO_PATH": str(tmp_path / "service.git"),
        "PLATFORM_GIT_PUSH_ENABLED": "true",
        "PLATFORM_GIT_BATCH_WINDOW_SECONDS": "0.05",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    async with running_service("git_publisher", env):
        envelope = await publish_event(
            js, isolation.events_prefix, request_id(1), rendered(1, 2), source="renderer"
        )

        async def settled() -> bool:
            stream = await js.stream_info(isolation.stream)
            info = await js.consumer_info(isolation.stream, CONSUMER)
            return bool(
                info.ack_floor is not None
                and info.ack_floor.stream_seq >= stream.state.last_seq
                and info.num_ack_pending == 0
                and not info.num_pending
            )

        await wait_until(settled, what="the bundle acknowledged")
        info = await js.consumer_info(isolation.stream, CONSUMER)

    assert remote.commits() == [tombstone.commit_sha]
    assert remote.files(directory(1)) == []
    # Settled at the first delivery: acknowledged, not retried, not dead-lettered, no event.
    assert info.num_redelivered == 0
    assert info.num_ack_pending == 0
    for event_type in ("request.published", "request.failed"):
        assert await stream_events(js, isolation.stream, isolation.events_prefix, event_type) == []
    with psycopg.connect(env["PLATFORM_POSTGRES_DSN"]) as conn:
        handled = conn.execute("SELECT 1 FROM git_publisher.inbox WHERE event_id = %s", [envelope.id])
        assert handled.fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM git_publisher.dead_letters").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM git_publisher.publications").fetchone() == (0,)
