"""Postgres persistence of requests, timeline, idempotency keys and the class replica.

All functions take the caller's connection: the service layer owns the transaction.
Updates are guarded by the record's ``version`` (optimistic concurrency), so two writers
that both read version N cannot both win.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from contracts.envelope import Envelope
from contracts.events import Attestation
from contracts.models import EnvironmentClass, EnvironmentPlan, RequestSpec
from contracts.rpc import FEED_CURSOR_PATTERN
from libs.errors import ConcurrentChange, ValidationFailed
from services.intake.domain.model import EnvironmentRequest, Status
from services.intake.domain.timeline import stored_form

Conn = AsyncConnection[Any]

_COLUMNS = [
    "status",
    "generation",
    "version",
    "created_at",
    "created_by",
    "updated_at",
    "expires_at",
    "approved_at",
    "approved_by",
    "approvals",
    "rejected_at",
    "rejected_by",
    "rejection_reason",
    "queued_at",
    "last_reconciled_at",
    "last_error",
    "namespace",
    "gitops_path",
    "git_commit_sha",
    "git_branch",
    "git_promotion_mode",
    "git_promotion_branch",
    "git_promotion_url",
    "cluster_status",
    "drift_status",
    "drift_summary",
    "quota_profile",
    "policy_packs",
    "estimated_monthly_cost_usd",
    "policy_decision",
    "requires_approval",
    "approvals_required",
    "auto_reconcile",
    "plan",
    "attestations",
    "failure_kind",
    "failed_stage",
    "next_attempt_at",
    "stalled_since",
    "git_removal_commit_sha",
    "deleted_at",
    "namespace_deleted",
    "stage_marks",
]
_JSON_COLUMNS = {
    "approvals",
    "drift_summary",
    "policy_packs",
    "policy_decision",
    "plan",
    "attestations",
    "stage_marks",
}


def _column_value(request: EnvironmentRequest, column: str) -> Any:
    value = getattr(request, column)
    if column == "status":
        return str(value)
    if column in {"plan", "attestations"}:
        return Jsonb(msgspec.to_builtins(value)) if value is not None else None
    if column in _JSON_COLUMNS:
        return Jsonb(value) if value is not None else None
    return value


def _from_row(row: dict[str, Any]) -> EnvironmentRequest:
    spec = RequestSpec(
        app=row["app"],
        team=row["team"],
        class_name=row["class"],
        region=row["region"],
        ttl_hours=row["ttl_hours"],
        owner=row["owner"],
        repository=row["repository"],
        revision=row["revision"],
        labels=row["labels"],
    )
    values = {column: row[column] for column in _COLUMNS}
    values["status"] = Status(row["status"])
    values["plan"] = msgspec.convert(row["plan"], EnvironmentPlan) if row["plan"] is not None else None
    values["attestations"] = msgspec.convert(row["attestations"], list[Attestation])
    return EnvironmentRequest(id=row["id"], spec=spec, **values)


async def get(conn: Conn, request_id: str, *, for_update: bool = False) -> EnvironmentRequest | None:
    query = "SELECT * FROM requests WHERE id = %s" + (" FOR UPDATE" if for_update else "")  # noqa: S608 - constant
    cursor = await conn.execute(query, [request_id])
    row = await cursor.fetchone()
    return _from_row(row) if row else None


async def lock_many(conn: Conn, request_ids: list[str]) -> list[EnvironmentRequest]:
    """The requests of ``request_ids`` that exist, locked ``FOR UPDATE`` in id order: two
    transactions locking overlapping sets this way never wait on each other crosswise."""
    cursor = await conn.execute(
        "SELECT * FROM requests WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [sorted(request_ids)]
    )
    return [_from_row(row) for row in await cursor.fetchall()]


async def add(conn: Conn, request: EnvironmentRequest) -> None:
    spec = request.spec
    columns = [
        "id",
        "app",
        "team",
        "class",
        "region",
        "ttl_hours",
        "owner",
        "repository",
        "revision",
        "labels",
    ]
    values: list[Any] = [
        request.id,
        spec.app,
        spec.team,
        spec.class_name,
        spec.region,
        spec.ttl_hours,
        spec.owner,
        spec.repository,
        spec.revision,
        Jsonb(spec.labels),
    ]
    columns += _COLUMNS
    values += [_column_value(request, column) for column in _COLUMNS]
    placeholders = ", ".join(["%s"] * len(columns))
    await conn.execute(f"INSERT INTO requests ({', '.join(columns)}) VALUES ({placeholders})", values)  # noqa: S608


@dataclass(frozen=True)
class TimelineRow:
    """One event for the timeline, written by :func:`append_timeline` or with :func:`save`."""

    envelope: Envelope
    data: Any
    applied: bool
    status_after: str

    def values(self, request_id: str) -> list[Any]:
        """The row's values, in :data:`_TIMELINE_FIELDS` order."""
        return [
            request_id,
            self.envelope.id,
            self.envelope.type,
            self.envelope.source,
            self.envelope.time,
            getattr(self.data, "generation", None),
            self.applied,
            self.status_after,
            _stored_data(self.data),
        ]


_TIMELINE_FIELDS = (
    "request_id, event_id, event_type, source, occurred_at, generation, applied, status_after, data"
)
_INSERT_TIMELINE = (
    f"INSERT INTO request_timeline ({_TIMELINE_FIELDS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"  # noqa: S608
    " ON CONFLICT (event_id) DO NOTHING"
)
# The same row passed as one jsonb document. With it a save has 48 parameters, within the 50
# up to which psycopg keeps a statement's converted form; with nine more it converted the
# statement again on every save (7 % of intake's CPU under load).
_INSERT_TIMELINE_ENTRY = (
    f"INSERT INTO request_timeline ({_TIMELINE_FIELDS}) SELECT {_TIMELINE_FIELDS}"  # noqa: S608
    " FROM jsonb_populate_record(NULL::request_timeline, %s) ON CONFLICT (event_id) DO NOTHING"
)
# ttl_hours is the one field of the spec that can change after creation (extend).
_UPDATE = (
    f"UPDATE requests SET {', '.join(f'{column} = %s' for column in [*_COLUMNS, 'ttl_hours'])}"  # noqa: S608
    " WHERE id = %s AND version = %s"
)
_UPDATE_WITH_ENTRY = f"WITH entry AS ({_INSERT_TIMELINE_ENTRY}) {_UPDATE}"


async def save(conn: Conn, request: EnvironmentRequest, timeline: TimelineRow | None = None) -> None:
    """Write ``request`` back if nobody changed it since it was read; bumps ``version``.

    ``timeline``: the event that changed it, recorded in the same statement (one round trip
    less per projected event; a concurrent change rolls both back with the transaction)."""
    expected = request.version
    request.version += 1
    values = [*(_column_value(request, column) for column in _COLUMNS), request.spec.ttl_hours]
    if timeline is None:
        cursor = await conn.execute(_UPDATE, [*values, request.id, expected])
    else:
        entry = dict(zip(_TIMELINE_FIELDS.split(", "), timeline.values(request.id), strict=True))
        entry["occurred_at"] = timeline.envelope.time.isoformat()  # JSON of any encoder
        cursor = await conn.execute(_UPDATE_WITH_ENTRY, [Jsonb(entry), *values, request.id, expected])
    if cursor.rowcount != 1:
        request.version = expected
        raise ConcurrentChange(f"request {request.id} was changed concurrently; retry")


def encode_cursor(created_at: datetime, request_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{request_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, request_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), request_id
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed(
            "invalid request parameters: cursor",
            details=[{"field": "cursor", "message": "must be the next_cursor of an earlier page"}],
        ) from None


async def list_requests(
    conn: Conn,
    *,
    team: str | None,
    status: str | None,
    class_name: str | None,
    teams_in_scope: frozenset[str] | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[EnvironmentRequest], str | None]:
    """Newest first; ``next_cursor`` is None on the last page."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("team", team), ("status", status), ("class", class_name)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if teams_in_scope is not None:
        clauses.append("team = ANY(%s)")
        params.append(sorted(teams_in_scope))
    if cursor:
        created_at, request_id = decode_cursor(cursor)
        clauses.append("(created_at, id) < (%s, %s)")
        params += [created_at, request_id]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows_cursor = await conn.execute(
        f"SELECT * FROM requests {where} ORDER BY created_at DESC, id DESC LIMIT %s",  # noqa: S608
        [*params, limit + 1],
    )
    rows = await rows_cursor.fetchall()
    page = [_from_row(row) for row in rows[:limit]]
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit and page else None
    return page, next_cursor


async def outbox_position_before(conn: Conn, seconds: float) -> int:
    """The newest outbox position staged more than ``seconds`` ago (0 if none was): found by
    walking the positions back from the newest, so it reads the last ``seconds`` only."""
    cursor = await conn.execute(
        "SELECT coalesce((SELECT seq FROM outbox WHERE created_at < now() - make_interval(secs => %s)"
        " ORDER BY seq DESC LIMIT 1), 0) AS seq",
        [seconds],
    )
    row = await cursor.fetchone()
    return int(row["seq"]) if row else 0


async def staged_after(
    conn: Conn, position: int, event_types: list[str], settled_seconds: float, limit: int
) -> list[dict[str, Any]]:
    """Outbox rows of ``event_types`` after ``position``, in order: each with whether it was
    staged at least ``settled_seconds`` ago and whether the timeline has its event."""
    cursor = await conn.execute(
        "SELECT o.seq, o.payload, o.created_at < now() - make_interval(secs => %s) AS settled,"
        " EXISTS (SELECT 1 FROM request_timeline t WHERE t.event_id = o.event_id) AS recorded"
        " FROM outbox o WHERE o.seq > %s AND o.event_type = ANY(%s) ORDER BY o.seq LIMIT %s",
        [settled_seconds, position, event_types, limit],
    )
    return await cursor.fetchall()


async def append_timeline(
    conn: Conn, request_id: str, envelope: Envelope, data: Any, *, applied: bool, status_after: str
) -> bool:
    """Record one event in the timeline (the row also records its transaction, see
    :func:`all_timelines` for why), in the timeline's own form: bundles by their files' names,
    sizes and hashes, long text cut (:func:`~services.intake.domain.timeline.stored_form`).
    Whether it was new."""
    values = TimelineRow(envelope, data, applied, status_after).values(request_id)
    cursor = await conn.execute(_INSERT_TIMELINE, [*values[:-1], Jsonb(values[-1])])
    return cursor.rowcount == 1  # False: the timeline had the event already


def _stored_data(data: Any) -> Any:
    value = msgspec.to_builtins(data)
    return stored_form(value) if isinstance(value, dict) else value


async def due_for_expiry(
    conn: Conn, now: datetime, statuses: list[str], limit: int
) -> list[EnvironmentRequest]:
    """Requests past ``expires_at``, locked for this transaction.

    ``SKIP LOCKED``: several intake replicas sweep at once without waiting on (or expiring
    twice) the same rows; a row a consumer is updating right now is picked up next pass.
    """
    cursor = await conn.execute(
        "SELECT * FROM requests WHERE status = ANY(%s) AND expires_at <= %s"
        " AND (status <> 'failed' OR failure_kind = 'pipeline')"
        " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED",
        [statuses, now, limit],
    )
    return [_from_row(row) for row in await cursor.fetchall()]


async def stalled(conn: Conn, statuses: list[str], before: datetime, limit: int) -> list[EnvironmentRequest]:
    """Requests in ``statuses`` that have not changed since ``before``, locked (SKIP LOCKED)."""
    cursor = await conn.execute(
        "SELECT * FROM requests WHERE status = ANY(%s) AND updated_at < %s"
        " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
        [statuses, before, limit],
    )
    return [_from_row(row) for row in await cursor.fetchall()]


FEED_CURSOR = re.compile(FEED_CURSOR_PATTERN)
BIGINT_MAX = 2**63 - 1

_TIMELINE_COLUMNS = (
    "t.seq, t.request_id, t.event_id, t.event_type, t.source, t.occurred_at, t.generation,"
    " t.applied, t.status_after, t.data"
)


@dataclass(frozen=True, order=True)
class FeedPosition:
    """A position in the all-requests feed: (writing transaction, sequence number)."""

    txid: int
    seq: int

    def encode(self) -> str:
        return f"{self.txid}.{self.seq}"

    @classmethod
    def decode(cls, cursor: str) -> FeedPosition:
        # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses; and each
        # part must fit the bigint it is compared with, or Postgres would fail the query.
        match = FEED_CURSOR.fullmatch(cursor)
        if match is None or match[1] is None or max(int(match[1]), int(match[2])) > BIGINT_MAX:
            raise ValidationFailed(
                "invalid request parameters: after",
                details=[{"field": "after", "message": "must be the next_cursor of an earlier page"}],
            )
        return cls(int(match[1]), int(match[2]))


async def all_timelines(
    conn: Conn,
    *,
    teams_in_scope: frozenset[str] | None,
    after: FeedPosition,
    request_id: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Timeline entries of every visible request after ``after``, in feed order.

    Order is (txid, seq), and only entries of transactions older than every transaction
    still in progress are returned (``txid < pg_snapshot_xmin``). Any entry committed later
    belongs to a transaction at or above that horizon, so it sorts after everything a
    follower has already read: nothing is skipped, and writers never wait for each other
    (a plain ``seq`` cursor would skip a row whose transaction commits after a later one).
    """
    clauses = ["(t.txid, t.seq) > (%s::text::xid8, %s)", "t.txid < pg_snapshot_xmin(pg_current_snapshot())"]
    params: list[Any] = [after.txid, after.seq]
    if teams_in_scope is not None:
        clauses.append("r.team = ANY(%s)")
        params.append(sorted(teams_in_scope))
    if request_id is not None:
        clauses.append("t.request_id = %s")
        params.append(request_id)
    # The join also hides facts about ids intake never stored (applied=false, status unknown).
    where = " AND ".join(clauses)
    query = (
        f"SELECT {_TIMELINE_COLUMNS}, t.txid::text::bigint AS txid FROM request_timeline t"  # noqa: S608
        f" JOIN requests r ON r.id = t.request_id WHERE {where} ORDER BY t.txid, t.seq LIMIT %s"
    )
    cursor = await conn.execute(query, [*params, limit])
    return list(await cursor.fetchall())


async def feed_end(conn: Conn) -> FeedPosition:
    """Where a follower that wants only what happens from now on starts."""
    cursor = await conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon")
    row = await cursor.fetchone()
    return FeedPosition(int(row["horizon"]) if row else 0, 0)


async def timeline(
    conn: Conn, request_id: str, *, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """The request's timeline in order, from the entry after sequence number ``after``; at most
    ``limit`` entries (all without one)."""
    cursor = await conn.execute(
        "SELECT seq, request_id, event_id, event_type, source, occurred_at, generation, applied,"
        " status_after, data FROM request_timeline WHERE request_id = %s AND seq > %s ORDER BY seq"
        " LIMIT %s",
        [request_id, after, limit],
    )
    return list(await cursor.fetchall())


async def upsert_class(conn: Conn, environment_class: EnvironmentClass, revision: int) -> bool:
    """Keep the newest revision only: replays and reordering cannot roll a class back."""
    cursor = await conn.execute(
        "INSERT INTO environment_classes (name, definition, revision, updated_at) VALUES (%s, %s, %s, now())"
        " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, revision = EXCLUDED.revision,"
        " updated_at = now() WHERE environment_classes.revision < EXCLUDED.revision",
        [environment_class.name, Jsonb(msgspec.to_builtins(environment_class)), revision],
    )
    return cursor.rowcount == 1


async def classes(conn: Conn) -> dict[str, EnvironmentClass]:
    cursor = await conn.execute("SELECT definition FROM environment_classes")
    return {
        definition.name: definition
        for definition in (
            msgspec.convert(row["definition"], EnvironmentClass) for row in await cursor.fetchall()
        )
    }


async def count_classes(conn: Conn) -> int:
    cursor = await conn.execute("SELECT count(*) AS n FROM environment_classes")
    row = await cursor.fetchone()
    return int(row["n"]) if row else 0


async def request_id_key(conn: Conn) -> bytes:
    """The installation's secret for deriving the ids of Idempotency-Key creates (migration 0011)."""
    cur = await conn.execute("SELECT key FROM request_id_key")
    row = await cur.fetchone()
    if row is None:
        raise RuntimeError("intake's request id key is missing (migration 0011 did not run)")
    return str(row["key"]).encode()


async def find_idempotency_key(conn: Conn, actor: str, key: str) -> tuple[str, str] | None:
    cursor = await conn.execute(
        "SELECT body_hash, request_id FROM idempotency_keys WHERE actor = %s AND key = %s", [actor, key]
    )
    row = await cursor.fetchone()
    return (row["body_hash"], row["request_id"]) if row else None


async def claim_idempotency_key(conn: Conn, actor: str, key: str, body_hash: str, request_id: str) -> bool:
    """Record the key; False when a concurrent call claimed it first."""
    cursor = await conn.execute(
        "INSERT INTO idempotency_keys (actor, key, body_hash, request_id) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING",
        [actor, key, body_hash, request_id],
    )
    return cursor.rowcount == 1
