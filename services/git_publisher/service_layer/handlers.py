"""git-publisher's event handlers, in two phases (:class:`libs.inbox.SideEffect`).

Order, and why:

1. ``prepare`` (no transaction open): look up the generation in our own tables — one
   already published, or superseded by a newer one, needs no git work (a cheap shortcut
   only: another replica may be pushing a newer generation right now); check the bundle
   (path, file names, approval gate); hand the change to the batcher and wait until it
   is committed and pushed — or refused because the branch's generation marker is newer,
   which is the check that holds across replicas. A change that fails on its own (the
   remote's checks refuse its commit, its generation marker is unreadable) raises here,
   a permanent error for the kit, while its batch mates are published. Nothing here pins
   a database connection, so dozens of handlers can wait for one batched push. If the process dies
   after the push, the event is redelivered and the push is repeated harmlessly: the
   directory's tree and marker already match, so no second commit is made (see
   :mod:`~services.git_publisher.service_layer.publisher`).
2. ``apply`` (the kit's inbox transaction): record the publication and stage
   ``request.published`` — or ``request.failed`` for a refused bundle, which is permanent
   and therefore reported once instead of retried. A change superseded on the branch is
   a :class:`Skip`: nothing recorded or emitted (intake ignores stale generations anyway),
   and the event is acknowledged, never retried. The kit commits, then acknowledges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from contracts.envelope import Envelope
from contracts.events import (
    RequestFailed,
    RequestPublished,
    RequestRendered,
    RequestTeardownRequested,
    RequestUnpublished,
)
from libs.database import Pool, without_transaction
from libs.inbox import Tx, replaying
from services.git_publisher.adapters import publications
from services.git_publisher.domain.approvals import approvals_for_commit
from services.git_publisher.domain.changes import Change, RefusedChange, remove_directory, write_directory
from services.git_publisher.service_layer.publisher import Published, PublishResult, Superseded

log = logging.getLogger(__name__)


class ChangeSubmitter(Protocol):
    """Where changes go to be committed: the direct-mode batcher today.

    A pull-request mode would be another implementation (promotion branch per request
    generation, PR through the provider API) selected in ``bootstrap.py`` by a mode setting.
    """

    async def submit(self, change: Change) -> PublishResult: ...


@dataclass(frozen=True)
class Skip:
    """Nothing to do for this delivery (already done, or superseded); ``reason`` is logged."""

    reason: str


def superseded(result: Superseded) -> Skip:
    # Final, not an error: a retry would meet the same marker, and the newer generation
    # already reported its own outcome (or will).
    return Skip(f"superseded by generation {result.generation} on the branch")


@dataclass(frozen=True)
class Outcome:
    """What ``prepare`` did: the change's commit, or why the bundle was refused."""

    change_path: str
    published: Published | None = None
    refusal: RefusedChange | None = None


@dataclass
class GitPublisherService:
    pool: Pool
    submitter: ChangeSubmitter
    branch: str
    # The approval service's attestation key (settings.attestation_key).
    attestation_secret: str | None
    mode: Literal["direct", "pull_request"] = "direct"

    async def _refuse(self, tx: Tx, request_id: str, generation: int, refusal: RefusedChange) -> None:
        log.warning("bundle refused", extra={"fields": {"generation": generation, "reason": str(refusal)}})
        await tx.emit(
            request_id,
            RequestFailed(
                request_id=request_id,
                generation=generation,
                stage=tx.outbox.source,
                error=str(refusal),
                attempts=tx.attempt,
            ),
        )

    @property
    def publish(self) -> PublishRendered:
        return PublishRendered(self)

    @property
    def unpublish(self) -> UnpublishTeardown:
        return UnpublishTeardown(self)


@dataclass(frozen=True)
class PublishRendered:
    """``request.rendered`` → commit and push the bundle → ``request.published``."""

    service: GitPublisherService

    async def prepare(self, envelope: Envelope, data: RequestRendered) -> Skip | Outcome:
        async with without_transaction(self.service.pool) as conn:
            # A replay redoes the push on purpose (it restores a directory changed on the
            # branch since); an unchanged tree makes no commit.
            done = await publications.get_publication(conn, data.request_id, data.generation)
            if done is not None and not replaying():
                return Skip("generation already published")
            newer = await publications.newer_generation(conn, data.request_id, data.generation)
        if newer is not None:
            # A late or replayed bundle must not overwrite a newer generation (or revive a
            # torn-down environment); intake ignores stale generations anyway.
            return Skip(f"superseded by generation {newer}")
        try:
            approvals = (
                approvals_for_commit(
                    secret=self.service.attestation_secret,
                    request_id=data.request_id,
                    class_name=data.spec.class_name,
                    attestations=data.approvals,
                    required=data.approvals_required,
                )
                if data.requires_approval
                else []
            )
            change = write_directory(
                request_id=data.request_id,
                generation=data.generation,
                team=data.spec.team,
                app=data.spec.app,
                gitops_path=data.gitops_path,
                files=[(file.name, file.content) for file in data.files],
                approvals=approvals,
            )
        except RefusedChange as refusal:
            return Outcome(change_path=data.gitops_path, refusal=refusal)
        published = await self.service.submitter.submit(change)
        if isinstance(published, Superseded):
            return superseded(published)
        if published.commit_sha is None:  # a written directory always has a commit
            raise RuntimeError("publish returned no commit")
        return Outcome(change_path=change.path, published=published)

    async def apply(
        self, envelope: Envelope, data: RequestRendered, tx: Tx, prepared: Skip | Outcome
    ) -> None:
        if isinstance(prepared, Skip):
            log.info(
                "bundle skipped", extra={"fields": {"generation": data.generation, "reason": prepared.reason}}
            )
            return
        if prepared.refusal is not None:
            await self.service._refuse(tx, data.request_id, data.generation, prepared.refusal)
            return
        assert prepared.published is not None
        assert prepared.published.commit_sha is not None
        recorded = await publications.add_publication(
            tx.conn,
            publications.Publication(
                request_id=data.request_id,
                generation=data.generation,
                commit_sha=prepared.published.commit_sha,
                branch=self.service.branch,
                gitops_path=prepared.change_path,
                mode=self.service.mode,
                committed=prepared.published.committed,
                event_id=envelope.id,
            ),
        )
        if not recorded:
            # Another delivery of this generation (a different event id) got there first and
            # reported it; one request.published per generation is enough.
            return
        await tx.emit(
            data.request_id,
            RequestPublished(
                request_id=data.request_id,
                generation=data.generation,
                gitops_path=data.gitops_path,
                namespace=data.namespace,
                region=data.spec.region,
                commit_sha=prepared.published.commit_sha,
                branch=self.service.branch,
                mode=self.service.mode,
                files=data.files,
            ),
        )


@dataclass(frozen=True)
class UnpublishTeardown:
    """``request.teardown_requested`` → remove the directory → ``request.unpublished``."""

    service: GitPublisherService

    async def prepare(self, envelope: Envelope, data: RequestTeardownRequested) -> Skip | Outcome:
        async with without_transaction(self.service.pool) as conn:
            done = await publications.get_unpublication(conn, data.request_id, data.generation)
            if done is not None and not replaying():
                return Skip("generation already torn down")
        try:
            # Also for a request never rendered (empty path): there is no directory, but
            # the tombstone marker keeps a bundle still in flight from landing afterwards.
            change = remove_directory(
                request_id=data.request_id,
                generation=data.generation,
                team=data.spec.team,
                app=data.spec.app,
                gitops_path=data.gitops_path,
            )
        except RefusedChange as refusal:
            return Outcome(change_path=data.gitops_path, refusal=refusal)
        published = await self.service.submitter.submit(change)
        if isinstance(published, Superseded):
            return superseded(published)
        return Outcome(change_path=data.gitops_path, published=published)

    async def apply(
        self, envelope: Envelope, data: RequestTeardownRequested, tx: Tx, prepared: Skip | Outcome
    ) -> None:
        if isinstance(prepared, Skip):
            log.info(
                "teardown skipped",
                extra={"fields": {"generation": data.generation, "reason": prepared.reason}},
            )
            return
        if prepared.refusal is not None:
            await self.service._refuse(tx, data.request_id, data.generation, prepared.refusal)
            return
        commit_sha = prepared.published.commit_sha if prepared.published else None
        recorded = await publications.add_unpublication(
            tx.conn,
            publications.Unpublication(
                request_id=data.request_id,
                generation=data.generation,
                commit_sha=commit_sha,
                branch=self.service.branch,
                gitops_path=data.gitops_path,
                event_id=envelope.id,
            ),
        )
        if not recorded:
            return
        await tx.emit(
            data.request_id,
            RequestUnpublished(
                request_id=data.request_id,
                generation=data.generation,
                gitops_path=data.gitops_path,
                namespace=data.namespace,
                region=data.spec.region,
                commit_sha=commit_sha,
                branch=self.service.branch,
            ),
        )
