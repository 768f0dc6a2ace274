"""Postgres persistence of approval requests and decisions (caller owns the transaction)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[Any]


async def open_request(
    conn: Conn,
    *,
    request_id: str,
    class_name: str,
    created_by: str,
    requires_approval: bool,
    approvals_required: int,
    status: str,
) -> bool:
    cursor = await conn.execute(
        "INSERT INTO approval_requests (request_id, class, created_by, requires_approval, approvals_required,"
        " status, decided_at) VALUES (%s, %s, %s, %s, %s, %s, CASE WHEN %s = 'pending' THEN NULL ELSE now() END)"
        " ON CONFLICT (request_id) DO NOTHING",
        [request_id, class_name, created_by, requires_approval, approvals_required, status, status],
    )
    return cursor.rowcount == 1
