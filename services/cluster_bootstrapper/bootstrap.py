"""Composition root of the cluster-bootstrapper service."""

from __future__ import annotations

from dataclasses import dataclass

from libs.service_kit import ServiceKit
from services.cluster_bootstrapper.adapters.kubernetes_cluster import KubernetesCluster
from services.cluster_bootstrapper.entrypoints.bus import register
from services.cluster_bootstrapper.service_layer.handlers import ClusterBootstrapperService
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings

SCHEMA = "cluster_bootstrapper"


@dataclass
class ClusterBootstrapper:
    """The wired service: the kit the runner starts, and the service for direct calls (a drift scan)."""

    kit: ServiceKit
    service: ClusterBootstrapperService


async def assemble(settings: ClusterBootstrapperSettings) -> ClusterBootstrapper:
    kit = await ServiceKit.open(
        service="cluster_bootstrapper",
        schema=SCHEMA,
        settings=settings,
        package="services.cluster_bootstrapper",
    )
    # With apply off no client is built at all, so a missing kubeconfig cannot matter.
    cluster = (
        KubernetesCluster(
            kubeconfig=settings.kubeconfig,
            contexts=settings.region_contexts,
            field_manager=settings.k8s_field_manager,
            timeout_seconds=settings.k8s_request_timeout_seconds,
        )
        if settings.k8s_apply
        else None
    )
    service = ClusterBootstrapperService(
        pool=kit.pool,
        outbox=kit.outbox,
        cluster=cluster,
        # The consumers cancel a handler at this deadline, so an environment's lease (longer)
        # never lapses under cluster work still running.
        work_timeout_seconds=kit.retry.handler_timeout,
    )
    register(kit, service, settings)
    if cluster is not None:
        # Reported per region, never gating readiness: one region down must not stop
        # the work of the others (its events retry until the region is back).
        kit.dependencies.update(service.cluster_dependencies())
        close_clients = cluster.close

        async def close_cluster() -> None:
            close_clients()

        kit.on_stop(close_cluster)
    return ClusterBootstrapper(kit=kit, service=service)


async def bootstrap(settings: ClusterBootstrapperSettings) -> ServiceKit:
    return (await assemble(settings)).kit
