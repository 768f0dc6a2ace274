"""Postgres persistence of approval requests and decisions (caller owns the transaction)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from contracts.events import Attestation
from services.approval.domain.decisions import ApprovalRecord, ApprovalStatus

Conn = AsyncConnection[Any]


async def open_request(
    conn: Conn,
    *,
    request_id: str,
    class_name: str,
    created_by: str,
    created_by_subject: str | None,
    requires_approval: bool,
    approvals_required: int,
    status: str,
) -> bool:
    cursor = await conn.execute(
        "INSERT INTO approval_requests (request_id, class, created_by, created_by_subject, requires_approval,"
        " approvals_required, status, decided_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s = 'pending' THEN NULL ELSE now() END)"
        " ON CONFLICT (request_id) DO NOTHING",
        [
            request_id,
            class_name,
            created_by,
            created_by_subject,
            requires_approval,
            approvals_required,
            status,
            status,
        ],
    )
    return cursor.rowcount == 1


async def exists(conn: Conn, request_id: str) -> bool:
    cursor = await conn.execute("SELECT 1 FROM approval_requests WHERE request_id = %s", [request_id])
    return await cursor.fetchone() is not None


async def get_for_update(conn: Conn, request_id: str) -> ApprovalRecord | None:
    """The record with its approvers, locked: concurrent approvals of one request queue up, so
    two approvers completing a quorum of two cannot both miss (or both announce) it."""
    cursor = await conn.execute(
        "SELECT request_id, class, created_by, created_by_subject, approvals_required, status"
        " FROM approval_requests WHERE request_id = %s FOR UPDATE",
        [request_id],
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    cursor = await conn.execute(
        "SELECT approver, approver_subject FROM approvals WHERE request_id = %s AND decision = 'approved'"
        " ORDER BY decided_at",
        [request_id],
    )
    approvals = await cursor.fetchall()
    return ApprovalRecord(
        request_id=row["request_id"],
        class_name=row["class"],
        created_by=row["created_by"],
        created_by_subject=row["created_by_subject"],
        approvals_required=row["approvals_required"],
        status=ApprovalStatus(row["status"]),
        approvers=[r["approver"] for r in approvals],
        approver_subjects=[r["approver_subject"] for r in approvals],
    )


async def add_approval(conn: Conn, attestation: Attestation, approver_subject: str | None) -> None:
    await conn.execute(
        "INSERT INTO approvals (request_id, approver, approver_subject, decision, generation, decided_at,"
        " attestation) VALUES (%s, %s, %s, 'approved', %s, %s, %s)",
        [
            attestation.request_id,
            attestation.approver,
            approver_subject,
            attestation.generation,
            attestation.decided_at,
            attestation.signature,
        ],
    )


async def attestations(conn: Conn, request_id: str, class_name: str) -> list[Attestation]:
    cursor = await conn.execute(
        "SELECT approver, generation, decided_at, attestation FROM approvals"
        " WHERE request_id = %s AND decision = 'approved' ORDER BY decided_at, approver",
        [request_id],
    )
    return [
        Attestation(
            request_id=request_id,
            generation=row["generation"],
            approver=row["approver"],
            class_name=class_name,
            decided_at=row["decided_at"],
            signature=row["attestation"],
        )
        for row in await cursor.fetchall()
    ]


async def set_approved(conn: Conn, request_id: str) -> None:
    await conn.execute(
        "UPDATE approval_requests SET status = 'approved', decided_at = now() WHERE request_id = %s",
        [request_id],
    )


async def set_rejected(conn: Conn, request_id: str, rejected_by: str, reason: str) -> None:
    await conn.execute(
        "UPDATE approval_requests SET status = 'rejected', decided_at = now(), rejected_by = %s,"
        " reject_reason = %s WHERE request_id = %s",
        [rejected_by, reason, request_id],
    )
