"""Approval's metrics: approvals waiting for people, and for how long.

Facts of approval's own table, read on a short loop (:func:`libs.telemetry.refresh_every`);
every replica reports the same numbers, so dashboards take ``max`` over replicas.
"""

from __future__ import annotations

from datetime import UTC, datetime

from libs.database import Pool
from libs.telemetry import replace_samples, table_gauge

PENDING = table_gauge(
    "platform_approvals_pending", "Requests waiting for an approver's decision, by class.", "class"
)
OLDEST_PENDING = table_gauge(
    "platform_approvals_pending_oldest_age_seconds",
    "Seconds the longest-waiting pending approval has waited, by class.",
    "class",
)


async def refresh(pool: Pool) -> None:
    """Recompute the gauges from the pending approval records."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT class, count(*) AS n, min(created_at) AS since FROM approval_requests"
            " WHERE status = 'pending' AND requires_approval GROUP BY class"
        )
        rows = await cursor.fetchall()
    now = datetime.now(UTC)
    replace_samples(PENDING, (((row["class"],), row["n"]) for row in rows))
    replace_samples(OLDEST_PENDING, (((row["class"],), (now - row["since"]).total_seconds()) for row in rows))
