"""Postgres persistence of the policy catalog, team budgets and decisions.

All functions take the caller's connection: the service layer owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from contracts.models import (
    BudgetCheck,
    EnvironmentClass,
    EnvironmentPlan,
    PolicyPack,
    PolicyReason,
    QuotaProfile,
    TeamEnvironment,
)

Conn = AsyncConnection[Any]

SEED_ACTOR = "seed"


# -- seeds: inserted when absent, never overwriting (an admin's edit always wins) -------------------


async def insert_seed_class(conn: Conn, environment_class: EnvironmentClass) -> bool:
    """Insert a seed class unless one of that name exists."""
    cursor = await conn.execute(
        "INSERT INTO environment_classes (name, definition, revision, seeded, updated_by)"
        " VALUES (%s, %s, 1, true, %s) ON CONFLICT (name) DO NOTHING",
        [environment_class.name, Jsonb(msgspec.to_builtins(environment_class)), SEED_ACTOR],
    )
    return cursor.rowcount == 1


async def upgrade_seed_class(conn: Conn, environment_class: EnvironmentClass, added: str) -> int | None:
    """Give a stored seed class that no admin has edited the field ``added`` of the shipped
    seed, which a release before it did not have; the new revision, or None when there was
    nothing to upgrade (edited by an admin, or the field present already)."""
    cursor = await conn.execute(
        "UPDATE environment_classes SET definition = definition || %s, revision = revision + 1,"
        " updated_at = now(), updated_by = %s"
        " WHERE name = %s AND seeded AND NOT (definition ? %s) RETURNING revision",
        [
            Jsonb({added: msgspec.to_builtins(getattr(environment_class, added))}),
            SEED_ACTOR,
            environment_class.name,
            added,
        ],
    )
    row = await cursor.fetchone()
    return int(row["revision"]) if row else None


async def insert_seed_definition(
    conn: Conn, table: Literal["quota_profiles", "policy_packs"], definition: QuotaProfile | PolicyPack
) -> bool:
    """Insert a seed quota profile or policy pack unless one of that name exists."""
    cursor = await conn.execute(
        sql.SQL(
            "INSERT INTO {} (name, definition, seeded, updated_by) VALUES (%s, %s, true, %s)"
            " ON CONFLICT (name) DO NOTHING"
        ).format(sql.Identifier(table)),
        [definition.name, Jsonb(msgspec.to_builtins(definition)), SEED_ACTOR],
    )
    return cursor.rowcount == 1


# -- classes ----------------------------------------------------------------------------------------


async def locked_definition(
    conn: Conn, table: Literal["environment_classes", "quota_profiles", "policy_packs"], name: str
) -> dict[str, Any] | None:
    """The stored definition called ``name``, its row locked until the transaction ends (so a
    conditional write compares with what it then replaces); None when there is none."""
    cursor = await conn.execute(
        sql.SQL("SELECT definition FROM {} WHERE name = %s FOR UPDATE").format(sql.Identifier(table)), [name]
    )
    row = await cursor.fetchone()
    return dict(row["definition"]) if row else None


async def get_class(conn: Conn, name: str) -> EnvironmentClass | None:
    cursor = await conn.execute("SELECT definition FROM environment_classes WHERE name = %s", [name])
    row = await cursor.fetchone()
    return msgspec.convert(row["definition"], EnvironmentClass) if row else None


async def list_classes(conn: Conn) -> list[EnvironmentClass]:
    cursor = await conn.execute("SELECT definition FROM environment_classes ORDER BY name")
    return [msgspec.convert(row["definition"], EnvironmentClass) for row in await cursor.fetchall()]


async def class_revision(conn: Conn, name: str) -> int:
    cursor = await conn.execute("SELECT revision FROM environment_classes WHERE name = %s", [name])
    row = await cursor.fetchone()
    return int(row["revision"]) if row else 0


@dataclass(frozen=True)
class Stored:
    """What an admin's upsert did: ``created`` a new document, replaced one, or left it
    ``unchanged`` (the same content again); ``revision`` is a class's revision after it."""

    created: bool
    unchanged: bool
    revision: int = 0


async def upsert_class(conn: Conn, environment_class: EnvironmentClass, actor: str) -> Stored:
    """Store an admin's class.

    The upsert locks the row, so concurrent edits get strictly increasing revisions and the
    replicas (which keep the highest revision) converge on the last committed edit. The same
    content again changes nothing: no new revision, no ``class.upserted``, and the row keeps
    who last changed it and when.
    """
    cursor = await conn.execute(
        "INSERT INTO environment_classes (name, definition, revision, seeded, updated_at, updated_by)"
        " VALUES (%s, %s, 1, false, now(), %s)"
        " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition,"
        " revision = environment_classes.revision + 1, seeded = false, updated_at = now(),"
        " updated_by = EXCLUDED.updated_by"
        " WHERE environment_classes.definition IS DISTINCT FROM EXCLUDED.definition"
        " RETURNING revision, (xmax = 0) AS created",
        [environment_class.name, Jsonb(msgspec.to_builtins(environment_class)), actor],
    )
    row = await cursor.fetchone()
    if row is not None:
        return Stored(created=bool(row["created"]), unchanged=False, revision=int(row["revision"]))
    # No row: the WHERE found the stored definition equal (and the conflict locked the row,
    # so the revision read next is the one that definition has).
    cursor = await conn.execute(
        "SELECT revision FROM environment_classes WHERE name = %s", [environment_class.name]
    )
    row = await cursor.fetchone()
    assert row is not None
    return Stored(created=False, unchanged=True, revision=int(row["revision"]))


# -- quota profiles ---------------------------------------------------------------------------------


async def get_quota_profile(conn: Conn, name: str) -> QuotaProfile | None:
    cursor = await conn.execute("SELECT definition FROM quota_profiles WHERE name = %s", [name])
    row = await cursor.fetchone()
    return msgspec.convert(row["definition"], QuotaProfile) if row else None


async def list_quota_profiles(conn: Conn) -> list[QuotaProfile]:
    cursor = await conn.execute("SELECT definition FROM quota_profiles ORDER BY name")
    return [msgspec.convert(row["definition"], QuotaProfile) for row in await cursor.fetchall()]


async def quota_profile_names(conn: Conn) -> set[str]:
    cursor = await conn.execute("SELECT name FROM quota_profiles")
    return {row["name"] for row in await cursor.fetchall()}


async def upsert_quota_profile(conn: Conn, profile: QuotaProfile, actor: str) -> Stored:
    """Store an admin's profile; the same content again changes nothing (see :func:`upsert_class`)."""
    cursor = await conn.execute(
        "INSERT INTO quota_profiles (name, definition, seeded, updated_at, updated_by)"
        " VALUES (%s, %s, false, now(), %s)"
        " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, seeded = false,"
        " updated_at = now(), updated_by = EXCLUDED.updated_by"
        " WHERE quota_profiles.definition IS DISTINCT FROM EXCLUDED.definition"
        " RETURNING (xmax = 0) AS created",
        [profile.name, Jsonb(msgspec.to_builtins(profile)), actor],
    )
    row = await cursor.fetchone()
    return Stored(created=bool(row and row["created"]), unchanged=row is None)


# -- policy packs -----------------------------------------------------------------------------------


async def get_policy_pack(conn: Conn, name: str) -> PolicyPack | None:
    cursor = await conn.execute("SELECT definition FROM policy_packs WHERE name = %s", [name])
    row = await cursor.fetchone()
    return msgspec.convert(row["definition"], PolicyPack) if row else None


async def list_policy_packs(conn: Conn) -> list[PolicyPack]:
    cursor = await conn.execute("SELECT definition FROM policy_packs ORDER BY name")
    return [msgspec.convert(row["definition"], PolicyPack) for row in await cursor.fetchall()]


async def policy_pack_names(conn: Conn) -> set[str]:
    cursor = await conn.execute("SELECT name FROM policy_packs")
    return {row["name"] for row in await cursor.fetchall()}


async def policy_packs(conn: Conn, names: list[str] | None = None) -> dict[str, PolicyPack]:
    """Packs by name: the named ones that exist, or all of them."""
    if names is None:
        cursor = await conn.execute("SELECT definition FROM policy_packs")
    else:
        cursor = await conn.execute("SELECT definition FROM policy_packs WHERE name = ANY(%s)", [names])
    packs = (msgspec.convert(row["definition"], PolicyPack) for row in await cursor.fetchall())
    return {pack.name: pack for pack in packs}


async def upsert_policy_pack(conn: Conn, pack: PolicyPack, actor: str) -> Stored:
    """Store an admin's pack; the same content again changes nothing (see :func:`upsert_class`)."""
    cursor = await conn.execute(
        "INSERT INTO policy_packs (name, definition, seeded, updated_at, updated_by)"
        " VALUES (%s, %s, false, now(), %s)"
        " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition, seeded = false,"
        " updated_at = now(), updated_by = EXCLUDED.updated_by"
        " WHERE policy_packs.definition IS DISTINCT FROM EXCLUDED.definition"
        " RETURNING (xmax = 0) AS created",
        [pack.name, Jsonb(msgspec.to_builtins(pack)), actor],
    )
    row = await cursor.fetchone()
    return Stored(created=bool(row and row["created"]), unchanged=row is None)


# -- teams and the budget ledger ------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamRow:
    team: str
    monthly_budget_usd: float | None
    budget_updated_at: datetime | None
    budget_updated_by: str | None


def _team(row: dict[str, Any] | None, team: str) -> TeamRow:
    if row is None:
        return TeamRow(team, None, None, None)
    return TeamRow(row["team"], row["monthly_budget_usd"], row["budget_updated_at"], row["budget_updated_by"])


_LOCK_TEAM = "SELECT team, monthly_budget_usd, budget_updated_at, budget_updated_by FROM teams WHERE team = %s FOR UPDATE"


async def lock_team(conn: Conn, team: str) -> TeamRow:
    """The team's row, locked until the transaction ends (created without a budget if new).

    Every evaluation of a request of the team takes this lock before reading the team's
    spend, so evaluations of one team run one after another and each sees the reservations
    of those before it.
    """
    row = await (await conn.execute(_LOCK_TEAM, [team])).fetchone()
    if row is None:
        # A team's first request: the row is created once, then locked like any other.
        await conn.execute("INSERT INTO teams (team) VALUES (%s) ON CONFLICT (team) DO NOTHING", [team])
        row = await (await conn.execute(_LOCK_TEAM, [team])).fetchone()
    return _team(row, team)


async def get_team(conn: Conn, team: str) -> TeamRow:
    cursor = await conn.execute(
        "SELECT team, monthly_budget_usd, budget_updated_at, budget_updated_by FROM teams WHERE team = %s",
        [team],
    )
    return _team(await cursor.fetchone(), team)


async def set_team_budget(conn: Conn, team: str, monthly_usd: float | None, actor: str) -> TeamRow:
    cursor = await conn.execute(
        "INSERT INTO teams (team, monthly_budget_usd, budget_updated_at, budget_updated_by)"
        " VALUES (%s, %s, now(), %s)"
        " ON CONFLICT (team) DO UPDATE SET monthly_budget_usd = EXCLUDED.monthly_budget_usd,"
        " budget_updated_at = now(), budget_updated_by = EXCLUDED.budget_updated_by"
        " RETURNING team, monthly_budget_usd, budget_updated_at, budget_updated_by",
        [team, monthly_usd, actor],
    )
    return _team(await cursor.fetchone(), team)


async def team_usage(
    conn: Conn, team: str, class_name: str, *, excluding: str | None = None
) -> tuple[float, int]:
    """The estimated monthly cost of the team's active environments and how many of them are
    of ``class_name``, leaving ``excluding`` out: one statement over the team's active rows."""
    cursor = await conn.execute(
        "SELECT coalesce(sum(estimated_monthly_cost_usd), 0) AS spend,"
        " count(*) FILTER (WHERE class = %s) AS in_class FROM environments"
        " WHERE team = %s AND released_at IS NULL AND request_id IS DISTINCT FROM %s",
        [class_name, team, excluding],
    )
    row = await cursor.fetchone()
    return (float(row["spend"]), int(row["in_class"])) if row else (0.0, 0)


async def active_environments(conn: Conn, team: str) -> list[TeamEnvironment]:
    cursor = await conn.execute(
        "SELECT request_id, class, estimated_monthly_cost_usd, reserved_at FROM environments"
        " WHERE team = %s AND released_at IS NULL ORDER BY reserved_at, request_id",
        [team],
    )
    return [
        TeamEnvironment(
            request_id=row["request_id"],
            class_name=row["class"],
            estimated_monthly_cost_usd=row["estimated_monthly_cost_usd"],
            since=row["reserved_at"],
        )
        for row in await cursor.fetchall()
    ]


async def reserve(conn: Conn, *, request_id: str, team: str, class_name: str, cost: float) -> bool:
    """Count an allowed request in its team's spend; True when this call reserved it.

    Once per request: a re-evaluation keeps the first reservation, and a request whose release
    was handled first has a tombstone (see :func:`release`) and is never counted. Both are the
    primary-key conflict, which also holds across replicas: an INSERT that meets the
    uncommitted tombstone of a concurrent release waits for it and then does nothing.
    """
    cursor = await conn.execute(
        "INSERT INTO environments (request_id, team, class, estimated_monthly_cost_usd)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING",
        [request_id, team, class_name, cost],
    )
    return cursor.rowcount == 1


async def is_released(conn: Conn, request_id: str) -> bool:
    cursor = await conn.execute(
        "SELECT 1 FROM environments WHERE request_id = %s AND released_at IS NOT NULL", [request_id]
    )
    return await cursor.fetchone() is not None


async def release(conn: Conn, request_id: str, *, team: str, class_name: str, because: str) -> bool:
    """Stop counting the request in its team's spend, whether or not it is counted yet.

    The release and the reservation come from different events on different consumers, so
    the release may be handled first. It then leaves a tombstone (released, never reserved:
    no cost, no ``reserved_at``) that makes the later :func:`reserve` a no-op; otherwise the
    deleted request would be reserved afterwards and count forever. The upsert waits for a
    concurrent uncommitted reservation of the same request and then releases it, so either
    order of commits ends released. False when the request was released already (the first
    release's reason stays).
    """
    cursor = await conn.execute(
        "INSERT INTO environments (request_id, team, class, estimated_monthly_cost_usd, reserved_at,"
        " released_at, released_because) VALUES (%s, %s, %s, NULL, NULL, now(), %s)"
        " ON CONFLICT (request_id) DO UPDATE SET released_at = now(),"
        " released_because = EXCLUDED.released_because WHERE environments.released_at IS NULL",
        [request_id, team, class_name, because],
    )
    return cursor.rowcount == 1


# -- decisions --------------------------------------------------------------------------------------


async def record_decision(
    conn: Conn,
    *,
    request_id: str,
    team: str,
    class_name: str,
    outcome: str,
    reasons: list[PolicyReason],
    plan: EnvironmentPlan | None,
    requires_approval: bool = False,
    approvals_required: int = 0,
    budget: BudgetCheck | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO decisions (request_id, team, class, outcome, reasons, plan, requires_approval,"
        " approvals_required, budget) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (request_id) DO NOTHING",
        [
            request_id,
            team,
            class_name,
            outcome,
            Jsonb(msgspec.to_builtins(reasons)),
            Jsonb(msgspec.to_builtins(plan)) if plan is not None else None,
            requires_approval,
            approvals_required,
            Jsonb(msgspec.to_builtins(budget)) if budget is not None else None,
        ],
    )


async def decided_team_and_class(conn: Conn, request_id: str) -> tuple[str, str] | None:
    """The team and class policy decided ``request_id`` for, if it has."""
    cursor = await conn.execute("SELECT team, class FROM decisions WHERE request_id = %s", [request_id])
    row = await cursor.fetchone()
    return (row["team"], row["class"]) if row else None
