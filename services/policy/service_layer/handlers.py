"""Policy commands, queries and event handlers; one transaction each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import Envelope
from contracts.events import ClassUpserted, RequestPolicyEvaluated, RequestSubmitted
from contracts.models import EnvironmentClass
from contracts.rpc import GetClass, ListClasses
from libs.database import Pool
from libs.errors import NotFound
from libs.inbox import Tx
from libs.outbox import Outbox
from services.policy.adapters import catalog_files, repository
from services.policy.domain.evaluation import evaluate


@dataclass
class PolicyService:
    pool: Pool
    outbox: Outbox

    async def seed_catalog(self) -> list[str]:
        """Insert the shipped classes and profiles that do not exist yet; announce new classes.

        Runs at every start. ``ON CONFLICT DO NOTHING`` makes it a no-op for anything already
        present, edited or not, and makes concurrent replicas announce each class once.
        """
        seeded = []
        async with self.pool.connection() as conn, conn.transaction():
            for profile in catalog_files.seed_quota_profiles():
                await repository.insert_seed_quota_profile(conn, profile)
            for environment_class in catalog_files.seed_classes():
                if await repository.insert_seed_class(conn, environment_class):
                    seeded.append(environment_class.name)
                    await self.outbox.add(
                        conn,
                        environment_class.name,
                        ClassUpserted(
                            environment_class=environment_class,
                            revision=1,
                            updated_by="seed",
                            updated_at=datetime.now(UTC),
                        ),
                    )
        return seeded

    async def list_classes(self, _: ListClasses) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            return {"items": await repository.list_classes(conn)}

    async def get_class(self, query: GetClass) -> EnvironmentClass:
        async with self.pool.connection() as conn:
            environment_class = await repository.get_class(conn, query.name)
        if environment_class is None:
            raise NotFound(f"environment class {query.name} not found")
        return environment_class

    async def on_request_submitted(self, envelope: Envelope, data: RequestSubmitted, tx: Tx) -> None:
        spec = data.spec
        environment_class = await repository.get_class(tx.conn, spec.class_name)
        profile = (
            await repository.get_quota_profile(tx.conn, environment_class.quota_profile)
            if environment_class is not None
            else None
        )
        decision = evaluate(spec, environment_class, profile)
        await repository.record_decision(
            tx.conn,
            request_id=data.request_id,
            team=spec.team,
            class_name=spec.class_name,
            outcome=decision.outcome,
            reasons=decision.reasons,
            plan=decision.plan,
        )
        await tx.emit(
            data.request_id,
            RequestPolicyEvaluated(
                request_id=data.request_id,
                outcome=decision.outcome,  # type: ignore[arg-type]
                reasons=decision.reasons,
                requires_approval=decision.requires_approval,
                approvals_required=decision.approvals_required,
                auto_reconcile=environment_class.auto_reconcile if environment_class else False,
                created_by=data.created_by,
                class_name=spec.class_name,
                plan=decision.plan,
            ),
        )
