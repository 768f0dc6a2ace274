"""The direct-mode publisher against real git: a fresh bare remote per test, real pushes."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from contracts.attestation import sign_attestation
from libs.errors import Unavailable
from services.git_publisher.adapters.git_repository import GitError, GitRepository
from services.git_publisher.domain.changes import Approval, write_directory
from services.git_publisher.service_layer.batching import CommitBatcher
from services.git_publisher.service_layer.publisher import DirectPublisher, Published
from tests.support.git_remotes import BareRemote, clone, git, search_path
from tests.support.gitops_changes import (
    IDENTITY,
    applied,
    bundle,
    directory,
    make_publisher,
    marker,
    request_id,
    teardown,
)
from tests.support.rendered_bundles import CORE_FILES


async def test_a_batch_into_an_empty_remote_is_one_push_of_one_commit_per_request(
    publisher: DirectPublisher, remote: BareRemote
) -> None:
    assert not remote.has_branch()
    started = time.perf_counter()
    results = applied(await publisher.publish([bundle(1), bundle(2), bundle(3)]))
    elapsed = time.perf_counter() - started
    print(f"\nbatch of 3 into an empty local bare remote: {elapsed * 1000:.1f} ms")

    commits = remote.commits()
    assert len(commits) == 3
    assert remote.pushes() == 1
    assert [r.committed for r in results] == [True, True, True]
    # Oldest first on the branch, in submission order; results name each request's own commit.
    assert [r.commit_sha for r in results] == list(reversed(commits))
    assert remote.git("rev-list", "--max-parents=0", "main").split() == [commits[-1]]  # root: no base yet
    for n, result in enumerate(results, start=1):
        assert result.commit_sha is not None
        assert (
            remote.message(result.commit_sha).splitlines()[0]
            == f"reconcile {request_id(n)} for payments/app{n}"
        )
        assert remote.trailers(result.commit_sha) == [
            ("Platform-Request", request_id(n)),
            ("Platform-Generation", "1"),
        ]
        # Each commit adds exactly its request's directory and its generation marker.
        changed = remote.git("diff-tree", "--no-commit-id", "--name-only", "-r", "--root", result.commit_sha)
        assert sorted(changed.splitlines()) == sorted(
            [f"{directory(n)}/{name}" for name in CORE_FILES] + [marker(n)]
        )
        assert remote.show(marker(n)) == "generation: 1\nstate: published"
        assert remote.files(directory(n)) == sorted(CORE_FILES)
        assert (
            remote.show(f"{directory(n)}/namespace.yaml")
            == f"# namespace.yaml of {request_id(n)}\nkind: Thing"
        )
    assert remote.git("log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "platform-control-plane <platform@example.com>|platform-control-plane <platform@example.com>"
    )


async def test_republishing_a_bundle_makes_no_commit_and_returns_the_existing_one(
    publisher: DirectPublisher, remote: BareRemote, tmp_path: Path
) -> None:
    [first] = applied(await publisher.publish([bundle(1)]))
    await publisher.publish([bundle(2)])
    head = remote.commits()[0]

    [again] = applied(await publisher.publish([bundle(1)]))
    assert again.committed is False
    assert again.commit_sha == first.commit_sha
    assert remote.commits()[0] == head
    assert remote.pushes() == 2  # the no-op made no push

    # A replica with no local state (e.g. after a crash and a fresh volume) reaches the same answer.
    fresh = make_publisher(tmp_path / "other-local.git", remote)
    await fresh.repository.prepare()
    [from_fresh] = applied(await fresh.publish([bundle(1)]))
    assert from_fresh == again

    # A batch mixing a known bundle and a new one commits only the new one.
    mixed = applied(await publisher.publish([bundle(2), bundle(3)]))
    assert [r.committed for r in mixed] == [False, True]
    assert len(remote.commits()) == 3


async def test_a_new_generation_replaces_the_directory_exactly(
    publisher: DirectPublisher, remote: BareRemote
) -> None:
    await publisher.publish([bundle(1)])
    smaller = write_directory(
        request_id=request_id(1),
        generation=2,
        team="payments",
        app="app1",
        gitops_path=directory(1),
        files=[("namespace.yaml", "kind: Namespace\n"), ("extra.yaml", "kind: Extra\n")],
        approvals=[],
    )
    [result] = applied(await publisher.publish([smaller]))
    assert result.committed
    assert remote.files(directory(1)) == ["extra.yaml", "namespace.yaml"]  # stale files are gone
    assert ("Platform-Generation", "2") in remote.trailers(remote.commits()[0])


async def test_a_commit_pushed_by_someone_else_between_fetch_and_push_survives(
    publisher: DirectPublisher, remote: BareRemote, tmp_path: Path
) -> None:
    await publisher.publish([bundle(1)])
    other = clone(remote, tmp_path / "someone-else")
    (other / "README.md").write_text("hand-written\n")
    git("add", "README.md", cwd=other)
    git("commit", "--quiet", "-m", "docs: by hand", cwd=other)
    outside = git("rev-parse", "HEAD", cwd=other)
    # git runs pre-push after our fetch and commit, right before sending: the other writer
    # gets in exactly there, once, so our first push is rejected as not a fast-forward.
    hook = publisher.repository.path / "hooks" / "pre-push"
    marker = tmp_path / "raced"
    hook.write_text(
        "#!/bin/sh\n"
        f'if [ ! -e "{marker}" ]; then\n'
        f'  touch "{marker}"\n'
        "  unset GIT_DIR\n"
        f'  git -C "{other}" push --quiet origin HEAD:refs/heads/main\n'
        "fi\n"
        "exit 0\n"
    )
    hook.chmod(0o755)

    [result] = applied(await publisher.publish([bundle(2)]))

    assert marker.exists()
    commits = remote.commits()
    assert commits[0] == result.commit_sha
    assert remote.git("rev-parse", f"{result.commit_sha}^") == outside  # rebuilt on the new base
    assert remote.show("README.md") == "hand-written"
    assert remote.files(directory(1)) == sorted(CORE_FILES)
    assert remote.files(directory(2)) == sorted(CORE_FILES)
    assert remote.pushes() == 3  # ours, theirs, ours again


async def test_teardown_removes_the_directory_once(publisher: DirectPublisher, remote: BareRemote) -> None:
    await publisher.publish([bundle(1), bundle(2)])
    [removed] = applied(await publisher.publish([teardown(1)]))
    assert removed.committed
    assert removed.commit_sha == remote.commits()[0]
    assert remote.message(removed.commit_sha).splitlines()[0] == f"teardown {request_id(1)} for payments/app1"
    assert remote.trailers(removed.commit_sha) == [
        ("Platform-Request", request_id(1)),
        ("Platform-Generation", "2"),
    ]
    assert remote.files(directory(1)) == []
    assert remote.files(directory(2)) == sorted(CORE_FILES)

    [again] = applied(await publisher.publish([teardown(1)]))
    assert again.committed is False
    assert again.commit_sha == removed.commit_sha
    # A request that was never published still gets its tombstone, once.
    [never] = applied(await publisher.publish([teardown(9)]))
    assert never.committed
    assert remote.git("diff-tree", "--no-commit-id", "--name-only", "-r", str(never.commit_sha)) == marker(9)
    [never_again] = applied(await publisher.publish([teardown(9)]))
    assert never_again == Published(never.commit_sha, committed=False)
    assert len(remote.commits()) == 4


async def test_approvals_become_trailers(publisher: DirectPublisher, remote: BareRemote) -> None:
    decided = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    signature = sign_attestation(
        "secret",
        request_id=request_id(1),
        generation=0,
        approver="alice@example.com",
        class_name="production",
        decided_at=decided,
    )
    [result] = applied(
        await publisher.publish([bundle(1, approvals=[Approval("alice@example.com", signature)])])
    )
    assert result.commit_sha is not None
    assert remote.trailers(result.commit_sha) == [
        ("Platform-Request", request_id(1)),
        ("Platform-Generation", "1"),
        ("Approved-by", "alice@example.com"),
        ("Approval-Attestation", signature),
    ]


async def test_without_a_remote_commits_stay_in_the_local_repository(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path / "local.git", None)
    await publisher.repository.prepare()
    first = applied(await publisher.publish([bundle(1), bundle(2)]))
    again = applied(await publisher.publish([bundle(1)]))
    local = BareRemote(tmp_path / "local.git")
    assert [r.commit_sha for r in first] == list(reversed(local.commits()))
    assert again[0].commit_sha == first[0].commit_sha
    assert not again[0].committed
    assert local.files(directory(2)) == sorted(CORE_FILES)


async def test_several_changes_of_one_request_in_one_batch(
    publisher: DirectPublisher, remote: BareRemote
) -> None:
    results = applied(
        await publisher.publish([bundle(1), bundle(1), bundle(1, 2, variant=" v2"), teardown(1, 3)])
    )
    assert [r.committed for r in results] == [True, False, True, True]
    assert results[1].commit_sha == results[0].commit_sha
    assert len(remote.commits()) == 3
    assert remote.files(directory(1)) == []


def repository_with_token(local: Path, remote_url: str, token: str) -> GitRepository:
    """A pushing repository that authenticates to ``remote_url`` with ``token``."""
    return GitRepository(
        local,
        branch="main",
        identity=IDENTITY,
        remote_url=remote_url,
        push_enabled=True,
        token=token,
        timeout_seconds=20,
        search_path=search_path(),
    )


async def test_git_errors_never_carry_the_remote_url_or_token(tmp_path: Path) -> None:
    token = "ghp_supersecrettokenvalue0123456789"
    url = "https://user:hunter2-password@127.0.0.1:1/org/gitops.git"
    repository = repository_with_token(tmp_path / "local.git", url, token)
    await repository.prepare()
    with pytest.raises(GitError) as raised:
        await repository.fetch()
    error = raised.value
    for text in (str(error), error.message, error.detail):
        assert "hunter2" not in text
        assert token not in text
    # What reaches events names no host; the log detail (operators) keeps git's reason.
    assert error.message == str(error) == "git fetch failed"
    assert "<url>" in error.detail
    # The token is handed to git through the environment, never through its config file.
    assert token not in (tmp_path / "local.git" / "config").read_text()


async def test_the_token_travels_as_an_authorization_header_only(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = "glpat-not-a-real-token-0123456789"
    try:
        repository = repository_with_token(
            tmp_path / "local.git", f"http://127.0.0.1:{server.server_address[1]}/org/gitops.git", token
        )
        await repository.prepare()
        with pytest.raises(GitError) as raised:
            await repository.fetch()
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert seen, "git never reached the server"
    assert all(header == expected for _, header in seen)
    assert all(token not in path for path, _ in seen)
    assert token not in raised.value.detail
    assert expected.split()[1] not in raised.value.detail
    assert token not in (tmp_path / "local.git" / "config").read_text()


async def test_the_batcher_groups_concurrent_changes_and_spaces_its_pushes(
    publisher: DirectPublisher, remote: BareRemote
) -> None:
    window = 0.2
    batcher = CommitBatcher(publisher, window_seconds=window)
    stopping = asyncio.Event()
    runner = asyncio.create_task(batcher.run(stopping))
    try:
        burst = applied(await asyncio.gather(*(batcher.submit(bundle(n)) for n in range(1, 11))))
        assert remote.pushes() == 1
        assert len(remote.commits()) == 10
        assert [r.commit_sha for r in burst] == list(reversed(remote.commits()))

        # Changes trickling in one after another: never more than one push per window.
        started = asyncio.get_running_loop().time()
        for n in range(11, 15):
            await batcher.submit(bundle(n))
        elapsed = asyncio.get_running_loop().time() - started
        assert remote.pushes() == 5
        assert elapsed >= 3 * window
    finally:
        stopping.set()
        await asyncio.wait_for(runner, 5)
    with pytest.raises(Unavailable):
        await batcher.submit(bundle(99))
