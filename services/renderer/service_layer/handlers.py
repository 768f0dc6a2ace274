"""The renderer's event handler: one transaction per ``request.reconcile_requested``.

Render, store the bundle and stage ``request.rendered`` together, so a bundle is never
stored without its event nor announced without being stored. A bundle that cannot be
valid (bad plan data, unsafe names) is reported as ``request.failed`` in the same
transaction instead of being retried: no redelivery can change the outcome. Anything
else (database down, a bug) raises, so the kit retries and finally dead-letters it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from contracts.envelope import Envelope
from contracts.events import RenderedFile, RequestFailed, RequestReconcileRequested, RequestRendered
from contracts.models import BundlePreview, ManifestFile
from contracts.rpc import RenderPreview
from libs.inbox import Tx
from services.renderer.adapters import repository
from services.renderer.domain.bundle import Bundle, BundleInvalid
from services.renderer.service_layer.rendering import BundleRenderer

log = logging.getLogger(__name__)

STAGE = "renderer"


def rendered_event(request: RequestReconcileRequested, bundle: Bundle) -> RequestRendered:
    return RequestRendered(
        request_id=bundle.request_id,
        generation=bundle.generation,
        gitops_path=bundle.gitops_path,
        namespace=bundle.namespace,
        digest=bundle.digest,
        files=[RenderedFile(name=file.name, content=file.content) for file in bundle.files],
        spec=request.spec,
        approvals=request.approvals,
        estimated_monthly_cost_usd=request.plan.estimated_monthly_cost_usd,
        requires_approval=request.plan.requires_approval,
        # git-publisher's quorum check: the attestations must come from this many approvers.
        approvals_required=request.plan.approvals_required,
    )


@dataclass
class RendererService:
    renderer: BundleRenderer

    async def on_reconcile_requested(
        self, envelope: Envelope, data: RequestReconcileRequested, tx: Tx
    ) -> None:
        """Render the bundle of ``data.generation`` and announce it (or why it cannot exist)."""
        bundle = await repository.get(tx.conn, data.request_id, data.generation)
        # Another event (a replay, an anti-entropy re-request) for a generation rendered
        # before announces the stored bundle again: a generation's digest never changes.
        reannounced = bundle is not None
        if bundle is None:
            try:
                # CPU-bound for a few milliseconds: off the event loop, so acks, lease
                # renewals and the outbox relay of this process keep running meanwhile.
                rendered = await asyncio.to_thread(
                    self.renderer.render, data.request_id, data.generation, data.spec, data.plan
                )
            except BundleInvalid as exc:
                await self._report_invalid(data, exc, tx)
                return
            if await repository.add(tx.conn, rendered):
                bundle = rendered
            else:
                # A concurrent event for this generation committed its bundle first (the
                # insert waited for it); that one is the generation's bundle.
                bundle = await repository.get(tx.conn, data.request_id, data.generation)
                reannounced = True
                assert bundle is not None
        await tx.emit(data.request_id, rendered_event(data, bundle))
        log.info(
            "bundle rendered",
            extra={
                "fields": {
                    "generation": bundle.generation,
                    "digest": bundle.digest,
                    "files": len(bundle.files),
                    "reannounced": reannounced,
                }
            },
        )

    async def render_preview(self, command: RenderPreview) -> BundlePreview:
        """The files a reconcile of ``command``'s request would commit (for dry runs); stores nothing.

        The same render as :meth:`on_reconcile_requested` (files do not depend on the
        generation), so a dry run shows byte for byte what a real reconcile commits. An
        invalid bundle is a ``validation`` error naming the problems.
        """
        bundle = await asyncio.to_thread(
            self.renderer.render, command.request_id, 0, command.spec, command.plan
        )
        return BundlePreview(
            request_id=bundle.request_id,
            gitops_path=bundle.gitops_path,
            namespace=bundle.namespace,
            digest=bundle.digest,
            files=[ManifestFile(name=file.name, content=file.content) for file in bundle.files],
        )

    async def _report_invalid(self, data: RequestReconcileRequested, error: BundleInvalid, tx: Tx) -> None:
        log.warning(
            "bundle is invalid; reporting the request as failed",
            extra={"fields": {"generation": data.generation, "error": error.message}},
        )
        await tx.emit(
            data.request_id,
            RequestFailed(
                request_id=data.request_id,
                generation=data.generation,
                stage=STAGE,
                error=error.message,
                attempts=tx.attempt,
            ),
        )
