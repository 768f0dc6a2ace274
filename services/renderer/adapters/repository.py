"""Postgres persistence of rendered bundles.

All functions take the caller's connection: the service layer owns the transaction.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.renderer.domain.bundle import Bundle, BundleFile

Conn = AsyncConnection[Any]


async def get(conn: Conn, request_id: str, generation: int) -> Bundle | None:
    cursor = await conn.execute(
        "SELECT request_id, generation, namespace, gitops_path, files FROM bundles"
        " WHERE request_id = %s AND generation = %s",
        [request_id, generation],
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    return Bundle(
        request_id=row["request_id"],
        generation=row["generation"],
        namespace=row["namespace"],
        gitops_path=row["gitops_path"],
        files=tuple(BundleFile(name=file["name"], content=file["content"]) for file in row["files"]),
    )


async def add(conn: Conn, bundle: Bundle) -> bool:
    """Store ``bundle``; False when its generation was stored already (that one stays)."""
    cursor = await conn.execute(
        "INSERT INTO bundles (request_id, generation, namespace, gitops_path, digest, files)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (request_id, generation) DO NOTHING",
        [
            bundle.request_id,
            bundle.generation,
            bundle.namespace,
            bundle.gitops_path,
            bundle.digest,
            Jsonb([{"name": file.name, "content": file.content} for file in bundle.files]),
        ],
    )
    return cursor.rowcount == 1
