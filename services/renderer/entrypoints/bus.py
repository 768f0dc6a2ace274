"""The renderer's bus entrypoints."""

from __future__ import annotations

from libs.service_kit import ServiceKit
from services.renderer.service_layer.handlers import RendererService


def register(kit: ServiceKit, service: RendererService) -> None:
    kit.consume(
        "reconcile",
        "request.reconcile_requested",
        {"request.reconcile_requested": service.on_reconcile_requested},
    )
