"""The renderer's bus entrypoints."""

from __future__ import annotations

from contracts.events import RequestFailed, RequestReconcileRequested, RequestRendered, RequestStageRetrying
from contracts.rpc import RENDER
from libs.service_kit import ServiceKit
from libs.topology import Consumer, ServiceTopology, reexecuted_on_replay
from services.renderer.service_layer.handlers import RendererService


def register(kit: ServiceKit, service: RendererService) -> None:
    # Dry runs (POST /v1/environment-requests?dry_run=true) render through the same pipeline.
    kit.route(RENDER, service.render_preview)
    kit.subscribe(TOPOLOGY, service)


TOPOLOGY = ServiceTopology(
    name="renderer",
    consumers=(
        Consumer(
            "reconcile",
            {
                RequestReconcileRequested: reexecuted_on_replay(
                    RendererService.on_reconcile_requested,
                    "a generation's bundle is stored once: the same bundle, the same digest",
                )
            },
            # Renders one after another in one transaction per fetch (CPU-bound either way).
            batched=True,
        ),
    ),
    publishes=(RequestRendered, RequestFailed, RequestStageRetrying),
)
