"""Composition root of the cluster-bootstrapper service."""

from __future__ import annotations

from dataclasses import dataclass

from libs.retention import DAY, RetentionRule
from libs.service_kit import ServiceKit
from services.cluster_bootstrapper.adapters.kubernetes_cluster import KubernetesCluster
from services.cluster_bootstrapper.entrypoints.bus import register
from services.cluster_bootstrapper.service_layer.handlers import ClusterBootstrapperService
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings

SCHEMA = "cluster_bootstrapper"

# An older generation's records are done with only once a newer generation was applied in
# full (its apply pruned everything older): after a rejected re-run, teardown and the next
# apply still need them to delete what the earlier generations left in the cluster.
_APPLIED_DONE = (
    "EXISTS (SELECT 1 FROM environments e WHERE e.request_id = applied_objects.request_id"
    " AND (e.torn_down_at < %(cutoff)s OR (e.generation > applied_objects.generation"
    " AND e.cluster_status = 'applied' AND e.updated_at < %(cutoff)s)))"
)


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
    keep = settings.retention_service_records_days * DAY
    # What was applied for a generation matters while it is current; once the environment
    # is torn down or moved on to a newer generation, only history, kept for ``keep``.
    kit.retention.add(RetentionRule("applied_objects", "applied_objects", _APPLIED_DONE, keep))
    kit.retention.add(
        RetentionRule("drift_observations", "drift_observations", "observed_at < %(cutoff)s", keep)
    )
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
