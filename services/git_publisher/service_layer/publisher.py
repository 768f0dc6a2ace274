"""Direct mode: commit a list of changes on the remote branch's fresh head and push them.

One call is one batch: one fetch, one ``git fast-import`` (one commit per change), one
push. A change whose desired directory state the base already holds makes no commit; its
result is the commit that last touched the directory. That is what makes a publish safe to
repeat after a crash between the push and the database commit: the redelivered bundle
finds itself on the remote and gets the original commit back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from libs.telemetry import REGISTRY
from services.git_publisher.adapters.git_repository import GitError, GitRepository, PushRejected
from services.git_publisher.domain.changes import Change

log = logging.getLogger(__name__)

BATCH_SECONDS = Histogram(
    "platform_git_batch_seconds",
    "One publish batch: fetch, build commits, push (including retries).",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "platform_git_batch_size",
    "Changes per publish batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100),
    registry=REGISTRY,
)
PUSH_RETRIES = Counter(
    "platform_git_push_retries_total", "Batches rebuilt after a rejected or failed push.", registry=REGISTRY
)


@dataclass(frozen=True)
class Published:
    """Where a change landed.

    ``commit_sha`` is the commit that made the directory what the change asked for (a new
    one, or an older one when nothing had to change); None only for removing a directory
    that never existed. ``committed`` says whether this call made the commit.
    """

    commit_sha: str | None
    committed: bool


@dataclass(frozen=True)
class _Planned:
    change: Change
    commit_index: int | None  # which of this batch's new commits holds the change's state, if any
    commits: bool  # True when that commit is the change's own


class DirectPublisher:
    """Commits straight onto the configured branch (``mode = direct``)."""

    mode = "direct"

    def __init__(
        self, repository: GitRepository, *, push_attempts: int = 5, retry_backoff_seconds: float = 0.1
    ) -> None:
        self.repository = repository
        self.push_attempts = push_attempts
        self.retry_backoff_seconds = retry_backoff_seconds

    @property
    def branch(self) -> str:
        return self.repository.branch

    async def warm_up(self) -> None:
        """Fetch once at start so a misconfigured remote shows up in logs and readiness early."""
        if self.repository.remote_url is None:
            return
        async with self.repository.lock:
            try:
                await self.repository.fetch()
            except GitError:
                # Not fatal: every batch fetches again, and readiness reports the remote.
                log.warning("initial fetch of the gitops remote failed; will retry with the first batch")

    async def recheck_remote(self, stopping: asyncio.Event, interval_seconds: float = 15.0) -> None:
        """While the last remote call failed, fetch now and then, so readiness recovers without traffic."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_seconds)
                return
            if self.repository.remote_failing:
                await self.warm_up()

    async def publish(self, changes: Sequence[Change]) -> list[Published]:
        """Commit ``changes`` in order (one commit each, skipping those already in place) and push.

        Returns one result per change. Raises :class:`GitError` when the remote still
        refuses after ``push_attempts`` rounds; nothing is then reported as published.
        """
        started = time.perf_counter()
        BATCH_SIZE.observe(len(changes))
        # One mutation sequence at a time: the fetched base, the imported commits and the
        # pushed tip must belong together, or a concurrent batch could push a stale base.
        async with self.repository.lock:
            attempt = 1
            while True:
                try:
                    results = await self._attempt(changes)
                    break
                except GitError as error:
                    if attempt >= self.push_attempts:
                        raise
                    PUSH_RETRIES.inc()
                    # Jittered exponential backoff: two replicas racing for the same branch
                    # would otherwise collide again on every round.
                    delay = self.retry_backoff_seconds * 2 ** (attempt - 1) * (1 + random.random())  # noqa: S311
                    log.info(
                        "publish batch will be rebuilt",
                        extra={
                            "fields": {
                                "attempt": attempt,
                                "rejected": isinstance(error, PushRejected),
                                "retry_in_s": round(delay, 3),
                            }
                        },
                    )
                    await asyncio.sleep(delay)
                    attempt += 1
            await self.repository.collect_garbage()
        elapsed = time.perf_counter() - started
        BATCH_SECONDS.observe(elapsed)
        log.info(
            "publish batch done",
            extra={
                "fields": {
                    "changes": len(changes),
                    "commits": sum(r.committed for r in results),
                    "attempts": attempt,
                    "seconds": round(elapsed, 4),
                }
            },
        )
        return results

    async def _base(self) -> str | None:
        repository = self.repository
        if repository.push_enabled:
            # Always the remote's current head: building on anything older guarantees a
            # rejected push, and a local branch may hold commits a failed push never delivered.
            return await repository.fetch()
        local = await repository.resolve(repository.branch_ref)
        if local is None and repository.remote_url is not None:
            # Push disabled but a remote configured: start the local history from its head.
            return await repository.resolve(repository.tracking_ref)
        return local

    async def _attempt(self, changes: Sequence[Change]) -> list[Published]:
        repository = self.repository
        base = await self._base()
        state = await repository.trees_at(base, [change.path for change in changes])
        last_touch: dict[str, int] = {}
        to_commit: list[Change] = []
        planned: list[_Planned] = []
        for change in changes:
            desired = change.desired_tree
            if state[change.path] == desired:
                planned.append(_Planned(change, last_touch.get(change.path), commits=False))
                continue
            last_touch[change.path] = len(to_commit)
            planned.append(_Planned(change, len(to_commit), commits=True))
            to_commit.append(change)
            state[change.path] = desired
        commits: list[str] = []
        if to_commit:
            commits = await repository.import_commits(base, to_commit)
            if repository.push_enabled:
                await repository.push(commits[-1])
            else:
                await repository.advance_branch(commits[-1], base)
        results: list[Published] = []
        for plan in planned:
            if plan.commit_index is not None:
                # Its own commit, or an earlier change of this very batch already made it so.
                results.append(Published(commits[plan.commit_index], committed=plan.commits))
            else:
                results.append(
                    Published(await repository.last_commit_touching(base, plan.change.path), False)
                )
        return results
