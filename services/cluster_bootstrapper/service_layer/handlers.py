"""Bootstrapping, drift scanning and teardown of environments in their clusters.

Event handlers come in two phases (:class:`libs.inbox.SideEffect`), as git-publisher's do:

1. ``prepare`` runs the Kubernetes calls (apply, prune, read-back; or the teardown's
   deletes) with no database transaction open: a slow or unreachable API server must not
   pin pool connections and stall every other consumer of the process. Before the calls
   it takes the environment's lease (:func:`~services.cluster_bootstrapper.adapters.
   repository.claim_lease`, a row committed at once), so a bootstrap, a teardown and a
   drift scan of one environment never interleave in the cluster, in any replica.
2. ``apply`` (the kit's inbox transaction) records the applied objects and the outcome,
   stages the events, and releases the lease, all in one commit: whoever takes the lease
   next reads what this delivery did.

A crash between the two repeats ``prepare`` on redelivery; server-side apply and deletes
are idempotent, and the redelivery takes back its own lease at once. The drift scan
follows the same order: lease, cluster calls, then one short transaction for its writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

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
from libs.database import Pool, without_transaction
from libs.errors import TransientError
from libs.health import DependencyCheck
from libs.inbox import Tx, replaying
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

EventT = TypeVar("EventT", RequestPublished, RequestUnpublished)
DoneT = TypeVar("DoneT")


def utcnow() -> datetime:
    return datetime.now(UTC)


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
    return [(desired, compare(desired, obj)) for desired, obj in zip(objects, live, strict=True)]


def _flatten(observed: list[tuple[DesiredObject, list[DriftItem]]]) -> list[DriftItem]:
    return [item for _, items in observed for item in items]


@dataclass
class ScanReport:
    """What one drift scan did, by outcome (``in_sync``, ``drift_corrected``, ``drifted``, ...)."""

    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


# -- the service ---------------------------------------------------------------------------------


class EnvironmentBusy(TransientError):
    """Another delivery or a drift scan is working on the environment; retried with backoff."""


@dataclass(frozen=True)
class Skip:
    """Nothing to do for this delivery (superseded, or done before); ``reason`` is logged."""

    reason: str


@dataclass
class Bootstrapped:
    """What ``prepare`` did for a publication: the environment as it now stands in the cluster."""

    env: Environment
    records: list[ObjectRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The reason the cluster will never take this bundle (``apply_failed``), if it will not.
    failure: str | None = None
    observed_at: datetime | None = None


@dataclass
class ClusterBootstrapperService:
    pool: Pool
    outbox: Outbox
    # None when PLATFORM_K8S_APPLY is off: nothing here may then reach a cluster.
    cluster: Cluster | None
    # How long one piece of cluster work may run (the kit's handler timeout), and how long a
    # claim on an environment lasts: longer than any work, so it lapses only for a holder that
    # died, never under one still working.
    work_timeout_seconds: float = 300.0
    lease_margin_seconds: float = 60.0
    # How long a delivery waits for another one's work on the same environment before it
    # lets the consumer retry it later (with backoff, reported as a retrying stage).
    lease_wait_seconds: float = 60.0

    @property
    def lease_seconds(self) -> float:
        return self.work_timeout_seconds + self.lease_margin_seconds

    @property
    def publish(self) -> LeasedClusterWork[RequestPublished, Bootstrapped]:
        """``request.published`` → apply the bundle to the region's cluster → ``request.bootstrapped``."""
        return LeasedClusterWork(self, "publication", self.bootstrap, self.record_bootstrap)

    @property
    def unpublish(self) -> LeasedClusterWork[RequestUnpublished, Environment]:
        """``request.unpublished`` → delete the environment from its cluster → ``request.torn_down``."""
        return LeasedClusterWork(self, "teardown", self.tear_down, self.record_teardown)

    # -- the lease -----------------------------------------------------------------------------

    async def _try_claim(self, request_id: str, holder: str) -> bool:
        async with without_transaction(self.pool) as conn:
            return await repository.claim_lease(conn, request_id, holder, self.lease_seconds)

    async def claim(self, request_id: str, holder: str) -> None:
        """Wait for the environment's lease, polling with no connection held in between."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.lease_wait_seconds
        pause = 0.05
        while not await self._try_claim(request_id, holder):
            if loop.time() >= give_up:
                raise EnvironmentBusy(
                    f"the environment is busy (another bootstrap, teardown or drift scan)"
                    f" for over {self.lease_wait_seconds:g}s"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def release(self, request_id: str, holder: str) -> None:
        """Give the lease back outside any transaction; best effort (an unreleased claim lapses)."""
        try:
            async with without_transaction(self.pool) as conn:
                await repository.release_lease(conn, request_id, holder)
        except Exception as exc:
            log.warning(
                "could not release the environment's lease; it lapses on its own",
                extra={"fields": {"request_id": request_id, "error_type": type(exc).__name__}},
            )

    @contextlib.asynccontextmanager
    async def _released_unless_kept(self, request_id: str, holder: str) -> AsyncIterator[None]:
        """Release the lease if the block fails: the work did not happen, so nobody must wait."""
        try:
            yield
        except BaseException:
            await asyncio.shield(self.release(request_id, holder))
            raise

    # -- publication ---------------------------------------------------------------------------

    async def bootstrap(self, data: RequestPublished) -> Skip | Bootstrapped:
        """The cluster work of a publication; the caller holds the environment's lease."""
        async with without_transaction(self.pool) as conn:
            current = await repository.get_environment(conn, data.request_id)
            # Every earlier generation's objects, not only the latest one's: a generation the
            # cluster rejected half-way never pruned what the one before it applied.
            earlier = (
                await repository.objects_ever_applied(conn, current.request_id)
                if current is not None and current.generation < data.generation and self.cluster is not None
                else []
            )
        if current is not None and current.supersedes(data.generation):
            return Skip(f"superseded by generation {current.generation}")
        if (
            current is not None
            and current.generation == data.generation
            and current.scannable
            and not replaying()
        ):
            # Another delivery of this generation applied it already and reported it (a
            # replay applies it again on purpose: it restores what changed in the cluster).
            return Skip("generation already applied")
        env = Environment(
            request_id=data.request_id,
            generation=data.generation,
            region=data.region,
            namespace=data.namespace,
            cluster_status="not_applied",
            commit_sha=data.commit_sha,
        )
        if self.cluster is None:
            return Bootstrapped(env)
        return await self._bootstrap_in_cluster(self.cluster, data, env, earlier)

    async def _bootstrap_in_cluster(
        self, cluster: Cluster, data: RequestPublished, env: Environment, earlier: list[DesiredObject]
    ) -> Bootstrapped:
        now = utcnow()
        try:
            objects = plan_bundle(data.files, data.namespace)
        except InvalidBundle as exc:
            return Bootstrapped(env, failure=exc.message)
        outcome = await apply_bundle(cluster, data.region, objects, now)
        if outcome.rejected is not None:
            return Bootstrapped(env, outcome.records, outcome.notes, failure=outcome.rejected)
        await self._prune(cluster, data.region, earlier, objects)
        found = _flatten(await observe(cluster, data.region, outcome.applied))
        env.cluster_status = "applied"
        env.drift_status = drift_status(found)
        env.drift_summary = found
        env.applied_at = env.last_scanned_at = now
        return Bootstrapped(env, outcome.records, outcome.notes, observed_at=now)

    @staticmethod
    async def _prune(
        cluster: Cluster, region: str, earlier: list[DesiredObject], objects: list[DesiredObject]
    ) -> None:
        """Delete what earlier generations applied and this one dropped, after this one is in place.

        Deleting only after the new objects are applied means a renamed policy never
        leaves a gap in which neither the old nor the new one exists.
        """
        for ref in pruned_by(earlier, objects):
            await cluster.delete(region, ref)
            log.info("pruned an object the new bundle dropped", extra={"fields": {"object": ref.describe()}})

    async def record_bootstrap(self, tx: Tx, data: RequestPublished, done: Bootstrapped) -> None:
        """Record what :meth:`bootstrap` did and stage its report, in the inbox transaction."""
        env = done.env
        await repository.record_objects(tx.conn, env.request_id, env.generation, env.region, done.records)
        if done.failure is not None:
            await self._apply_failed(tx, env, done.failure, done.notes)
            return
        await repository.save_environment(tx.conn, env)
        if done.observed_at is not None:
            await repository.add_observation(
                tx.conn,
                env,
                observed_at=done.observed_at,
                status=env.drift_status,
                summary=env.drift_summary,
                trigger="bootstrap",
            )
        await tx.emit(data.request_id, self._bootstrapped(env, done.notes))

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

    # -- teardown ------------------------------------------------------------------------------

    async def tear_down(self, data: RequestUnpublished) -> Skip | Environment:
        """Delete the environment from its cluster; the caller holds the environment's lease.

        Objects outside the namespace of every generation ever applied go first (a
        generation that stopped half-way never pruned its predecessor's), then the namespace.
        """
        async with self.pool.connection() as conn:
            current = await repository.get_environment(conn, data.request_id)
            objects = (
                await repository.objects_ever_applied(conn, data.request_id)
                if self.cluster is not None
                else []
            )
        if current is not None and current.generation > data.generation:
            return Skip(f"superseded by generation {current.generation}")
        status: Literal["not_applied", "deleted"] = "not_applied"
        if self.cluster is not None:
            # The namespace is deleted even if this service never applied it (apply was off
            # then): teardown must leave nothing of the environment behind.
            for ref in teardown_order(objects, data.namespace):
                gone_already = not await self.cluster.delete(data.region, ref)
                log.info(
                    "deleted" if not gone_already else "already gone",
                    extra={"fields": {"object": ref.describe(), "region": data.region}},
                )
            status = "deleted"
        return Environment(
            request_id=data.request_id,
            generation=data.generation,
            region=data.region,
            namespace=data.namespace,
            cluster_status=status,
            commit_sha=data.commit_sha,
            applied_at=current.applied_at if current else None,
            torn_down_at=utcnow(),
        )

    async def record_teardown(self, tx: Tx, data: RequestUnpublished, env: Environment) -> None:
        await repository.save_environment(tx.conn, env)
        await tx.emit(
            env.request_id,
            RequestTornDown(
                request_id=env.request_id,
                generation=env.generation,
                cluster_status="deleted" if env.cluster_status == "deleted" else "not_applied",
            ),
        )

    # -- drift ---------------------------------------------------------------------------------

    async def scan_drift(self, stopping: asyncio.Event | None = None) -> ScanReport:
        """Check every applied environment once, self-healing drift; one short transaction each."""
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
        holder = f"drift-scan:{uuid.uuid4().hex}"
        if not await self._try_claim(request_id, holder):
            return "busy"  # being bootstrapped or torn down right now; next scan
        async with self._released_unless_kept(request_id, holder):
            async with self.pool.connection() as conn:
                env = await repository.get_environment(conn, request_id)
                objects = (
                    await repository.applied_objects(conn, request_id, env.generation)
                    if env is not None and env.scannable
                    else []
                )
            if env is None or not env.scannable:
                await self.release(request_id, holder)
                return "gone"
            # Bounded, so the lease (longer than this) never lapses under a scan still running.
            status, summary = await asyncio.wait_for(
                self._check(cluster, env, objects), timeout=self.work_timeout_seconds
            )
            async with self.pool.connection() as conn, conn.transaction():
                await self._record_scan(conn, env, status, summary)
                await repository.release_lease(conn, request_id, holder)
            return status

    async def _check(
        self, cluster: Cluster, env: Environment, objects: list[DesiredObject]
    ) -> tuple[DriftStatus, list[DriftItem]]:
        """Read the environment's objects back and self-heal what drifted (no transaction open)."""
        observed = await observe(cluster, env.region, objects)
        if not _flatten(observed):
            return "in_sync", []
        return await self._self_heal(cluster, env, observed)

    async def _record_scan(
        self, conn: repository.Conn, env: Environment, status: DriftStatus, summary: list[DriftItem]
    ) -> None:
        now = utcnow()
        due = drift_event_due(env.drift_status, env.drift_summary, status, summary)
        env.drift_status, env.drift_summary, env.last_scanned_at = status, summary, now
        await repository.save_environment(conn, env)
        if not due:
            return
        await repository.add_observation(
            conn, env, observed_at=now, status=status, summary=summary, trigger="scan"
        )
        await self.outbox.add(
            conn,
            env.request_id,
            RequestDriftDetected(
                request_id=env.request_id,
                generation=env.generation,
                drift_status=status,
                drift_summary=summary,
            ),
        )

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


# -- the two-phase handlers ----------------------------------------------------------------------


@dataclass(frozen=True)
class LeasedClusterWork(Generic[EventT, DoneT]):
    """One environment's cluster work under its lease: ``work`` in ``prepare``, with no
    transaction open; ``record`` in ``apply``, in the inbox transaction that also releases
    the lease. A skipped delivery gives the lease back at once."""

    service: ClusterBootstrapperService
    what: str  # for the log: "publication" or "teardown"
    work: Callable[[EventT], Awaitable[Skip | DoneT]]
    record: Callable[[Tx, EventT, DoneT], Awaitable[None]]

    async def prepare(self, envelope: Envelope, data: EventT) -> Skip | DoneT:
        # The event id holds the lease: a redelivery after a rolled-back transaction takes it
        # back at once instead of waiting for it to lapse.
        await self.service.claim(data.request_id, envelope.id)
        async with self.service._released_unless_kept(data.request_id, envelope.id):
            done = await self.work(data)
        if isinstance(done, Skip):
            await self.service.release(data.request_id, envelope.id)
        return done

    async def apply(self, envelope: Envelope, data: EventT, tx: Tx, prepared: Skip | DoneT) -> None:
        if isinstance(prepared, Skip):
            log.info(
                f"{self.what} skipped",
                extra={"fields": {"generation": data.generation, "reason": prepared.reason}},
            )
            return
        await self.record(tx, data, prepared)
        # In the same commit as the record: whoever takes the lease next reads this outcome.
        await repository.release_lease(tx.conn, data.request_id, envelope.id)
