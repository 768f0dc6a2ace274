"""Postgres records of what was published and torn down.

All functions take the caller's connection: the service layer owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class Publication:
    request_id: str
    generation: int
    commit_sha: str
    branch: str
    gitops_path: str
    mode: str
    committed: bool
    event_id: str


@dataclass(frozen=True)
class Unpublication:
    request_id: str
    generation: int
    commit_sha: str | None
    branch: str
    gitops_path: str
    event_id: str


async def get_publication(conn: Conn, request_id: str, generation: int) -> Publication | None:
    cursor = await conn.execute(
        "SELECT request_id, generation, commit_sha, branch, gitops_path, mode, committed, event_id::text"
        " FROM publications WHERE request_id = %s AND generation = %s",
        [request_id, generation],
    )
    row = await cursor.fetchone()
    return Publication(**row) if row else None


async def add_publication(conn: Conn, publication: Publication) -> bool:
    """Record ``publication``; False if its generation was already recorded (by a concurrent delivery)."""
    cursor = await conn.execute(
        "INSERT INTO publications (request_id, generation, commit_sha, branch, gitops_path, mode, committed,"
        " event_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        [
            publication.request_id,
            publication.generation,
            publication.commit_sha,
            publication.branch,
            publication.gitops_path,
            publication.mode,
            publication.committed,
            publication.event_id,
        ],
    )
    return await cursor.fetchone() is not None


async def newer_generation(conn: Conn, request_id: str, generation: int) -> int | None:
    """The newest generation of ``request_id`` published or torn down after ``generation``, if any."""
    cursor = await conn.execute(
        "SELECT max(generation) AS newest FROM ("
        " SELECT generation FROM publications WHERE request_id = %(id)s AND generation > %(g)s"
        " UNION ALL"
        " SELECT generation FROM unpublications WHERE request_id = %(id)s AND generation > %(g)s) AS later",
        {"id": request_id, "g": generation},
    )
    row = await cursor.fetchone()
    return int(row["newest"]) if row and row["newest"] is not None else None


async def get_unpublication(conn: Conn, request_id: str, generation: int) -> Unpublication | None:
    cursor = await conn.execute(
        "SELECT request_id, generation, commit_sha, branch, gitops_path, event_id::text"
        " FROM unpublications WHERE request_id = %s AND generation = %s",
        [request_id, generation],
    )
    row = await cursor.fetchone()
    return Unpublication(**row) if row else None


async def add_unpublication(conn: Conn, unpublication: Unpublication) -> bool:
    """Record ``unpublication``; False if its generation was already recorded."""
    cursor = await conn.execute(
        "INSERT INTO unpublications (request_id, generation, commit_sha, branch, gitops_path, event_id)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        [
            unpublication.request_id,
            unpublication.generation,
            unpublication.commit_sha,
            unpublication.branch,
            unpublication.gitops_path,
            unpublication.event_id,
        ],
    )
    return await cursor.fetchone() is not None
