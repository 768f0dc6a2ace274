"""Bootstrapping, drift scanning and teardown of environments in their clusters.

Event handlers run in the kit's inbox transaction: the cluster calls happen inside it,
and the rows and outgoing events commit together afterwards. A crash after the cluster
changed but before the commit redelivers the event; server-side apply and deletes are
idempotent, so doing the work twice changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes.utils.quantity import parse_quantity

from contracts.envelope import Envelope
from contracts.events import (
    DriftItem,
    RequestBootstrapped,
    RequestDriftDetected,
    RequestFailed,
    RequestPublished,
    RequestTornDown,
    RequestUnpublished,
)
from libs.database import Pool
from libs.health import DependencyCheck
from libs.inbox import Tx
from libs.outbox import Outbox
from libs.service_kit import BackgroundLoop
from services.cluster_bootstrapper.adapters import repository
from services.cluster_bootstrapper.adapters.repository import ObjectRecord
from services.cluster_bootstrapper.domain.drift import DriftStatus, compare, drift_event_due, drift_status
from services.cluster_bootstrapper.domain.environment import Environment
from services.cluster_bootstrapper.domain.manifests import (
    DesiredObject,
    InvalidBundle,
    plan_bundle,
    pruned_by,
    teardown_order,
)
from services.cluster_bootstrapper.service_layer.ports import Cluster, ObjectRejected

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _quantity(value: Any) -> Any:
    return parse_quantity(value)  # type: ignore[no-untyped-call]


# -- the cluster work, independent of transactions ---------------------------------------------


@dataclass
class ApplyOutcome:
    records: list[ObjectRecord] = field(default_factory=list)
    applied: list[DesiredObject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected: str | None = None


async def apply_bundle(
    cluster: Cluster, region: str, objects: list[DesiredObject], now: datetime
) -> ApplyOutcome:
    """Apply ``objects`` in order; stop at the first object the cluster rejects for good.

    Transient failures (:class:`ClusterUnavailable`) propagate: the whole event is retried
    and the objects already applied are simply applied again.
    """
    outcome = ApplyOutcome()
    for order, desired in enumerate(objects):
        ref = desired.ref
        if not await cluster.serves(region, ref.api_version, ref.kind):
            missing = f"the cluster of region {region} does not serve {ref.kind} ({ref.api_version})"
            if desired.optional:
                note = f"{ref.describe()} not applied: {missing}; install Argo CD to sync this environment"
                outcome.records.append(ObjectRecord(desired, order, None, note))
                outcome.notes.append(note)
                continue
            outcome.rejected = f"{ref.describe()} cannot be applied: {missing}"
            return outcome
        try:
            await cluster.apply(region, desired)
        except ObjectRejected as exc:
            outcome.rejected = exc.message
            return outcome
        outcome.records.append(ObjectRecord(desired, order, now))
        outcome.applied.append(desired)
    return outcome


async def observe(
    cluster: Cluster, region: str, objects: list[DesiredObject]
) -> list[tuple[DesiredObject, list[DriftItem]]]:
    """Read every object back and compare it with what the bundle wants."""
    live = await asyncio.gather(*(cluster.read(region, desired.ref) for desired in objects))
    return [(desired, compare(desired, obj, _quantity)) for desired, obj in zip(objects, live, strict=True)]


def _flatten(observed: list[tuple[DesiredObject, list[DriftItem]]]) -> list[DriftItem]:
    return [item for _, items in observed for item in items]


@dataclass
class ScanReport:
    """What one drift scan did, by outcome (``in_sync``, ``drift_corrected``, ``drifted``, ...)."""

    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


# -- the service ---------------------------------------------------------------------------------


@dataclass
class ClusterBootstrapperService:
    pool: Pool
    outbox: Outbox
    # None when PLATFORM_K8S_APPLY is off: nothing here may then reach a cluster.
    cluster: Cluster | None

    async def on_published(self, envelope: Envelope, data: RequestPublished, tx: Tx) -> None:
        """Bootstrap the published generation into its region's cluster and report the outcome."""
        await repository.lock(tx.conn, data.request_id)
        current = await repository.get_environment(tx.conn, data.request_id)
        if current is not None and current.supersedes(data.generation):
            log.info(
                "ignoring a superseded publication",
                extra={"fields": {"generation": data.generation, "current_generation": current.generation}},
            )
            return
        env = Environment(
            request_id=data.request_id,
            generation=data.generation,
            region=data.region,
            namespace=data.namespace,
            cluster_status="not_applied",
            commit_sha=data.commit_sha,
        )
        if self.cluster is None:
            await repository.save_environment(tx.conn, env)
            await tx.emit(data.request_id, self._bootstrapped(env))
            return

        now = utcnow()
        try:
            objects = plan_bundle(data.files, data.namespace)
        except InvalidBundle as exc:
            await self._apply_failed(tx, env, exc.message, [])
            return
        outcome = await apply_bundle(self.cluster, data.region, objects, now)
        await repository.record_objects(tx.conn, env.request_id, env.generation, env.region, outcome.records)
        if outcome.rejected is not None:
            await self._apply_failed(tx, env, outcome.rejected, outcome.notes)
            return

        if current is not None and current.generation < env.generation:
            await self._prune(self.cluster, tx, current, objects)
        found = _flatten(await observe(self.cluster, data.region, outcome.applied))
        env.cluster_status = "applied"
        env.drift_status = drift_status(found)
        env.drift_summary = found
        env.applied_at = env.last_scanned_at = now
        await repository.save_environment(tx.conn, env)
        await repository.add_observation(
            tx.conn, env, observed_at=now, status=env.drift_status, summary=found, trigger="bootstrap"
        )
        await tx.emit(data.request_id, self._bootstrapped(env, outcome.notes))

    async def _prune(
        self, cluster: Cluster, tx: Tx, previous: Environment, objects: list[DesiredObject]
    ) -> None:
        """Delete what the previous generation applied and this one dropped, after this one is in place.

        Deleting only after the new objects are applied means a renamed policy never
        leaves a gap in which neither the old nor the new one exists.
        """
        earlier = await repository.applied_objects(tx.conn, previous.request_id, previous.generation)
        for ref in pruned_by(earlier, objects):
            await cluster.delete(previous.region, ref)
            log.info("pruned an object the new bundle dropped", extra={"fields": {"object": ref.describe()}})

    async def _apply_failed(self, tx: Tx, env: Environment, message: str, notes: list[str]) -> None:
        """Report a bundle the cluster will never accept: no retries, the user must change it."""
        env.cluster_status = "apply_failed"
        env.drift_status = "not_checked"
        await repository.save_environment(tx.conn, env)
        log.warning("bundle rejected by the cluster", extra={"fields": {"error": message}})
        await tx.emit(env.request_id, self._bootstrapped(env, [*notes, message]))
        await tx.emit(
            env.request_id,
            RequestFailed(
                request_id=env.request_id,
                generation=env.generation,
                stage=tx.outbox.source,
                error=message,
                attempts=tx.attempt,
            ),
        )

    @staticmethod
    def _bootstrapped(env: Environment, notes: list[str] | None = None) -> RequestBootstrapped:
        return RequestBootstrapped(
            request_id=env.request_id,
            generation=env.generation,
            cluster_status=env.cluster_status,
            drift_status=env.drift_status,
            drift_summary=env.drift_summary,
            commit_sha=env.commit_sha,
            notes=notes or [],
        )

    async def on_unpublished(self, envelope: Envelope, data: RequestUnpublished, tx: Tx) -> None:
        """Tear the environment down: objects outside its namespace, then the namespace."""
        await repository.lock(tx.conn, data.request_id)
        current = await repository.get_environment(tx.conn, data.request_id)
        if current is not None and current.generation > data.generation:
            log.info("ignoring a superseded teardown", extra={"fields": {"generation": data.generation}})
            return
        status: Literal["not_applied", "deleted"] = "not_applied"
        if self.cluster is not None:
            # The namespace is deleted even if this service never applied it (apply was off
            # then): teardown must leave nothing of the environment behind.
            objects = (
                await repository.applied_objects(tx.conn, current.request_id, current.generation)
                if current
                else []
            )
            for ref in teardown_order(objects, data.namespace):
                gone_already = not await self.cluster.delete(data.region, ref)
                log.info(
                    "deleted" if not gone_already else "already gone",
                    extra={"fields": {"object": ref.describe(), "region": data.region}},
                )
            status = "deleted"
        env = Environment(
            request_id=data.request_id,
            generation=data.generation,
            region=data.region,
            namespace=data.namespace,
            cluster_status=status,
            commit_sha=data.commit_sha,
            applied_at=current.applied_at if current else None,
            torn_down_at=utcnow(),
        )
        await repository.save_environment(tx.conn, env)
        await tx.emit(
            data.request_id,
            RequestTornDown(request_id=data.request_id, generation=data.generation, cluster_status=status),
        )

    # -- drift ---------------------------------------------------------------------------------

    async def scan_drift(self, stopping: asyncio.Event | None = None) -> ScanReport:
        """Check every applied environment once, self-healing drift; one transaction each."""
        report = ScanReport()
        if self.cluster is None:
            return report
        async with self.pool.connection() as conn:
            request_ids = await repository.environments_to_scan(conn)
        for request_id in request_ids:
            if stopping is not None and stopping.is_set():
                break
            try:
                report.count(await self._scan_environment(self.cluster, request_id))
            except Exception as exc:
                # One unreachable cluster or broken environment must not stop the others.
                report.count("failed")
                log.warning(
                    "drift scan of an environment failed",
                    extra={"fields": {"request_id": request_id, "error_type": type(exc).__name__}},
                )
        if report.outcomes:
            log.info("drift scan finished", extra={"fields": report.outcomes})
        return report

    async def _scan_environment(self, cluster: Cluster, request_id: str) -> str:
        async with self.pool.connection() as conn, conn.transaction():
            if not await repository.try_lock(conn, request_id):
                return "busy"  # being bootstrapped or torn down right now; next scan
            env = await repository.get_environment(conn, request_id)
            if env is None or not env.scannable:
                return "gone"
            objects = await repository.applied_objects(conn, request_id, env.generation)
            observed = await observe(cluster, env.region, objects)
            found = _flatten(observed)
            status: DriftStatus = "in_sync"
            summary = found
            if found:
                status, summary = await self._self_heal(cluster, env, observed)
            now = utcnow()
            due = drift_event_due(env.drift_status, env.drift_summary, status, summary)
            env.drift_status, env.drift_summary, env.last_scanned_at = status, summary, now
            await repository.save_environment(conn, env)
            if due:
                await repository.add_observation(
                    conn, env, observed_at=now, status=status, summary=summary, trigger="scan"
                )
                await self.outbox.add(
                    conn,
                    request_id,
                    RequestDriftDetected(
                        request_id=request_id,
                        generation=env.generation,
                        drift_status=status,
                        drift_summary=summary,
                    ),
                )
            return status

    async def _self_heal(
        self, cluster: Cluster, env: Environment, observed: list[tuple[DesiredObject, list[DriftItem]]]
    ) -> tuple[DriftStatus, list[DriftItem]]:
        """Re-apply the drifted objects; ``drift_corrected`` with what was found, or what remains."""
        drifted = [desired for desired, items in observed if items]
        try:
            for desired in drifted:
                await cluster.apply(env.region, desired)
        except ObjectRejected:
            return "drifted", _flatten(observed)
        remaining = _flatten(await observe(cluster, env.region, drifted))
        if remaining:
            # Typically a field another manager holds that apply does not take back (an
            # added selector term), or a webhook that rewrites what we set.
            return "drifted", remaining
        return "drift_corrected", _flatten(observed)

    def drift_loop(self, interval_seconds: float) -> BackgroundLoop:
        """A kit background loop running :meth:`scan_drift` every ``interval_seconds``."""

        async def loop(stopping: asyncio.Event) -> None:
            while not stopping.is_set():
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=interval_seconds)
                    return
                except TimeoutError:
                    pass
                try:
                    await self.scan_drift(stopping)
                except Exception as exc:  # the loop must outlive a database hiccup
                    log.warning("drift scan failed", extra={"fields": {"error_type": type(exc).__name__}})

        return loop

    async def cluster_ready(self) -> None:
        if self.cluster is not None:
            await self.cluster.check()

    def cluster_dependencies(self) -> dict[str, DependencyCheck]:
        """The clusters as reported dependencies: ``kubernetes/<region>`` for each mapped
        region (one region down says nothing about the others), or ``kubernetes`` when one
        cluster serves every region. None of them gates readiness."""
        cluster = self.cluster
        if cluster is None:
            return {}
        regions = cluster.regions()
        if not regions:
            return {"kubernetes": cluster.check}
        return {f"kubernetes/{region}": functools.partial(cluster.check, region) for region in regions}
