"""Postgres persistence of the policy catalog and decisions (caller owns the transaction)."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from contracts.models import EnvironmentClass, EnvironmentPlan, PolicyReason
from services.policy.domain.quota_profiles import QuotaProfile

Conn = AsyncConnection[Any]


async def insert_seed_class(conn: Conn, environment_class: EnvironmentClass) -> bool:
    """Insert a seed class unless one of that name exists (an admin's edit always wins)."""
    cursor = await conn.execute(
        "INSERT INTO environment_classes (name, definition, revision, seeded, updated_by)"
        " VALUES (%s, %s, 1, true, 'seed') ON CONFLICT (name) DO NOTHING",
        [environment_class.name, Jsonb(msgspec.to_builtins(environment_class))],
    )
    return cursor.rowcount == 1


async def insert_seed_quota_profile(conn: Conn, profile: QuotaProfile) -> bool:
    cursor = await conn.execute(
        "INSERT INTO quota_profiles (name, definition, seeded, updated_by) VALUES (%s, %s, true, 'seed')"
        " ON CONFLICT (name) DO NOTHING",
        [profile.name, Jsonb(msgspec.to_builtins(profile))],
    )
    return cursor.rowcount == 1


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


async def get_quota_profile(conn: Conn, name: str) -> QuotaProfile | None:
    cursor = await conn.execute("SELECT definition FROM quota_profiles WHERE name = %s", [name])
    row = await cursor.fetchone()
    return msgspec.convert(row["definition"], QuotaProfile) if row else None


async def record_decision(
    conn: Conn,
    *,
    request_id: str,
    team: str,
    class_name: str,
    outcome: str,
    reasons: list[PolicyReason],
    plan: EnvironmentPlan | None,
) -> None:
    await conn.execute(
        "INSERT INTO decisions (request_id, team, class, outcome, reasons, plan) VALUES (%s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (request_id) DO NOTHING",
        [
            request_id,
            team,
            class_name,
            outcome,
            Jsonb(msgspec.to_builtins(reasons)),
            Jsonb(msgspec.to_builtins(plan)) if plan is not None else None,
        ],
    )
