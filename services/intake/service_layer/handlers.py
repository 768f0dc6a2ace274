"""Intake's commands (from the gateway) and event handlers (from the bus).

Each function is one transaction: read, apply the domain rule, write the record, stage
the resulting events in the outbox.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from contracts.envelope import Envelope
from contracts.events import ClassUpserted
from contracts.models import Actor, ApprovalView, EnvironmentRequestView, TimelineEntry
from contracts.rpc import CreateRequest, GetRequest, ListRequests
from libs.database import Pool
from libs.errors import Conflict, Forbidden, NotFound, ValidationFailed
from libs.inbox import Tx
from libs.outbox import Outbox
from services.intake.adapters import repository
from services.intake.domain.model import EnvironmentRequest, Status
from services.intake.domain.validation import validate_new_request

MAX_PAGE_SIZE = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_view(request: EnvironmentRequest) -> EnvironmentRequestView:
    spec = request.spec
    return EnvironmentRequestView(
        id=request.id,
        app=spec.app,
        team=spec.team,
        class_name=spec.class_name,
        region=spec.region,
        ttl_hours=spec.ttl_hours,
        owner=spec.owner,
        repository=spec.repository,
        revision=spec.revision,
        labels=spec.labels,
        status=str(request.status),
        generation=request.generation,
        version=request.version,
        created_at=request.created_at,
        created_by=request.created_by,
        updated_at=request.updated_at,
        expires_at=request.expires_at,
        approved_at=request.approved_at,
        approved_by=request.approved_by,
        approvals=[
            ApprovalView(
                approver=a.approver,
                decided_at=a.decided_at,
                generation=a.generation,
                attestation=a.signature,
            )
            for a in request.attestations
        ],
        queued_at=request.queued_at,
        last_reconciled_at=request.last_reconciled_at,
        last_error=request.last_error,
        namespace=request.namespace,
        gitops_path=request.gitops_path,
        git_commit_sha=request.git_commit_sha,
        git_branch=request.git_branch,
        git_promotion_mode=request.git_promotion_mode,
        git_promotion_branch=request.git_promotion_branch,
        git_promotion_url=request.git_promotion_url,
        cluster_status=request.cluster_status,
        drift_status=request.drift_status,
        drift_summary=request.drift_summary,
        quota_profile=request.quota_profile,
        policy_packs=request.policy_packs,
        estimated_monthly_cost_usd=request.estimated_monthly_cost_usd,
        policy_decision=request.policy_decision,
    )


def _body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def teams_in_scope(actor: Actor) -> list[str] | None:
    """Teams whose requests ``actor`` may see; None means all (admins, unscoped tokens)."""
    if actor.role == "admin" or actor.teams is None:
        return None
    return list(actor.teams)


def _check_visible(actor: Actor, request: EnvironmentRequest) -> None:
    scope = teams_in_scope(actor)
    if scope is not None and request.spec.team not in scope:
        # Same answer as a missing request: do not reveal other teams' request ids.
        raise NotFound(f"environment request {request.id} not found")


@dataclass
class IntakeService:
    pool: Pool
    outbox: Outbox

    async def _stage(self, tx_conn: Any, request: EnvironmentRequest) -> None:
        for data in request.outgoing:
            await self.outbox.add(tx_conn, request.id, data)
        request.outgoing.clear()

    # -- commands and queries -----------------------------------------------------------------

    async def create_request(self, command: CreateRequest) -> dict[str, Any]:
        """Validate and store a new request; replays of an ``Idempotency-Key`` return the first one."""
        actor = command.actor
        body_hash = _body_hash(command.body)
        for _ in range(2):
            async with self.pool.connection() as conn, conn.transaction():
                if command.idempotency_key:
                    existing = await repository.find_idempotency_key(
                        conn, actor.actor, command.idempotency_key
                    )
                    if existing is not None:
                        return await self._replay(conn, existing, body_hash, actor)
                spec = validate_new_request(command.body, await repository.classes(conn))
                if actor.teams is not None and spec.team not in actor.teams:
                    raise Forbidden(
                        f"team {spec.team} is not one of your teams",
                        details=[{"field": "team", "message": "not in the token's teams"}],
                    )
                request = EnvironmentRequest.submit(spec, actor.actor, utcnow())
                if command.idempotency_key and not await repository.claim_idempotency_key(
                    conn, actor.actor, command.idempotency_key, body_hash, request.id
                ):
                    continue  # a concurrent retry claimed the key first: answer with its request
                await repository.add(conn, request)
                await self._stage(conn, request)
                return {"created": True, "request": to_view(request)}
        raise Conflict("the idempotency key is being used concurrently; retry")

    async def _replay(
        self, conn: Any, existing: tuple[str, str], body_hash: str, actor: Actor
    ) -> dict[str, Any]:
        stored_hash, request_id = existing
        if stored_hash != body_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different body",
                details=[{"field": "Idempotency-Key", "message": "reused with a different body"}],
            )
        request = await repository.get(conn, request_id)
        if request is None:
            raise NotFound(f"environment request {request_id} not found")
        return {"created": False, "request": to_view(request)}

    async def get_request(self, query: GetRequest) -> EnvironmentRequestView:
        async with self.pool.connection() as conn:
            request = await repository.get(conn, query.id)
        if request is None:
            raise NotFound(f"environment request {query.id} not found")
        _check_visible(query.actor, request)
        return to_view(request)

    async def list_requests(self, query: ListRequests) -> dict[str, Any]:
        if not 1 <= query.limit <= MAX_PAGE_SIZE:
            raise ValidationFailed(
                f"limit must be between 1 and {MAX_PAGE_SIZE}",
                details=[{"field": "limit", "message": f"must be between 1 and {MAX_PAGE_SIZE}"}],
            )
        if query.status is not None and query.status not in {s.value for s in Status}:
            raise ValidationFailed(
                "unknown status", details=[{"field": "status", "message": f"unknown status {query.status!r}"}]
            )
        async with self.pool.connection() as conn:
            page, next_cursor = await repository.list_requests(
                conn,
                team=query.team,
                status=query.status,
                class_name=query.class_name,
                teams_in_scope=teams_in_scope(query.actor),
                cursor=query.cursor,
                limit=query.limit,
            )
        return {"items": [to_view(request) for request in page], "next_cursor": next_cursor}

    async def list_events(self, query: GetRequest) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            request = await repository.get(conn, query.id)
            if request is None:
                raise NotFound(f"environment request {query.id} not found")
            _check_visible(query.actor, request)
            rows = await repository.timeline(conn, query.id)
        items = [
            TimelineEntry(
                event_id=str(row["event_id"]),
                type=row["event_type"],
                source=row["source"],
                time=row["occurred_at"],
                generation=row["generation"],
                applied=row["applied"],
                status_after=row["status_after"],
                data=row["data"],
            )
            for row in rows
        ]
        return {"items": items}

    async def catalog_replicated(self) -> None:
        async with self.pool.connection() as conn:
            if await repository.count_classes(conn) == 0:
                raise LookupError("class catalog not replicated yet")

    # -- events ----------------------------------------------------------------------------------

    async def on_class_upserted(self, envelope: Envelope, data: ClassUpserted, tx: Tx) -> None:
        await repository.upsert_class(tx.conn, data.environment_class, data.revision)

    async def on_request_event(self, envelope: Envelope, data: Any, tx: Tx) -> None:
        """Project any ``request.*`` event onto the request record and its timeline."""
        request = await repository.get(tx.conn, envelope.subject, for_update=True)
        if request is None:
            # Not ours (or not yet visible): keep the fact in the timeline for the audit trail.
            await repository.append_timeline(
                tx.conn, envelope.subject, envelope, data, applied=False, status_after="unknown"
            )
            return
        changed = request.apply(data, utcnow())
        if changed:
            await repository.save(tx.conn, request)
            await self._stage(tx.conn, request)
        # Intake's own events were applied when they were emitted.
        applied = changed or envelope.source == self.outbox.source
        await repository.append_timeline(
            tx.conn, request.id, envelope, data, applied=applied, status_after=str(request.status)
        )


def decode_view(data: Any) -> EnvironmentRequestView:
    return msgspec.convert(data, EnvironmentRequestView)
