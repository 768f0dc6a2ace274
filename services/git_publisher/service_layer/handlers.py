"""git-publisher's event handlers: one inbox transaction per event.

Order inside a handler, and why:

1. look up the generation in our own tables: a generation already published (or
   superseded by a newer one) is acknowledged without touching git again;
2. check the bundle (path, file names, approval gate); a refusal is permanent, so it is
   reported as ``request.failed`` once instead of being retried;
3. hand the change to the batcher and wait until it is committed and pushed — the
   transaction stays open meanwhile, so a crash here rolls everything back and the event
   is redelivered (and then finds its commit already on the branch, see
   :mod:`~services.git_publisher.service_layer.publisher`);
4. record the publication and stage ``request.published`` in the same transaction; the kit
   commits it and only then acknowledges the message.
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
from libs.inbox import Tx
from services.git_publisher.adapters import publications
from services.git_publisher.domain.approvals import approvals_for_commit
from services.git_publisher.domain.changes import Change, RefusedChange, remove_directory, write_directory
from services.git_publisher.service_layer.publisher import Published

log = logging.getLogger(__name__)


class ChangeSubmitter(Protocol):
    """Where changes go to be committed: the direct-mode batcher today.

    A pull-request mode would be another implementation (promotion branch per request
    generation, PR through the provider API) selected in ``bootstrap.py`` by a mode setting.
    """

    async def submit(self, change: Change) -> Published: ...


@dataclass
class GitPublisherService:
    submitter: ChangeSubmitter
    branch: str
    approval_secret: str | None
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

    async def on_rendered(self, envelope: Envelope, data: RequestRendered, tx: Tx) -> None:
        """Publish a rendered bundle and report ``request.published``."""
        if await publications.get_publication(tx.conn, data.request_id, data.generation) is not None:
            log.info("generation already published", extra={"fields": {"generation": data.generation}})
            return
        newer = await publications.newer_generation(tx.conn, data.request_id, data.generation)
        if newer is not None:
            # A late or replayed bundle must not overwrite a newer generation (or revive a
            # torn-down environment); intake ignores stale generations anyway.
            log.info(
                "bundle superseded by a newer generation",
                extra={"fields": {"generation": data.generation, "newer": newer}},
            )
            return
        try:
            approvals = (
                approvals_for_commit(
                    secret=self.approval_secret,
                    request_id=data.request_id,
                    class_name=data.spec.class_name,
                    attestations=data.approvals,
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
            await self._refuse(tx, data.request_id, data.generation, refusal)
            return
        published = await self.submitter.submit(change)
        if published.commit_sha is None:  # a written directory always has a commit
            raise RuntimeError("publish returned no commit")
        recorded = await publications.add_publication(
            tx.conn,
            publications.Publication(
                request_id=data.request_id,
                generation=data.generation,
                commit_sha=published.commit_sha,
                branch=self.branch,
                gitops_path=change.path,
                mode=self.mode,
                committed=published.committed,
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
                commit_sha=published.commit_sha,
                branch=self.branch,
                mode=self.mode,
                files=data.files,
            ),
        )

    async def on_teardown_requested(self, envelope: Envelope, data: RequestTeardownRequested, tx: Tx) -> None:
        """Remove the request's directory from the branch and report ``request.unpublished``."""
        if await publications.get_unpublication(tx.conn, data.request_id, data.generation) is not None:
            return
        commit_sha: str | None = None
        if data.gitops_path.strip():
            try:
                change = remove_directory(
                    request_id=data.request_id,
                    generation=data.generation,
                    team=data.spec.team,
                    app=data.spec.app,
                    gitops_path=data.gitops_path,
                )
            except RefusedChange as refusal:
                await self._refuse(tx, data.request_id, data.generation, refusal)
                return
            commit_sha = (await self.submitter.submit(change)).commit_sha
        # else: never rendered, so nothing was ever published; the teardown is still reported.
        recorded = await publications.add_unpublication(
            tx.conn,
            publications.Unpublication(
                request_id=data.request_id,
                generation=data.generation,
                commit_sha=commit_sha,
                branch=self.branch,
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
                branch=self.branch,
            ),
        )
