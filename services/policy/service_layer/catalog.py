"""Admin edits of the catalog (classes, quota profiles, policy packs) and team budgets.

One transaction each. A class edit is announced as ``class.upserted`` (revision + 1) in
the same transaction, so intake's replica follows every committed edit and no other; the
same content again is no edit (no revision, no event, the reply says ``unchanged``).
Everything an admin sends is validated with every failing field named; references
(profiles, packs) and the combination of a class's packs are checked against the catalog
as it is inside the transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import msgspec
from psycopg import AsyncConnection

from contracts.etags import content_tag, if_match_holds
from contracts.events import ClassUpserted
from contracts.models import Actor, EnvironmentClass, PolicyPack, QuotaProfile, TeamBudgetView
from contracts.replies import (
    ClassUpsert,
    PolicyPackList,
    PolicyPackUpsert,
    QuotaProfileList,
    QuotaProfileUpsert,
)
from contracts.roles import Role, acts_for, your_teams
from contracts.rpc import (
    GetPolicyPack,
    GetQuotaProfile,
    GetTeam,
    ListPolicyPacks,
    ListQuotaProfiles,
    SetTeamBudget,
    UpsertClass,
    UpsertPolicyPack,
    UpsertQuotaProfile,
)
from libs.database import Pool, without_transaction
from libs.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from libs.kubernetes_schemas import KubernetesSchemas
from libs.outbox import Outbox
from libs.rpc import MoreProblems, message_fields
from services.policy.adapters import repository
from services.policy.domain.budgets import team_budget
from services.policy.domain.catalog_validation import (
    check_team,
    environment_class,
    name_problems,
    policy_pack,
    quota_profile,
    reference_problems,
)
from services.policy.domain.packs import compose, packs_of

Conn = AsyncConnection[Any]
T = TypeVar("T")
# Stands in for the request's namespace when a pack's manifest is checked against its schema.
SCHEMA_CHECK_NAMESPACE = "schema-check"


def pack_schema_problems(pack: PolicyPack, schemas: KubernetesSchemas) -> list[dict[str, str]]:
    """Schema violations of the pack's manifests, as the renderer would build them."""
    details = []
    for index, template in enumerate(pack.manifests):
        manifest: dict[str, Any] = {
            "apiVersion": template.api_version,
            "kind": template.kind,
            "metadata": {"name": template.name, "namespace": SCHEMA_CHECK_NAMESPACE, "labels": {}},
        }
        # As in the renderer: an empty spec is left out, data only when given.
        if template.spec:
            manifest["spec"] = template.spec
        if template.data is not None:
            manifest["data"] = template.data
        details += [
            {"field": f"manifests[{index}]", "message": problem} for problem in schemas.problems(manifest)
        ]
    return details


async def announce_class(
    outbox: Outbox, conn: Conn, environment_class: EnvironmentClass, *, revision: int, updated_by: str
) -> None:
    """Stage ``class.upserted`` in the transaction that stored this revision of the class, so
    intake's replica sees every committed revision and nothing that was rolled back."""
    await outbox.add(
        conn,
        environment_class.name,
        ClassUpserted(
            environment_class=environment_class,
            revision=revision,
            updated_by=updated_by,
            updated_at=datetime.now(UTC),
        ),
    )


def check_if_match(if_match: str | None, current: Any, what: str) -> None:
    """A conditional write (``If-Match``) goes ahead only if ``current`` (the stored document
    as a ``GET`` shows it, None when there is none) still has one of the tags the client sent."""
    if if_match is None:
        return
    if current is None:
        raise Conflict(f"{what} does not exist, so If-Match: {if_match} does not hold; nothing was changed")
    # Tagged as the gateway tags it: the answer as it arrives there, decoded from the wire
    # (where a spend of 0 is 0.0, a timestamp text in the one RFC 3339 form).
    tag = content_tag(msgspec.json.decode(msgspec.json.encode(current), type=type(current)))
    if not if_match_holds(if_match, tag):
        raise Conflict(
            f"{what} changed since you read it (its ETag is now {tag}); nothing was changed: "
            "read it again and apply your change to what it is now",
            details={"etag": tag},
        )


async def check_stored_if_match(
    conn: Conn,
    if_match: str | None,
    table: Literal["environment_classes", "quota_profiles", "policy_packs"],
    name: str,
    shape: type[Any],
    what: str,
) -> None:
    """:func:`check_if_match` against the stored ``table`` row called ``name`` (locked)."""
    if if_match is None:
        return
    stored = await repository.locked_definition(conn, table, name)
    check_if_match(if_match, None if stored is None else msgspec.convert(stored, shape), what)


async def read_one(pool: Pool, read: Callable[[Conn, str], Awaitable[T | None]], name: str, what: str) -> T:
    """``read(conn, name)``: the catalog item called ``name``, or :class:`NotFound` for ``what``."""
    async with without_transaction(pool) as conn:
        found = await read(conn, name)
    if found is None:
        raise NotFound(f"{what} {name} not found")
    return found


def name_problems_of(what: str) -> MoreProblems:
    """For a ``what`` document whose body failed its model: whether its name is the URL's."""

    async def problems(message: bytes) -> list[FieldError]:
        fields = message_fields(message)
        body = fields.get("body")
        return name_problems(
            str(fields.get("name", "")), body.get("name") if isinstance(body, dict) else None, what
        )

    return problems


def check_budget_readable(actor: Actor, team: str) -> None:
    """Every role reads every team's budget, except requesters: only their own teams'
    (docs/api.md); whose teams a caller acts for is the one rule of :mod:`contracts.roles`."""
    if actor.role == Role.REQUESTER and not acts_for(actor, team):
        message = (
            f"{your_teams(actor)}; requesters read only the budgets of their own teams, not team {team}'s"
        )
        raise Forbidden(message, details=[{"field": "team", "message": message}])


@dataclass
class CatalogService:
    pool: Pool
    outbox: Outbox
    schemas: KubernetesSchemas
    # PLATFORM_DEFAULT_TEAM_BUDGET_USD: what a team's view shows while it has no budget of its own.
    default_budget_usd: float | None = None

    # -- classes -------------------------------------------------------------------------------------

    async def upsert_class(self, command: UpsertClass) -> ClassUpsert:
        """Create or replace a class; intake's replica follows through ``class.upserted``."""
        async with self.pool.connection() as conn, conn.transaction():
            packs = await repository.policy_packs(conn)
            new_class = environment_class(
                command.name,
                command.body,
                quota_profiles=await repository.quota_profile_names(conn),
                policy_packs=set(packs),
            )
            class_packs, _ = packs_of(new_class, packs)
            conflicts = compose(class_packs).conflicts
            if conflicts:
                raise ValidationFailed(
                    "invalid environment class: policy_packs",
                    details=[
                        {"field": "policy_packs", "message": conflict.message} for conflict in conflicts
                    ],
                )
            # A body policy refuses is refused whatever If-Match says; a valid one is written only
            # if If-Match holds (the same order for every catalog document and the budget).
            await check_stored_if_match(
                conn,
                command.if_match,
                "environment_classes",
                command.name,
                EnvironmentClass,
                f"environment class {command.name}",
            )
            stored = await repository.upsert_class(conn, new_class, command.actor.actor)
            if not stored.unchanged:
                await announce_class(
                    self.outbox, conn, new_class, revision=stored.revision, updated_by=command.actor.actor
                )
        return ClassUpsert(
            created=stored.created,
            revision=stored.revision,
            environment_class=new_class,
            unchanged=stored.unchanged,
        )

    async def class_problems_of(self, message: bytes) -> list[FieldError]:
        """For a class body that failed its model: what the URL's name and the catalog refuse
        of the rest (an unknown quota profile or pack), so one answer names every field."""
        fields = message_fields(message)
        body = fields.get("body")
        if not isinstance(body, dict):
            return []
        async with without_transaction(self.pool) as conn:
            known_profiles = await repository.quota_profile_names(conn)
            known_packs = await repository.policy_pack_names(conn)
        return name_problems(str(fields.get("name", "")), body.get("name"), "class") + reference_problems(
            body.get("quota_profile"),
            body.get("policy_packs"),
            known_profiles=known_profiles,
            known_packs=known_packs,
        )

    # -- quota profiles ------------------------------------------------------------------------------

    async def list_quota_profiles(self, _: ListQuotaProfiles) -> QuotaProfileList:
        async with without_transaction(self.pool) as conn:
            return QuotaProfileList(items=await repository.list_quota_profiles(conn))

    async def get_quota_profile(self, query: GetQuotaProfile) -> QuotaProfile:
        return await read_one(self.pool, repository.get_quota_profile, query.name, "quota profile")

    async def upsert_quota_profile(self, command: UpsertQuotaProfile) -> QuotaProfileUpsert:
        """Create or replace a profile; classes that use it get the new values from their next request."""
        profile = quota_profile(command.name, command.body)
        async with self.pool.connection() as conn, conn.transaction():
            await check_stored_if_match(
                conn,
                command.if_match,
                "quota_profiles",
                command.name,
                QuotaProfile,
                f"quota profile {command.name}",
            )
            stored = await repository.upsert_quota_profile(conn, profile, command.actor.actor)
        return QuotaProfileUpsert(created=stored.created, profile=profile, unchanged=stored.unchanged)

    # -- policy packs --------------------------------------------------------------------------------

    async def list_policy_packs(self, _: ListPolicyPacks) -> PolicyPackList:
        async with without_transaction(self.pool) as conn:
            return PolicyPackList(items=await repository.list_policy_packs(conn))

    async def get_policy_pack(self, query: GetPolicyPack) -> PolicyPack:
        return await read_one(self.pool, repository.get_policy_pack, query.name, "policy pack")

    async def upsert_policy_pack(self, command: UpsertPolicyPack) -> PolicyPackUpsert:
        """Create or replace a pack; refused if it would clash with another pack of a class using it."""
        pack = policy_pack(command.name, command.body)
        # Off the event loop: the first call loads the schema files (CPU-bound, ~0.5 s).
        details = await asyncio.to_thread(pack_schema_problems, pack, self.schemas)
        if details:
            raise ValidationFailed(
                "invalid policy pack: " + ", ".join(dict.fromkeys(d["field"] for d in details)),
                details=details,
            )
        async with self.pool.connection() as conn, conn.transaction():
            packs = {**await repository.policy_packs(conn), pack.name: pack}
            for environment_class in await repository.list_classes(conn):
                if pack.name not in environment_class.policy_packs:
                    continue
                class_packs, _ = packs_of(environment_class, packs)
                details += [
                    {
                        "field": conflict.part,
                        "message": f"in class {environment_class.name}: {conflict.message}",
                    }
                    for conflict in compose(class_packs).conflicts
                ]
            if details:
                raise ValidationFailed(
                    "invalid policy pack: it conflicts with other packs of a class", details=details
                )
            await check_stored_if_match(
                conn,
                command.if_match,
                "policy_packs",
                command.name,
                PolicyPack,
                f"policy pack {command.name}",
            )
            stored = await repository.upsert_policy_pack(conn, pack, command.actor.actor)
        return PolicyPackUpsert(created=stored.created, pack=pack, unchanged=stored.unchanged)

    # -- teams and budgets ---------------------------------------------------------------------------

    async def _team_view(self, conn: Conn, team: str) -> TeamBudgetView:
        row = await repository.get_team(conn, team)
        environments = await repository.active_environments(conn, team)
        spend = round(sum(environment.estimated_monthly_cost_usd for environment in environments), 2)
        budget, source = team_budget(row.monthly_budget_usd, self.default_budget_usd)
        return TeamBudgetView(
            team=team,
            monthly_budget_usd=budget,
            budget_source=source,
            spend_usd=spend,
            remaining_usd=None if budget is None else round(budget - spend, 2),
            active_environments=environments,
            budget_updated_at=row.budget_updated_at,
            budget_updated_by=row.budget_updated_by,
        )

    async def get_team(self, query: GetTeam) -> TeamBudgetView:
        """Any valid team name answers (a team with no budget and no environments has spend 0)."""
        check_team(query.team)
        check_budget_readable(query.actor, query.team)
        async with without_transaction(self.pool) as conn:
            return await self._team_view(conn, query.team)

    async def set_team_budget(self, command: SetTeamBudget) -> TeamBudgetView:
        """Set (or with null remove) the team's monthly budget; applies to the next evaluation."""
        check_team(command.team)
        monthly_usd = command.body.monthly_usd
        async with self.pool.connection() as conn, conn.transaction():
            if command.if_match is not None:
                # The team's row lock (taken by every evaluation too) holds its spend still
                # while the answer the client read is compared with the current one.
                await repository.lock_team(conn, command.team)
                check_if_match(
                    command.if_match, await self._team_view(conn, command.team), f"team {command.team}"
                )
            await repository.set_team_budget(conn, command.team, monthly_usd, command.actor.actor)
            return await self._team_view(conn, command.team)
