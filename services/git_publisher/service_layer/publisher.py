"""Direct mode: commit a list of changes on the remote branch's head and push them.

One call is one batch: one fetch, one ``git fast-import`` (one commit per change), one
push. A change whose desired directory state the base already holds (with its generation
marker) makes no commit; its result is the commit that last touched the marker. That is
what makes a publish safe to repeat after a crash between the push and the database commit:
the redelivered bundle finds itself on the remote and gets the original commit back.

A change whose request's marker at the base names a newer generation is not applied
(:class:`Superseded`): the remote is the fence between replicas
(:mod:`~services.git_publisher.domain.generation_markers`). The base is the remote's head,
and the push moves the branch only if it still points at that base (a lease the remote
checks and sets in one step); a rejected push rebuilds the whole batch on a freshly fetched
base, so every change is checked again against what the remote holds then.

The fetch is skipped right after a batch: the head this publisher has just pushed (or
fetched) is the remote's, unless another writer moved it since, which the leased push finds
out. So a batch within :data:`KNOWN_HEAD_SECONDS` of the last builds on that head, as long
as each of its changes makes a commit the push then proves (a change found in place,
superseded or behind an unreadable marker is decided on a fetched head); after a push lost
against another writer, the next :data:`CONTENDED_BATCHES` rounds fetch first.

A batch the remote's own checks refuse (a hook, secret scanning, a size limit) is bisected:
each half is published on its own base (fenced again), down to the single changes the remote refuses,
so only those fail and every other change of the batch lands. A change whose marker cannot be
read fails on its own too (:class:`GenerationMarkerUnreadable`); the rest of its batch goes on.
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

from libs.errors import Conflict
from libs.telemetry import REGISTRY
from services.git_publisher.adapters.git_repository import GitError, GitRepository, PushRejected
from services.git_publisher.domain.changes import Change
from services.git_publisher.domain.generation_markers import UnreadableMarker, marker_generation, supersedes

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
BISECTIONS = Counter(
    "platform_git_batch_bisections_total",
    "Batches split in two because the remote refused their push (a hook, secret scanning, a size limit).",
    registry=REGISTRY,
)
GC_FAILURES = Counter(
    "platform_git_gc_failures_total",
    "git gc --auto runs that failed after a batch (the batch's results stand).",
    registry=REGISTRY,
)
FETCHES_SKIPPED = Counter(
    "platform_git_fetches_skipped_total",
    "Batches built on the head this publisher had just pushed or fetched, without a fetch.",
    registry=REGISTRY,
)
SUPERSEDED = Counter(
    "platform_git_changes_superseded_total",
    "Changes not applied because the branch already holds a newer generation of the request.",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Published:
    """Where a change landed.

    ``commit_sha`` is the commit that made the directory and the generation marker what the
    change asked for (a new one, or an older one when nothing had to change); None only if
    the branch's history no longer shows that older commit. ``committed`` says whether this
    call made the commit.
    """

    commit_sha: str | None
    committed: bool


@dataclass(frozen=True)
class Superseded:
    """Not applied: the branch's marker for the request names ``generation``, newer than the change's."""

    generation: int


PublishResult = Published | Superseded


class GenerationMarkerUnreadable(Conflict):
    """The branch holds a marker for the request that names no readable generation.

    Permanent (retrying meets the same file): fencing cannot tell whether the change is
    stale, so it is refused rather than let through; an operator fixes the file on the branch
    (``generation: <n>``), then replays the dead letter.
    """

    transient = False

    def __init__(self, path: str) -> None:
        super().__init__(f"generation marker {path} is unreadable; fix it on the branch (generation: <n>)")
        self.path = path


# How long the head a batch pushed (or fetched) stands for the remote's, without a fetch. A
# burst's batches follow each other well within it; a longer quiet starts with a fetch, so
# a branch reset by hand meanwhile is seen.
KNOWN_HEAD_SECONDS = 2.0
# After a push lost against another writer, this many rounds fetch first.
CONTENDED_BATCHES = 16


# One per change of a batch: what became of it, or the error that change alone failed with.
ChangeOutcome = PublishResult | GitError | GenerationMarkerUnreadable


@dataclass(frozen=True)
class _Planned:
    change: Change
    commit_index: int | None  # which of this batch's new commits holds the change's state, if any
    commits: bool  # True when that commit is the change's own
    superseded_by: int | None = None  # the newer generation that fenced the change out
    unreadable_marker: bool = False  # the marker at the base names no readable generation


class DirectPublisher:
    """Commits straight onto the configured branch (``mode = direct``)."""

    mode = "direct"

    def __init__(
        self, repository: GitRepository, *, push_attempts: int = 5, retry_backoff_seconds: float = 0.1
    ) -> None:
        self.repository = repository
        self.push_attempts = push_attempts
        self.retry_backoff_seconds = retry_backoff_seconds
        # The remote's head as this publisher last saw it (pushed or fetched), and when.
        self._known_head: tuple[str, float] | None = None
        self._contended_batches = 0

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

    async def publish(self, changes: Sequence[Change]) -> list[ChangeOutcome]:
        """Commit ``changes`` in order (one commit each, skipping those already in place) and push.

        Returns one outcome per change: :class:`Published`; :class:`Superseded` for a change
        older than what the branch holds for its request (including an earlier change of the
        same batch); or the error that change alone failed with: :class:`PushRejected` when
        the remote refuses its commit (found by bisecting the batch),
        :class:`GenerationMarkerUnreadable`. Raises :class:`GitError` when the batch as a
        whole fails (the remote unreachable, or still moving, after ``push_attempts``
        rounds; a single change refused); nothing is then reported as published.
        """
        started = time.perf_counter()
        BATCH_SIZE.observe(len(changes))
        # One mutation sequence at a time: the fetched base, the imported commits and the
        # pushed tip must belong together, or a concurrent batch could push a stale base.
        async with self.repository.lock:
            outcomes = await self._publish_or_bisect(changes)
            await self._collect_garbage()
        elapsed = time.perf_counter() - started
        BATCH_SECONDS.observe(elapsed)
        log.info(
            "publish batch done",
            extra={
                "fields": {
                    "changes": len(changes),
                    "commits": sum(isinstance(r, Published) and r.committed for r in outcomes),
                    "superseded": sum(isinstance(r, Superseded) for r in outcomes),
                    "failed": sum(isinstance(r, Exception) for r in outcomes),
                    "seconds": round(elapsed, 4),
                }
            },
        )
        return outcomes

    async def _publish_or_bisect(self, changes: Sequence[Change]) -> list[ChangeOutcome]:
        try:
            return await self._publish_rounds(changes)
        except PushRejected as refusal:
            if refusal.transient or len(changes) == 1:
                raise
            # The remote's checks refused the batch's tip, which holds every change: find the
            # change(s) it refuses, instead of failing the innocent ones with them. Halves in
            # order, the first pushed before the second is built, so a request's changes still
            # land in order; each half is built on the head the one before left and fenced again.
            BISECTIONS.inc()
            log.warning(
                "the remote refused a batch; publishing its halves apart",
                extra={"fields": {"changes": len(changes), "detail": refusal.detail}},
            )
        middle = len(changes) // 2
        outcomes: list[ChangeOutcome] = []
        for half in (changes[:middle], changes[middle:]):
            try:
                outcomes += await self._publish_or_bisect(half)
            except GitError as error:
                # A refused single change, or a half that failed as a whole (the remote went
                # away meanwhile): that half's changes carry the error, the other half stands.
                outcomes += [error] * len(half)
        return outcomes

    async def _publish_rounds(self, changes: Sequence[Change]) -> list[ChangeOutcome]:
        """One batch, rebuilt on a new base after a push that lost against another writer or
        a git failure, up to ``push_attempts`` rounds; a refusal by the remote is not retried."""
        attempt = 1
        while True:
            try:
                return await self._attempt(changes)
            except GitError as error:
                if attempt >= self.push_attempts or not error.transient:
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

    async def _collect_garbage(self) -> None:
        # After the push: the batch's commits are on the remote and its results are final,
        # so a failing repack (a full disk, a lock left over) is logged and counted, never
        # turned into a failure that would make the handlers retry what already landed.
        try:
            await self.repository.collect_garbage()
        except (GitError, OSError) as error:
            GC_FAILURES.inc()
            log.warning(
                "git gc failed after a batch; its results stand",
                extra={"fields": {"error": str(error), "detail": getattr(error, "detail", "")}},
            )

    async def _base(self) -> tuple[str | None, bool]:
        """The commit to build on, and whether it is only assumed to be the remote's head."""
        repository = self.repository
        if repository.push_enabled:
            # The remote's current head: building on anything older guarantees a rejected
            # push, and a local branch may hold commits a failed push never delivered. The
            # head this publisher just pushed or fetched is that head unless another writer
            # moved it, which the leased push then finds out. Taken, not kept: only a round
            # that succeeds says what the head is next (see _attempt).
            known = self._recent_head()
            self._known_head = None
            if known is not None:
                return known, True
            self._contended_batches = max(0, self._contended_batches - 1)
            return await repository.fetch(), False
        local = await repository.resolve(repository.branch_ref)
        if local is None and repository.remote_url is not None:
            # Push disabled but a remote configured: start the local history from its head.
            return await repository.resolve(repository.tracking_ref), False
        return local, False

    def _recent_head(self) -> str | None:
        if self._known_head is None or self._contended_batches:
            return None
        head, seen_at = self._known_head
        return head if time.monotonic() - seen_at <= KNOWN_HEAD_SECONDS else None

    async def _attempt(self, changes: Sequence[Change]) -> list[ChangeOutcome]:
        try:
            outcomes, head = await self._build_and_push(changes)
        except PushRejected as error:
            # Whatever the remote holds now is unknown (_base took the known head, so the next
            # round fetches, as after any failure); a branch that moved means another writer.
            if error.transient:
                self._contended_batches = CONTENDED_BATCHES
            raise
        self._known_head = (head, time.monotonic()) if head is not None else None
        return outcomes

    async def _build_and_push(self, changes: Sequence[Change]) -> tuple[list[ChangeOutcome], str | None]:
        """The batch's outcomes, and the branch's head after it."""
        repository = self.repository
        base, assumed = await self._base()
        # Both read from the base: the fence is only as fresh as the base the commits are
        # built on, and the leased push proves that base is still the head.
        trees = await repository.trees_at(base, [c.path for c in changes if c.path is not None])
        markers = await repository.blobs_at(base, [change.marker_path for change in changes])
        last_touch: dict[str, int] = {}
        to_commit: list[Change] = []
        planned: list[_Planned] = []
        for change in changes:
            # ``markers`` and ``trees`` advance with each planned commit, so later changes of
            # the same request in this batch are checked against the earlier ones, in order.
            try:
                current = marker_generation(markers[change.marker_path])
            except UnreadableMarker:
                # Fail closed, and for this change only: passing it could land a stale
                # generation, and failing the whole batch would fail it again on every retry.
                planned.append(_Planned(change, None, commits=False, unreadable_marker=True))
                continue
            if supersedes(current, change.generation):
                planned.append(_Planned(change, None, commits=False, superseded_by=current))
                continue
            in_place = markers[change.marker_path] == change.marker and (
                change.path is None or trees[change.path] == change.desired_tree
            )
            if in_place:
                planned.append(_Planned(change, last_touch.get(change.marker_path), commits=False))
                continue
            last_touch[change.marker_path] = len(to_commit)
            planned.append(_Planned(change, len(to_commit), commits=True))
            to_commit.append(change)
            markers[change.marker_path] = change.marker
            if change.path is not None:
                trees[change.path] = change.desired_tree
        if assumed and any(plan.commit_index is None for plan in planned):
            # An outcome rests on the base alone (already in place, superseded, an unreadable
            # marker), and no push will prove an assumed base current: decide on a fetched one.
            return await self._build_and_push(changes)
        if assumed:
            FETCHES_SKIPPED.inc()
        commits: list[str] = []
        if to_commit:
            commits = await repository.import_commits(base, to_commit)
            if repository.push_enabled:
                await repository.push(commits[-1], base)
            else:
                await repository.advance_branch(commits[-1], base)
        outcomes = [await self._result(plan, base, commits) for plan in planned]
        return outcomes, commits[-1] if commits else base

    async def _result(self, plan: _Planned, base: str | None, commits: list[str]) -> ChangeOutcome:
        if plan.unreadable_marker:
            log.warning(
                "change refused: its generation marker is unreadable",
                extra={"fields": {"request_id": plan.change.request_id, "marker": plan.change.marker_path}},
            )
            return GenerationMarkerUnreadable(plan.change.marker_path)
        if plan.superseded_by is not None:
            SUPERSEDED.inc()
            log.info(
                "change superseded on the branch",
                extra={
                    "fields": {
                        "request_id": plan.change.request_id,
                        "generation": plan.change.generation,
                        "branch_generation": plan.superseded_by,
                    }
                },
            )
            return Superseded(plan.superseded_by)
        if plan.commit_index is not None:
            # Its own commit, or an earlier change of this very batch already made it so.
            return Published(commits[plan.commit_index], committed=plan.commits)
        # Already in place at the base: every change rewrites the marker, so the last commit
        # that touched it is the one that made this generation's state.
        return Published(await self.repository.last_commit_touching(base, plan.change.marker_path), False)
