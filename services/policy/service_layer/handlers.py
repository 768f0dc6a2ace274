"""Policy's request evaluation: event handlers, the dry-run plan, catalog reads, seeding.

One transaction each. Admin edits of the catalog and budgets are in
:mod:`services.policy.service_layer.catalog`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from contracts.envelope import Envelope
from contracts.events import (
    RequestPolicyEvaluated,
    RequestRejected,
    RequestSubmitted,
    RequestTeardownRequested,
)
from contracts.models import EnvironmentClass, PolicyPlanView, RequestSpec
from contracts.replies import ClassList
from contracts.rpc import GetClass, ListClasses, PlanRequest
from libs.database import Pool, without_transaction
from libs.inbox import Tx
from libs.outbox import Outbox
from services.policy.adapters import catalog_files, repository
from services.policy.domain.budgets import TeamSpend, team_budget
from services.policy.domain.evaluation import Decision, evaluate
from services.policy.service_layer.catalog import announce_class, read_one

log = logging.getLogger(__name__)

# Fields the shipped seed classes gained after their first release, in the order they came:
# an unedited seed class stored before gets each (:meth:`PolicyService.seed_catalog`).
SEED_FIELDS_ADDED = ("max_environments_per_team",)


async def decide(
    conn: AsyncConnection[Any], request_id: str, spec: RequestSpec, budget: float | None
) -> Decision:
    """Evaluate ``spec`` against the catalog as it is in this transaction.

    The team's spend leaves out ``request_id`` itself, so evaluating a request again (a
    replayed event, a dry run with the key of an existing request) gives the same answer.
    """
    environment_class = await repository.get_class(conn, spec.class_name)
    profile = packs = None
    if environment_class is not None:
        profile = await repository.get_quota_profile(conn, environment_class.quota_profile)
        packs = await repository.policy_packs(conn, list(environment_class.policy_packs))
    active_spend, live_in_class = await repository.team_usage(
        conn, spec.team, spec.class_name, excluding=request_id
    )
    spend = TeamSpend(
        team=spec.team, monthly_budget_usd=budget, active_spend_usd=active_spend, live_in_class=live_in_class
    )
    return evaluate(spec, environment_class, profile, packs or {}, spend)


@dataclass
class PolicyService:
    pool: Pool
    outbox: Outbox
    # PLATFORM_DEFAULT_TEAM_BUDGET_USD: the budget of teams an admin has not given one.
    default_budget_usd: float | None = None

    async def seed_catalog(self) -> list[str]:
        """Insert the shipped profiles, packs and classes that do not exist yet; announce new classes.

        Runs at every start. ``ON CONFLICT DO NOTHING`` makes it a no-op for anything already
        present, edited or not, and makes concurrent replicas announce each class once.
        Profiles and packs go first: classes refer to them.
        """
        seeded = []
        async with self.pool.connection() as conn, conn.transaction():
            for profile in catalog_files.seed_quota_profiles():
                await repository.insert_seed_definition(conn, "quota_profiles", profile)
            for pack in catalog_files.seed_policy_packs():
                await repository.insert_seed_definition(conn, "policy_packs", pack)
            for environment_class in catalog_files.seed_classes():
                if await repository.insert_seed_class(conn, environment_class):
                    seeded.append(environment_class.name)
                    await announce_class(
                        self.outbox, conn, environment_class, revision=1, updated_by=repository.SEED_ACTOR
                    )
                    continue
                await self._upgrade_seed_class(conn, environment_class)
        return seeded

    async def _upgrade_seed_class(
        self, conn: AsyncConnection[Any], environment_class: EnvironmentClass
    ) -> None:
        """A seed class stored by an earlier release, never edited, gets the fields the shipped
        seed gained since (today ``max_environments_per_team``), as a new announced revision.
        A class an admin edited is theirs: left alone, whatever it lacks."""
        for added in SEED_FIELDS_ADDED:
            revision = await repository.upgrade_seed_class(conn, environment_class, added)
            if revision is not None:
                log.info("seed class upgraded", extra={"class": environment_class.name, "field": added})
                stored = await repository.get_class(conn, environment_class.name)
                assert stored is not None
                await announce_class(
                    self.outbox, conn, stored, revision=revision, updated_by=repository.SEED_ACTOR
                )

    # -- queries -------------------------------------------------------------------------------------

    async def list_classes(self, _: ListClasses) -> ClassList:
        async with without_transaction(self.pool) as conn:
            return ClassList(items=await repository.list_classes(conn))

    async def get_class(self, query: GetClass) -> EnvironmentClass:
        return await read_one(self.pool, repository.get_class, query.name, "environment class")

    async def plan(self, query: PlanRequest) -> PolicyPlanView:
        """The decision and plan ``query.spec`` would get now; reads only, stores nothing."""
        async with without_transaction(self.pool) as conn:
            team = await repository.get_team(conn, query.spec.team)
            budget, _ = team_budget(team.monthly_budget_usd, self.default_budget_usd)
            decision = await decide(conn, query.request_id, query.spec, budget)
        assert decision.budget is not None
        return PolicyPlanView(
            request_id=query.request_id, decision=decision.view(), plan=decision.plan, budget=decision.budget
        )

    # -- events --------------------------------------------------------------------------------------

    async def on_request_submitted(self, envelope: Envelope, data: RequestSubmitted, tx: Tx) -> None:
        spec = data.spec
        # Taken before the team's spend is read and held until commit: the next evaluation
        # of this team waits here and then sees this request's reservation.
        team = await repository.lock_team(tx.conn, spec.team)
        budget, _ = team_budget(team.monthly_budget_usd, self.default_budget_usd)
        decision = await decide(tx.conn, data.request_id, spec, budget)
        await repository.record_decision(
            tx.conn,
            request_id=data.request_id,
            team=spec.team,
            class_name=spec.class_name,
            outcome=decision.outcome,
            reasons=decision.reasons,
            plan=decision.plan,
            requires_approval=decision.requires_approval,
            approvals_required=decision.approvals_required,
            budget=decision.budget,
        )
        if decision.allowed and decision.plan is not None:
            reserved = await repository.reserve(
                tx.conn,
                request_id=data.request_id,
                team=spec.team,
                class_name=spec.class_name,
                cost=decision.plan.estimated_monthly_cost_usd,
            )
            if not reserved and await repository.is_released(tx.conn, data.request_id):
                # Deleted (or rejected) before this evaluation ran: its release left a
                # tombstone, and a request on its way out must not take budget.
                log.info("request already released; nothing reserved")
        await tx.emit(
            data.request_id,
            RequestPolicyEvaluated(
                request_id=data.request_id,
                outcome=decision.outcome,  # type: ignore[arg-type]
                reasons=decision.reasons,
                requires_approval=decision.requires_approval,
                approvals_required=decision.approvals_required,
                auto_reconcile=decision.auto_reconcile,
                created_by=data.created_by,
                class_name=spec.class_name,
                plan=decision.plan,
                budget=decision.budget,
                # Passed on for the approval service's separation of duties.
                created_by_subject=data.created_by_subject,
            ),
        )

    async def on_request_rejected(self, envelope: Envelope, data: RequestRejected, tx: Tx) -> None:
        """An approver rejected the request: it will never exist, so it stops counting."""
        # The event names no team: take it from our own decision, which always exists here
        # (approval rejects only requests whose policy decision it received, and that decision
        # was committed together with the reservation).
        decided = await repository.decided_team_and_class(tx.conn, data.request_id)
        if decided is None:
            log.warning("rejection of a request policy has not evaluated; nothing to release")
            return
        team, class_name = decided
        await repository.release(
            tx.conn, data.request_id, team=team, class_name=class_name, because="rejected"
        )

    async def on_teardown_requested(self, envelope: Envelope, data: RequestTeardownRequested, tx: Tx) -> None:
        """Deleted or expired: the environment is on its way out (deletion is final), so its
        share of the budget is free for the team's next request right away.

        This may run before the request's evaluation (a delete right after the create: the
        two events reach separate consumers); the release then leaves a tombstone so the
        evaluation reserves nothing (:func:`repository.release`).
        """
        await repository.release(
            tx.conn,
            data.request_id,
            team=data.spec.team,
            class_name=data.spec.class_name,
            because=f"teardown ({data.reason})",
        )
