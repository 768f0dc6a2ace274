"""Policy's metrics: each team's committed monthly spend against its budget.

Facts of policy's own ledger, read on a short loop (:func:`libs.telemetry.refresh_every`);
every replica reports the same numbers, so dashboards take ``max`` over replicas.
"""

from __future__ import annotations

from libs.database import Pool
from libs.telemetry import replace_samples, table_gauge
from services.policy.domain.budgets import team_budget

SPEND = table_gauge(
    "platform_team_monthly_spend_usd",
    "Estimated monthly cost of a team's active environments (what its budget is checked against).",
    "team",
)
BUDGET = table_gauge(
    "platform_team_monthly_budget_usd",
    "The monthly budget that applies to a team: its own, else the default for teams without one.",
    "team",
)


async def refresh(pool: Pool, default_budget_usd: float | None) -> None:
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
    budgets = (((row["team"],), team_budget(row["budget"], default_budget_usd)[0]) for row in rows)
    replace_samples(BUDGET, ((labels, budget) for labels, budget in budgets if budget is not None))
