"""Cluster-bootstrapper's bus entrypoints: its two consumers and the drift scanner."""

from __future__ import annotations

from libs.service_kit import ServiceKit
from services.cluster_bootstrapper.service_layer.handlers import ClusterBootstrapperService
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings


def register(
    kit: ServiceKit, service: ClusterBootstrapperService, settings: ClusterBootstrapperSettings
) -> None:
    # Two consumers rather than one on ``request.>``: this service cares about two event
    # types out of fourteen. Their relative order across consumers is not guaranteed; the
    # generation check under the per-request lock makes a late publication after a
    # teardown a no-op instead of a resurrected namespace.
    kit.consume("published", "request.published", {"request.published": service.on_published})
    kit.consume("unpublished", "request.unpublished", {"request.unpublished": service.on_unpublished})
    if settings.k8s_apply and settings.drift_scan_interval_seconds > 0:
        kit.background(service.drift_loop(settings.drift_scan_interval_seconds))
