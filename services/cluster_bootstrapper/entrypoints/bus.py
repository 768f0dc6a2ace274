"""Cluster-bootstrapper's bus entrypoints: its two consumers and the drift scanner."""

from __future__ import annotations

from contracts.events import (
    RequestBootstrapped,
    RequestDriftDetected,
    RequestFailed,
    RequestPublished,
    RequestStageRetrying,
    RequestTornDown,
    RequestUnpublished,
)
from libs.service_kit import ServiceKit
from libs.topology import Consumer, ServiceTopology, reexecuted_on_replay
from services.cluster_bootstrapper.service_layer.handlers import ClusterBootstrapperService
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings


def register(
    kit: ServiceKit, service: ClusterBootstrapperService, settings: ClusterBootstrapperSettings
) -> None:
    kit.subscribe(TOPOLOGY, service)
    if settings.k8s_apply and settings.drift_scan_interval_seconds > 0:
        kit.background(service.drift_loop(settings.drift_scan_interval_seconds))


# Two consumers rather than one on ``request.>``: this service cares about two event types
# out of many. Their relative order across consumers is not guaranteed; the generation check
# under the environment's lease makes a late publication after a teardown a no-op instead of
# a resurrected namespace. Ordered by request within each: a second delivery of an event then
# finds the first one's inbox row instead of repeating its cluster calls (the handlers are
# two-phase: the calls run before the inbox transaction).
TOPOLOGY = ServiceTopology(
    name="cluster_bootstrapper",
    consumers=(
        Consumer(
            "published",
            {
                RequestPublished: reexecuted_on_replay(
                    ClusterBootstrapperService.publish,
                    "server-side apply of the same objects changes nothing (it restores what drifted); "
                    "a superseded or torn-down generation is skipped",
                )
            },
            ordered_by_subject=True,
        ),
        Consumer(
            "unpublished",
            {
                RequestUnpublished: reexecuted_on_replay(
                    ClusterBootstrapperService.unpublish,
                    "deleting objects that are gone already changes nothing",
                )
            },
            ordered_by_subject=True,
        ),
    ),
    publishes=(
        RequestBootstrapped,
        RequestDriftDetected,
        RequestTornDown,
        RequestFailed,
        RequestStageRetrying,
    ),
)
