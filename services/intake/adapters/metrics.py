"""Intake's metrics: where requests are, how long they took, what expires soon.

Intake owns the requests, so what is a fact of its tables (requests by status, the oldest
one in each status, environments expiring in the next 24 hours) is read from its own
schema on a short loop (:func:`libs.telemetry.refresh_every`); each replica reports the
same numbers, so dashboards take ``max`` over replicas. Latencies are observed where
intake projects the status change, from the times the events carry (when it happened,
not when intake heard of it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Gauge, Histogram
from psycopg import AsyncConnection

from contracts.envelope import Envelope
from libs.database import Pool
from libs.telemetry import REGISTRY, replace_samples
from services.intake.domain.model import BEFORE_APPROVAL, EXPIRABLE, EnvironmentRequest, Status

Conn = AsyncConnection[Any]

# Seconds, from a preview that is ready in half a second to an approval that waits days.
LIFECYCLE_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400, 43200, 86400, 259200)
# Nothing moves a request out of these by itself any more; their age says nothing.
SETTLED = frozenset({Status.READY, Status.FAILED, Status.REJECTED, Status.DELETED})
# Nothing changes these at all: they are not counted (their number only grows, and reading
# them every few seconds would cost more as it does).
TERMINAL = frozenset({Status.REJECTED, Status.DELETED})
IN_PLAY = [status for status in Status if status not in TERMINAL]
# Counts and ages of the requests still in play. The terminal statuses are written out as
# constants (of our own enum) so the planner matches the requests_in_play index's predicate.
_TERMINAL_LIST = ", ".join(f"'{status}'" for status in sorted(TERMINAL))
IN_PLAY_QUERY = (
    "SELECT status, class, count(*) AS n, min(coalesce(stalled_since, updated_at)) AS since"  # noqa: S608
    f" FROM requests WHERE status NOT IN ({_TERMINAL_LIST}) GROUP BY status, class"
)
EXPIRING_WITHIN = timedelta(hours=24)

REQUESTS = Gauge(
    "platform_requests",
    "Environment requests by status and class: every status but the terminal ones (rejected, "
    "deleted), each with a zero for every class.",
    ["status", "class"],
    registry=REGISTRY,
)
OLDEST_IN_STATUS = Gauge(
    "platform_requests_oldest_age_seconds",
    "Seconds the longest-stuck request in each unsettled status has gone without change "
    "(the anti-entropy's retries are not a change).",
    ["status"],
    registry=REGISTRY,
)
EXPIRING_SOON = Gauge(
    "platform_environments_expiring_soon",
    "Environments (ready or failed) whose expiry falls within the next 24 hours, by class.",
    ["class"],
    registry=REGISTRY,
)
READY_SECONDS = Histogram(
    "platform_request_ready_seconds",
    "From submission to the first time the environment was ready, by class.",
    ["class"],
    buckets=LIFECYCLE_BUCKETS,
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "platform_request_stage_seconds",
    "Time to reach a stage from the previous one, by class: approved (from submitted), rendered "
    "(from the run's reconcile request), published (from rendered), ready (from published).",
    ["class", "stage"],
    buckets=LIFECYCLE_BUCKETS,
    registry=REGISTRY,
)

# Stage reached by an event -> the event (of the same generation) whose time began it. The
# reconcile request is intake's own: its time is the record's queued_at.
STAGE_STARTED_BY = {
    "published": "request.rendered",
    "ready": "request.published",
}


async def refresh(pool: Pool) -> None:
    """Recompute the gauges from intake's tables."""
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        in_play = await _fetch(conn, IN_PLAY_QUERY)
        classes = await _fetch(conn, "SELECT name FROM environment_classes")
        expiring = await _fetch(
            conn,
            "SELECT class, count(*) AS n FROM requests WHERE status = ANY(%s)"
            " AND expires_at >= %s AND expires_at < %s GROUP BY class",
            [sorted(str(status) for status in EXPIRABLE), now, now + EXPIRING_WITHIN],
        )
    replace_samples(REQUESTS, _every_status(in_play, {row["name"] for row in classes}))
    replace_samples(OLDEST_IN_STATUS, _oldest_unsettled(in_play, now))
    replace_samples(EXPIRING_SOON, (((row["class"],), row["n"]) for row in expiring))


def _every_status(counts: list[dict[str, Any]], classes: set[str]) -> list[tuple[tuple[str, str], float]]:
    """Counts with a zero for every counted status of every known class, so a query over one
    status (``failed``) has a series to compare even before the first such request."""
    found = {(row["status"], row["class"]): float(row["n"]) for row in counts}
    keys = {(str(status), name) for status in IN_PLAY for name in classes} | found.keys()
    return [(key, found.get(key, 0.0)) for key in sorted(keys)]


def _oldest_unsettled(in_play: list[dict[str, Any]], now: datetime) -> list[tuple[tuple[str], float]]:
    since: dict[str, datetime] = {}
    for row in in_play:
        if row["status"] not in SETTLED:
            since[row["status"]] = min(row["since"], since.get(row["status"], row["since"]))
    return [((status,), (now - at).total_seconds()) for status, at in sorted(since.items())]


def observe_progress(
    request: EnvironmentRequest, envelope: Envelope, before: Status, *, was_ready_before: bool
) -> None:
    """Observe the stage latency (and, the first time it is ready, the end-to-end latency) of
    a change being projected, and mark on ``request`` (saved with it) the times later stages
    are measured from. ``was_ready_before``: whether the environment had been ready before
    this event (``last_reconciled_at`` was set). A retried projection may observe twice; that
    is rare (a concurrent change) and far cheaper than deferring to after the commit."""
    marks = request.stage_marks
    if marks.get("generation") != request.generation:
        marks.clear()
        marks["generation"] = request.generation
    stage = _stage_reached(envelope.type, before, request.status)
    if stage is not None:
        class_name = request.spec.class_name
        # Read before this event is marked: a stage is never measured from its own event.
        started = _began(request, stage)
        if started is not None:
            STAGE_SECONDS.labels(class_name, stage).observe(_seconds(started, envelope.time))
        if stage == "ready" and not was_ready_before:
            READY_SECONDS.labels(class_name).observe(_seconds(request.created_at, envelope.time))
    if envelope.type in STAGE_STARTED_BY.values():
        marks[envelope.type] = envelope.time.isoformat()


def _stage_reached(event_type: str, before: Status, after: Status) -> str | None:
    if after is Status.READY and before is not Status.READY:
        return "ready"
    if event_type == "request.approved" and before in BEFORE_APPROVAL:
        return "approved"
    return {"request.rendered": "rendered", "request.published": "published"}.get(event_type)


def _began(request: EnvironmentRequest, stage: str) -> datetime | None:
    if stage == "approved":
        return request.created_at
    if stage == "rendered":
        return request.queued_at
    marked = request.stage_marks.get(STAGE_STARTED_BY[stage])
    return datetime.fromisoformat(marked) if marked else None


def _seconds(started: datetime, ended: datetime) -> float:
    # Event times come from different hosts; a little clock skew must not go negative.
    return max(0.0, (ended - started).total_seconds())


async def _fetch(conn: Conn, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = await conn.execute(query, params)
    return list(await cursor.fetchall())
