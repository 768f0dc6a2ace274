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
    # generation check under the environment's lease makes a late publication after a
    # teardown a no-op instead of a resurrected namespace. Ordered by request within each:
    # a second delivery of an event then finds the first one's inbox row instead of
    # repeating its cluster calls (the handlers are two-phase: the calls run before the
    # inbox transaction).
    kit.consume(
        "published", "request.published", {"request.published": service.publish}, ordered_by_subject=True
    )
    kit.consume(
        "unpublished",
        "request.unpublished",
        {"request.unpublished": service.unpublish},
        ordered_by_subject=True,
    )
    if settings.k8s_apply and settings.drift_scan_interval_seconds > 0:
        kit.background(service.drift_loop(settings.drift_scan_interval_seconds))
