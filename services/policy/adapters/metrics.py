"""Policy's metrics: each team's committed monthly spend against its budget.

Facts of policy's own ledger, read on a short loop (:func:`libs.telemetry.refresh_every`);
every replica reports the same numbers, so dashboards take ``max`` over replicas.
"""

from __future__ import annotations

from libs.database import Pool
from libs.telemetry import replace_samples, table_gauge

SPEND = table_gauge(
    "platform_team_monthly_spend_usd",
    "Estimated monthly cost of a team's active environments (what its budget is checked against).",
    "team",
)
BUDGET = table_gauge(
    "platform_team_monthly_budget_usd", "A team's monthly budget, for teams an admin gave one.", "team"
)


async def refresh(pool: Pool) -> None:
    """Recompute the gauges from the budget ledger (every team policy has seen has a row)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT t.team, t.monthly_budget_usd AS budget,"
            " coalesce(sum(e.estimated_monthly_cost_usd), 0) AS spend"
            " FROM teams t LEFT JOIN environments e ON e.team = t.team AND e.released_at IS NULL"
            " GROUP BY t.team, t.monthly_budget_usd"
        )
        rows = await cursor.fetchall()
    replace_samples(SPEND, (((row["team"],), row["spend"]) for row in rows))
    replace_samples(BUDGET, (((row["team"],), row["budget"]) for row in rows if row["budget"] is not None))
