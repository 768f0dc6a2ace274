"""Postgres persistence of environments, applied objects and drift observations.

All functions take the caller's connection: the service layer owns the transaction.
Work on one environment (a bootstrap, a teardown, a drift scan) holds a lease on its
request id (a row, not a lock: it outlives the short transaction that takes it, so the
Kubernetes calls run with no transaction open), so a scan never re-applies an old
generation while a consumer applies a new one, in this process or in another replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from contracts.events import DriftItem
from services.cluster_bootstrapper.domain.environment import Environment
from services.cluster_bootstrapper.domain.manifests import DesiredObject, ObjectRef

Conn = AsyncConnection[Any]


async def claim_lease(conn: Conn, request_id: str, holder: str, seconds: float) -> bool:
    """Take the lease on ``request_id`` for ``seconds``; False while someone else holds it.

    ``holder`` takes it back from itself (a redelivered event after its transaction rolled
    back must not wait for its own claim to lapse) and from anyone whose claim has lapsed.
    """
    cursor = await conn.execute(
        "INSERT INTO environment_leases (request_id, holder, expires_at)"
        " VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s))"
        " ON CONFLICT (request_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
        " WHERE environment_leases.holder = EXCLUDED.holder OR environment_leases.expires_at <= clock_timestamp()"
        " RETURNING 1",
        [request_id, holder, seconds],
    )
    return await cursor.fetchone() is not None


async def release_lease(conn: Conn, request_id: str, holder: str) -> None:
    """Give the lease back (nothing happens if ``holder`` no longer has it)."""
    await conn.execute(
        "DELETE FROM environment_leases WHERE request_id = %s AND holder = %s", [request_id, holder]
    )


def _summary(items: list[DriftItem]) -> Jsonb:
    return Jsonb(msgspec.to_builtins(items))


async def get_environment(conn: Conn, request_id: str) -> Environment | None:
    cursor = await conn.execute("SELECT * FROM environments WHERE request_id = %s", [request_id])
    row = await cursor.fetchone()
    if row is None:
        return None
    return Environment(
        request_id=row["request_id"],
        generation=row["generation"],
        region=row["region"],
        namespace=row["namespace"],
        cluster_status=row["cluster_status"],
        drift_status=row["drift_status"],
        drift_summary=msgspec.convert(row["drift_summary"], list[DriftItem]),
        commit_sha=row["commit_sha"],
        applied_at=row["applied_at"],
        last_scanned_at=row["last_scanned_at"],
        torn_down_at=row["torn_down_at"],
    )


async def save_environment(conn: Conn, env: Environment) -> None:
    await conn.execute(
        "INSERT INTO environments (request_id, generation, region, namespace, commit_sha, cluster_status,"
        " drift_status, drift_summary, applied_at, last_scanned_at, torn_down_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (request_id) DO UPDATE SET generation = EXCLUDED.generation, region = EXCLUDED.region,"
        " namespace = EXCLUDED.namespace, commit_sha = EXCLUDED.commit_sha,"
        " cluster_status = EXCLUDED.cluster_status, drift_status = EXCLUDED.drift_status,"
        " drift_summary = EXCLUDED.drift_summary, applied_at = EXCLUDED.applied_at,"
        " last_scanned_at = EXCLUDED.last_scanned_at, torn_down_at = EXCLUDED.torn_down_at,"
        " updated_at = now()",
        [
            env.request_id,
            env.generation,
            env.region,
            env.namespace,
            env.commit_sha,
            env.cluster_status,
            env.drift_status,
            _summary(env.drift_summary),
            env.applied_at,
            env.last_scanned_at,
            env.torn_down_at,
        ],
    )


@dataclass(frozen=True)
class ObjectRecord:
    desired: DesiredObject
    order: int
    applied_at: datetime | None
    note: str | None = None

    @property
    def outcome(self) -> str:
        return "applied" if self.applied_at is not None else "skipped"


async def record_objects(
    conn: Conn, request_id: str, generation: int, region: str, records: list[ObjectRecord]
) -> None:
    """Record what was applied (or skipped) for ``generation``; a re-apply refreshes the rows."""
    for record in records:
        ref = record.desired.ref
        await conn.execute(
            "INSERT INTO applied_objects (request_id, generation, region, namespace, kind, name, api_version,"
            " applied_at, digest, apply_order, outcome, note, manifest)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (request_id, generation, api_version, kind, namespace, name) DO UPDATE SET"
            " region = EXCLUDED.region, applied_at = EXCLUDED.applied_at, digest = EXCLUDED.digest,"
            " apply_order = EXCLUDED.apply_order, outcome = EXCLUDED.outcome, note = EXCLUDED.note,"
            " manifest = EXCLUDED.manifest",
            [
                request_id,
                generation,
                region,
                ref.namespace or "",
                ref.kind,
                ref.name,
                ref.api_version,
                record.applied_at,
                record.desired.digest,
                record.order,
                record.outcome,
                record.note,
                Jsonb(record.desired.manifest),
            ],
        )


async def applied_objects(conn: Conn, request_id: str, generation: int) -> list[DesiredObject]:
    """The objects applied for ``generation``, in the order they were applied."""
    cursor = await conn.execute(
        "SELECT api_version, kind, name, namespace, apply_order, manifest FROM applied_objects"
        " WHERE request_id = %s AND generation = %s AND outcome = 'applied' ORDER BY apply_order",
        [request_id, generation],
    )
    return [
        DesiredObject(
            ObjectRef(row["api_version"], row["kind"], row["name"], row["namespace"] or None),
            row["manifest"],
            rank=row["apply_order"],
        )
        for row in await cursor.fetchall()
    ]


async def objects_ever_applied(conn: Conn, request_id: str) -> list[DesiredObject]:
    """Every object any generation of ``request_id`` applied, once each (the latest manifest).

    Teardown deletes these: a generation whose apply stopped half-way (or was rejected)
    never pruned what the one before it applied, and the bootstrapper's environment row
    only names the latest generation.
    """
    cursor = await conn.execute(
        "SELECT DISTINCT ON (api_version, kind, namespace, name)"
        " api_version, kind, name, namespace, apply_order, manifest FROM applied_objects"
        " WHERE request_id = %s AND outcome = 'applied'"
        " ORDER BY api_version, kind, namespace, name, generation DESC",
        [request_id],
    )
    return [
        DesiredObject(
            ObjectRef(row["api_version"], row["kind"], row["name"], row["namespace"] or None),
            row["manifest"],
            rank=row["apply_order"],
        )
        for row in await cursor.fetchall()
    ]


async def add_observation(
    conn: Conn,
    env: Environment,
    *,
    observed_at: datetime,
    status: str,
    summary: list[DriftItem],
    trigger: str,
) -> None:
    await conn.execute(
        "INSERT INTO drift_observations (request_id, generation, observed_at, status, summary, trigger)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [env.request_id, env.generation, observed_at, status, _summary(summary), trigger],
    )


async def environments_to_scan(conn: Conn, limit: int = 10_000) -> list[str]:
    """Applied, not torn-down environments, least recently scanned first."""
    cursor = await conn.execute(
        "SELECT request_id FROM environments WHERE cluster_status = 'applied' AND torn_down_at IS NULL"
        " ORDER BY last_scanned_at NULLS FIRST, request_id LIMIT %s",
        [limit],
    )
    return [row["request_id"] for row in await cursor.fetchall()]
