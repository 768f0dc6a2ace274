"""Team budgets: a request's estimated monthly cost against what its team may spend.

A team's spend is the sum of ``estimated_monthly_cost_usd`` of its *active* environments:
every request policy allowed (approval pending included: an approval must not be able to
push the team over its budget) until it is rejected by an approver or its teardown is
requested. Failed requests keep counting, because they can be reconciled again and may be
partly deployed; deleting them frees their share. The policy service keeps this ledger
itself from events (docs/policy.md "Budgets").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from contracts.models import BudgetCheck


@dataclass(frozen=True)
class TeamSpend:
    """The team's budget (None: no budget) and the cost of its active environments, without
    the request being evaluated; and how many of them are of the request's class."""

    team: str
    monthly_budget_usd: float | None
    active_spend_usd: float
    live_in_class: int = 0


BudgetSource = Literal["team", "default", "none"]


def team_budget(own_usd: float | None, default_usd: float | None) -> tuple[float | None, BudgetSource]:
    """The budget that applies to a team and where it comes from: the team's own (an admin
    set it), else the default (``PLATFORM_DEFAULT_TEAM_BUDGET_USD``), else none."""
    if own_usd is not None:
        return own_usd, "team"
    if default_usd is not None:
        return default_usd, "default"
    return None, "none"


def budget_check(spend: TeamSpend, request_cost_usd: float) -> BudgetCheck:
    """Whether the request's cost on top of the team's active environments exceeds the budget.

    Spending exactly the budget is within it.
    """
    projected = round(spend.active_spend_usd + request_cost_usd, 2)
    budget = spend.monthly_budget_usd
    return BudgetCheck(
        team=spend.team,
        monthly_budget_usd=budget,
        active_spend_usd=round(spend.active_spend_usd, 2),
        request_cost_usd=round(request_cost_usd, 2),
        projected_spend_usd=projected,
        exceeded=budget is not None and projected > budget,
    )
