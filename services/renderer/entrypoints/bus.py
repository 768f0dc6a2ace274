"""The renderer's bus entrypoints."""

from __future__ import annotations

from contracts.rpc import RenderPreview
from libs.service_kit import ServiceKit
from services.renderer.service_layer.handlers import RendererService


def register(kit: ServiceKit, service: RendererService) -> None:
    # Dry runs (POST /v1/environment-requests?dry_run=true) render through the same pipeline.
    kit.route("render", RenderPreview, service.render_preview)
    kit.consume(
        "reconcile",
        "request.reconcile_requested",
        {"request.reconcile_requested": service.on_reconcile_requested},
    )
