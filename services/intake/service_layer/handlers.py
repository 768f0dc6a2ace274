"""Intake's commands (from the gateway) and event handlers (from the bus).

Each function is one transaction: read, apply the domain rule, write the record, stage
the resulting events in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from psycopg import AsyncConnection, OperationalError

from contracts.envelope import Envelope, decode_envelope
from contracts.events import EVENT_TYPE_OF, ClassUpserted, RequestSubmitted
from contracts.inputs import NAME_MAX_LENGTH, NAME_RULE, EnvironmentRequestInput
from contracts.kubernetes_names import is_dns1123_label
from contracts.models import Actor, ApprovalView, EnvironmentRequestView, TimelineEntry, ValidatedRequest
from contracts.replies import CreateOutcome, EventFeed, RequestPage, Timeline
from contracts.roles import acts_for, teams_in_scope, your_teams
from contracts.rpc import (
    CreateRequest,
    DeleteRequest,
    ExtendRequest,
    GetRequest,
    ListAllEvents,
    ListRequestEvents,
    ListRequests,
    ReconcileRequest,
)
from libs.database import Pool, safe_database_error, without_transaction
from libs.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed, echoed, public_message
from libs.inbox import Tx
from libs.outbox import Outbox
from libs.rpc import message_fields
from services.intake.adapters import metrics, repository
from services.intake.domain.model import (
    EXPIRABLE,
    OWN_EVENTS,
    PLACEHOLDER_REQUEST_ID,
    STALLED,
    EnvironmentRequest,
    Status,
    request_id_for,
)
from services.intake.domain.timeline import fitting, stored_form
from services.intake.domain.validation import catalog_problems, extended_ttl, request_spec

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 200
# Anti-entropy waits for a backlog at most this many deadlines: a consumer that stays behind
# that long (scaled to zero, wedged) is not a queue that will drain, and a request whose
# event was lost must not wait for it for ever.
MAX_POSTPONED_DEADLINES = 3
MAX_EVENTS_PAGE_SIZE = 500
# record_staged_events: how far back its first pass looks (a rolling upgrade's length, and
# then some), and how old a staged event must be before it is checked (no transaction that
# staged one before it is still open then).
STAGED_LOOKBACK_SECONDS = 30 * 60
STAGED_SETTLED_SECONDS = 60.0
OWN_EVENT_TYPES = [EVENT_TYPE_OF[model] for model in OWN_EVENTS]
# Bytes of timeline entries per reply unless bootstrap says less: a quarter of NATS's default
# max_payload (1 MB), so a page and its envelope always fit on the bus.
PAGE_BYTES = 256 * 1024
TIMELINE_CURSOR = re.compile(r"[0-9]{1,19}")
BIGINT_MAX = 2**63 - 1
_ENCODER = msgspec.json.Encoder()
# Roles that see approval attestations (to audit them against the commit trailers). The
# client's own approval signature is never stored, so nobody sees that.
ATTESTATION_READERS = frozenset({"approver", "admin"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def shows_attestations(actor: Actor | None) -> bool:
    return actor is not None and actor.role in ATTESTATION_READERS


def redact_signatures(value: Any) -> Any:
    """``value`` (timeline data) with every ``signature`` replaced by null."""
    if isinstance(value, dict):
        return {key: None if key == "signature" else redact_signatures(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_signatures(item) for item in value]
    return value


def to_view(request: EnvironmentRequest, actor: Actor | None = None) -> EnvironmentRequestView:
    """The API representation; attestation signatures only for :data:`ATTESTATION_READERS`."""
    spec = request.spec
    privileged = shows_attestations(actor)
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
        approvals=_approvals(request, privileged),
        rejected_at=request.rejected_at,
        rejected_by=request.rejected_by,
        rejection_reason=request.rejection_reason,
        git_removal_commit_sha=request.git_removal_commit_sha,
        deleted_at=request.deleted_at,
        namespace_deleted=request.namespace_deleted,
        queued_at=request.queued_at,
        last_reconciled_at=request.last_reconciled_at,
        last_error=request.last_error,
        next_attempt_at=request.next_attempt_at,
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


def _approvals(request: EnvironmentRequest, privileged: bool) -> list[ApprovalView]:
    if request.attestations:
        return [
            ApprovalView(
                approver=a.approver,
                decided_at=a.decided_at,
                generation=a.generation,
                attestation=a.signature if privileged else None,
            )
            for a in request.attestations
        ]
    # Below the quorum: the approvals recorded so far (no attestation is final yet).
    return [
        ApprovalView(
            approver=str(a["approver"]),
            decided_at=datetime.fromisoformat(str(a["decided_at"])),
            generation=int(a.get("generation") or 0),
        )
        for a in request.approvals
        if a.get("approver")
    ]


def _body_hash(body: EnvironmentRequestInput) -> str:
    """The body as the client sent it (wire names, only the fields given), so a retry with
    the same JSON object matches whatever the gateway's encoding."""
    given = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return hashlib.sha256(json.dumps(given, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_visible(actor: Actor, request: EnvironmentRequest) -> None:
    if not acts_for(actor, request.spec.team):
        # SPEC: wrong team is 403 (as the original answered). Request ids are 64 random
        # bits, so confirming that one exists tells a caller nothing they could guess.
        # The request's team is not named: what another team asks for is theirs to know.
        message = (
            f"environment request {request.id} belongs to a team you do not act for ({your_teams(actor)})"
        )
        raise Forbidden(message, details=[{"field": "team", "message": message}])


def _check_team(actor: Actor, team: str) -> None:
    if not acts_for(actor, team):
        message = f"{your_teams(actor)}; this request is for team {team}"
        raise Forbidden(message, details=[{"field": "team", "message": message}])


def _check_version(request: EnvironmentRequest, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != request.version:
        raise Conflict(
            f"request {request.id} is at version {request.version}, not {expected_version}; "
            "read it again and retry",
            details=[{"field": "If-Match", "message": f"current version is {request.version}"}],
        )


@dataclass
class IntakeService:
    pool: Pool
    outbox: Outbox
    # Bytes of timeline entries one reply carries at most (a page is cut there, and its
    # next_cursor continues after it): bootstrap keeps it well below the bus's max_payload.
    page_bytes: int = PAGE_BYTES
    # Read from the database on first use (IntakeService._id_key).
    _request_id_key: bytes | None = field(default=None, init=False, repr=False)
    # How far record_staged_events has checked the outbox (None: not yet, since the start).
    _staged_checked: int | None = field(default=None, init=False, repr=False)

    async def _stage(self, tx_conn: Any, request: EnvironmentRequest) -> None:
        """Stage the request's new events, each with its timeline entry: intake's consumer
        does not take its own events back (see :meth:`record_staged_events`)."""
        for data in request.outgoing:
            envelope = await self.outbox.add(tx_conn, request.id, data)
            await repository.append_timeline(
                tx_conn, request.id, envelope, data, applied=True, status_after=str(request.status)
            )
        request.outgoing.clear()

    # -- commands and queries -----------------------------------------------------------------

    async def create_request(self, command: CreateRequest) -> CreateOutcome:
        """Validate and store a new request; replays of an ``Idempotency-Key`` return the first one."""
        if command.dry_run:
            # A gateway released before validate_request asks for its dry run this way and
            # reads a ValidatedRequest back: answer it so, never with a stored request.
            return cast(CreateOutcome, await self.validate_request(command))
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
                spec = request_spec(command.body, await repository.classes(conn))
                _check_team(actor, spec.team)
                request_id = request_id_for(actor.actor, command.idempotency_key, await self._id_key(conn))
                if command.idempotency_key and await repository.get(conn, request_id) is not None:
                    # Only if the key's record is gone while its request stayed.
                    raise Conflict(
                        f"a request with this Idempotency-Key ({request_id}) exists already; use a new key",
                        details=[{"field": "Idempotency-Key", "message": "already used"}],
                    )
                request = EnvironmentRequest.submit(spec, actor.actor, utcnow(), request_id=request_id)
                # The creator's stable subject rides along for the approval service: the actor
                # (email claim, else the subject) can differ between two tokens of one person,
                # so separation of duties compares subjects as well.
                request.outgoing = [
                    msgspec.structs.replace(event, created_by_subject=actor.subject)
                    if isinstance(event, RequestSubmitted)
                    else event
                    for event in request.outgoing
                ]
                if command.idempotency_key and not await repository.claim_idempotency_key(
                    conn, actor.actor, command.idempotency_key, body_hash, request.id
                ):
                    continue  # a concurrent retry claimed the key first: answer with its request
                await repository.add(conn, request)
                await self._stage(conn, request)
                return CreateOutcome(created=True, request=to_view(request, actor))
        raise Conflict("the idempotency key is being used concurrently; retry")

    async def catalog_problems_of(self, message: bytes) -> list[FieldError]:
        """For a create whose body failed its model: what the catalog refuses of the rest."""
        body = message_fields(message).get("body")
        if not isinstance(body, dict):
            return []
        async with without_transaction(self.pool) as conn:
            classes = await repository.classes(conn)
        return catalog_problems(body.get("class"), body.get("region"), body.get("ttl_hours"), classes)

    async def validate_request(self, command: CreateRequest) -> ValidatedRequest:
        """A dry run: the request as a create would store it, with its id; nothing is written.

        The id is the one a create with the same Idempotency-Key gets, or a placeholder
        without a key. A key already used with another body is the same 409 a create gets.
        """
        actor = command.actor
        async with self.pool.connection() as conn:
            if command.idempotency_key:
                existing = await repository.find_idempotency_key(conn, actor.actor, command.idempotency_key)
                if existing is not None and existing[0] != _body_hash(command.body):
                    raise Conflict(
                        "Idempotency-Key was already used with a different body",
                        details=[
                            {"field": "Idempotency-Key", "message": "was already used with a different body"}
                        ],
                    )
            spec = request_spec(command.body, await repository.classes(conn))
            id_key = await self._id_key(conn)
        _check_team(actor, spec.team)
        keyed = bool(command.idempotency_key)
        request_id = (
            request_id_for(actor.actor, command.idempotency_key, id_key) if keyed else PLACEHOLDER_REQUEST_ID
        )
        return ValidatedRequest(
            request_id=request_id, placeholder_id=not keyed, spec=spec, created_by=actor.actor
        )

    async def _replay(
        self, conn: Any, existing: tuple[str, str], body_hash: str, actor: Actor
    ) -> CreateOutcome:
        stored_hash, request_id = existing
        if stored_hash != body_hash:
            raise Conflict(
                "Idempotency-Key was already used with a different body",
                details=[{"field": "Idempotency-Key", "message": "was already used with a different body"}],
            )
        request = await repository.get(conn, request_id)
        if request is None:
            raise NotFound(f"environment request {request_id} not found")
        # The same check as a read: a token whose teams no longer include the request's team
        # (moved to another team, a narrower token) must not read it back through its key.
        _check_visible(actor, request)
        return CreateOutcome(created=False, request=to_view(request, actor))

    async def _id_key(self, conn: Any) -> bytes:
        """The request id key, read once: it never changes after migration 0011 wrote it."""
        if self._request_id_key is None:
            self._request_id_key = await repository.request_id_key(conn)
        return self._request_id_key

    async def get_request(self, query: GetRequest) -> EnvironmentRequestView:
        async with without_transaction(self.pool) as conn:
            request = await repository.get(conn, query.id)
        if request is None:
            raise NotFound(f"environment request {query.id} not found")
        _check_visible(query.actor, request)
        return to_view(request, query.actor)

    async def list_requests(self, query: ListRequests) -> RequestPage:
        if not 1 <= query.limit <= MAX_PAGE_SIZE:
            raise ValidationFailed(
                "invalid request parameters: limit",
                details=[{"field": "limit", "message": f"must be between 1 and {MAX_PAGE_SIZE}"}],
            )
        if query.status is not None and query.status not in {s.value for s in Status}:
            known = ", ".join(s.value for s in Status)
            raise ValidationFailed(
                "invalid request parameters: status",
                details=[
                    {"field": "status", "message": f"unknown status {echoed(query.status)} (known: {known})"}
                ],
            )
        if query.team is not None and not is_dns1123_label(query.team, NAME_MAX_LENGTH):
            raise ValidationFailed(
                "invalid request parameters: team",
                details=[{"field": "team", "message": NAME_RULE}],
            )
        if query.team is not None and not acts_for(query.actor, query.team):
            message = f"{your_teams(query.actor)}; you asked for the requests of team {query.team}"
            raise Forbidden(message, details=[{"field": "team", "message": message}])
        async with without_transaction(self.pool) as conn:
            page, next_cursor = await repository.list_requests(
                conn,
                team=query.team,
                status=query.status,
                class_name=query.class_name,
                teams_in_scope=teams_in_scope(query.actor),
                cursor=query.cursor,
                limit=query.limit,
            )
        return RequestPage(items=[to_view(request, query.actor) for request in page], next_cursor=next_cursor)

    async def list_events(self, query: ListRequestEvents) -> Timeline:
        """One page of the request's timeline, oldest first: at most ``limit`` entries and at
        most :attr:`page_bytes` of them; ``next_cursor`` continues after the page (null on the
        last one)."""
        _check_limit(query.limit)
        after = _timeline_position(query.after)
        async with without_transaction(self.pool) as conn:
            request = await repository.get(conn, query.id)
            if request is None:
                raise NotFound(f"environment request {query.id} not found")
            _check_visible(query.actor, request)
            rows = await repository.timeline(conn, query.id, after=after, limit=query.limit + 1)
        entries = self._page([_timeline_entry(row, query.actor) for row in rows[: query.limit]])
        more = len(entries) < len(rows)
        return Timeline(items=entries, next_cursor=str(rows[len(entries) - 1]["seq"]) if more else None)

    def _page(self, entries: list[TimelineEntry]) -> list[TimelineEntry]:
        """The leading ``entries`` that fit in :attr:`page_bytes` (at least one)."""
        return entries[: fitting((len(_ENCODER.encode(entry)) for entry in entries), self.page_bytes)]

    async def list_all_events(self, query: ListAllEvents) -> EventFeed:
        """Timeline entries of every request the actor may see, oldest first, after a cursor.

        ``next_cursor`` is always set (the position after the last entry, or the given one
        on an empty page), so a follower polls with it and sees each entry once; ``after=end``
        answers only the current end, for followers that start from now.
        """
        _check_limit(query.limit)
        if query.after == "end":
            # Where a follower starts when it wants only what happens from now on.
            async with without_transaction(self.pool) as conn:
                return EventFeed(items=[], next_cursor=(await repository.feed_end(conn)).encode())
        after = repository.FeedPosition.decode(query.after) if query.after else repository.FeedPosition(0, 0)
        async with without_transaction(self.pool) as conn:
            rows = await repository.all_timelines(
                conn,
                teams_in_scope=teams_in_scope(query.actor),
                after=after,
                request_id=query.request_id,
                limit=query.limit,
            )
        # A page is cut at page_bytes as well as at limit: the cursor then points after the
        # last entry sent, so a follower gets the rest on its next call.
        entries = self._page([_timeline_entry(row, query.actor) for row in rows])
        last = (
            repository.FeedPosition(rows[len(entries) - 1]["txid"], rows[len(entries) - 1]["seq"])
            if entries
            else after
        )
        return EventFeed(items=entries, next_cursor=last.encode())

    # -- lifecycle commands ---------------------------------------------------------------------
    # Each locks the record (SELECT ... FOR UPDATE), so concurrent commands and the event
    # projection on the same request run one after the other: the second sees the first's
    # result and answers 409 if its transition is no longer legal. save() checks the version
    # as well, so a writer that did not lock could still not overwrite a newer record.

    async def _load_for_change(
        self, conn: AsyncConnection[Any], request_id: str, actor: Actor, expected_version: int | None
    ) -> EnvironmentRequest:
        request = await repository.get(conn, request_id, for_update=True)
        if request is None:
            raise NotFound(f"environment request {request_id} not found")
        _check_visible(actor, request)
        _check_version(request, expected_version)
        return request

    async def _commit_change(self, conn: AsyncConnection[Any], request: EnvironmentRequest) -> None:
        await repository.save(conn, request)
        await self._stage(conn, request)

    async def reconcile(self, command: ReconcileRequest) -> EnvironmentRequestView:
        """Queue a new generation (202 at the API); 409 unless approved, ready or failed."""
        async with self.pool.connection() as conn, conn.transaction():
            request = await self._load_for_change(conn, command.id, command.actor, command.expected_version)
            request.reconcile(actor=command.actor.actor, role=command.actor.role, now=utcnow())
            await self._commit_change(conn, request)
        return to_view(request, command.actor)

    async def extend(self, command: ExtendRequest) -> EnvironmentRequestView:
        """Change ``ttl_hours`` within the class maximum (and move ``expires_at``)."""
        async with self.pool.connection() as conn, conn.transaction():
            request = await self._load_for_change(conn, command.id, command.actor, command.expected_version)
            classes = await repository.classes(conn)
            ttl_hours = extended_ttl(command.body, classes.get(request.spec.class_name))
            request.extend(ttl_hours=ttl_hours, actor=command.actor.actor, now=utcnow())
            await self._commit_change(conn, request)
        return to_view(request, command.actor)

    async def delete(self, command: DeleteRequest) -> EnvironmentRequestView:
        """Move to ``deleting`` and ask for the teardown (202 at the API)."""
        async with self.pool.connection() as conn, conn.transaction():
            request = await self._load_for_change(conn, command.id, command.actor, command.expected_version)
            request.delete(actor=command.actor.actor, now=utcnow())
            await self._commit_change(conn, request)
        return to_view(request, command.actor)

    # -- intake's own events in the timeline -----------------------------------------------------

    async def record_staged_events(self, batch: int = 500) -> int:
        """Timeline entries for intake's own events staged without one; returns how many.

        This release records each event it stages in the same transaction (:meth:`_stage`),
        and its consumer no longer takes intake's own events back from the stream. A release
        before it recorded them only when its consumer did: during a rolling upgrade, events
        that older replicas stage (or staged shortly before) would never be recorded. This
        pass finds them in the outbox, in order: from :data:`STAGED_LOOKBACK_SECONDS` before
        the process's first pass, then whatever is staged after, each once it has settled
        (the first row that has not ends the pass, so no row staged before it is passed by
        while its transaction is still open). An entry recorded this way comes late: after
        the events that followed it, with the status of the moment it was recorded.
        """
        recorded = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                if self._staged_checked is None:
                    self._staged_checked = await repository.outbox_position_before(
                        conn, STAGED_LOOKBACK_SECONDS
                    )
                checked = self._staged_checked
                rows = await repository.staged_after(
                    conn, checked, OWN_EVENT_TYPES, STAGED_SETTLED_SECONDS, batch
                )
                settled = list(itertools.takewhile(lambda row: row["settled"], rows))
                for row in settled:
                    if not row["recorded"]:
                        recorded += await self._record_staged(conn, row["payload"])
                    checked = int(row["seq"])
            self._staged_checked = checked
            if len(settled) < batch:
                return recorded

    async def _record_staged_or_log(self) -> None:
        # Apart from the other sweeps: a failure here must not hold up anti-entropy.
        try:
            recorded = await self.record_staged_events()
        except Exception as exc:
            log.warning(
                "recording staged events failed", extra={"fields": {"error": safe_database_error(exc)}}
            )
            return
        if recorded:
            log.info("recorded events an earlier release staged", extra={"fields": {"count": recorded}})

    async def _record_staged(self, conn: AsyncConnection[Any], payload: bytes) -> int:
        """1 if the staged event was not in the timeline and is now; 0 if it was (a redrive's
        copy of a recorded event) or cannot be recorded (logged, and passed by)."""
        try:
            # A savepoint: a row that cannot be recorded leaves the rest of the pass alone.
            async with conn.transaction():
                envelope = decode_envelope(payload)
                data = envelope.decode_data()
                request = await repository.get(conn, envelope.subject)
                status_after = str(request.status) if request is not None else "unknown"
                new = await repository.append_timeline(
                    conn,
                    envelope.subject,
                    envelope,
                    data,
                    applied=request is not None,
                    status_after=status_after,
                )
        except OperationalError:
            raise  # the database went away: the pass fails and the next one tries again
        except Exception as exc:
            log.warning(
                "staged event cannot be recorded in the timeline; passed by",
                extra={"fields": {"error_type": type(exc).__name__, "error": public_message(exc)}},
            )
            return 0
        return 1 if new else 0

    # -- expiry (DESIGN.md section 5) -----------------------------------------------------------

    async def expire_due(self, batch: int = 100) -> int:
        """One sweep: tear down every environment past ``expires_at``; returns how many."""
        expired = 0
        while True:
            now = utcnow()
            async with self.pool.connection() as conn, conn.transaction():
                due = await repository.due_for_expiry(conn, now, [str(s) for s in EXPIRABLE], batch)
                for request in due:
                    if request.expire(now):
                        await self._commit_change(conn, request)
                        expired += 1
            if len(due) < batch:
                return expired

    async def retry_stalled(self, deadline_seconds: float, batch: int = 100) -> int:
        """One anti-entropy pass: re-request work unchanged for ``deadline_seconds``; returns how many."""
        retried = 0
        while True:
            now = utcnow()
            before = now - timedelta(seconds=deadline_seconds)
            async with self.pool.connection() as conn, conn.transaction():
                due = await repository.stalled(conn, [str(s) for s in STALLED], before, batch)
                for request in due:
                    log.warning(
                        "request stalled; asking again as a new generation",
                        extra={"fields": {"request_id": request.id, "status": str(request.status)}},
                    )
                    request.retry_stalled(now)
                    await self._commit_change(conn, request)
                    retried += 1
            if len(due) < batch:
                return retried

    async def run_sweepers(
        self,
        stopping: asyncio.Event,
        *,
        interval: float,
        batch: int,
        deadline_seconds: float,
        backlog: Callable[[float], Awaitable[list[str]]] | None = None,
    ) -> None:
        """Expiry and anti-entropy every ``interval`` seconds until ``stopping``.

        A failed pass is retried on the next one; ``deadline_seconds`` <= 0 disables the
        anti-entropy pass. ``backlog(deadline_seconds)`` names the consumers still behind
        events older than the deadline: while there are any, requests are queued, not stuck,
        and asking for them again would only double the backlog, so the pass waits, but for
        no longer than :data:`MAX_POSTPONED_DEADLINES` deadlines at a time.
        """
        loop = asyncio.get_running_loop()
        postponed_since: float | None = None
        while not stopping.is_set():
            try:
                count = await self.expire_due(batch)
                if count:
                    log.info("expired environments", extra={"fields": {"count": count}})
                await self._record_staged_or_log()
                behind = await backlog(deadline_seconds) if backlog and deadline_seconds > 0 else []
                if not behind:
                    postponed_since = None
                elif postponed_since is None:
                    postponed_since = loop.time()
                postponed = loop.time() - postponed_since if postponed_since is not None else 0.0
                if behind and postponed < MAX_POSTPONED_DEADLINES * deadline_seconds:
                    log.info(
                        "anti-entropy postponed: consumers behind", extra={"fields": {"consumers": behind}}
                    )
                elif deadline_seconds > 0:
                    if behind:
                        log.warning(
                            "anti-entropy postponed too long; running it anyway",
                            extra={"fields": {"consumers": behind, "postponed_s": round(postponed)}},
                        )
                        postponed_since = loop.time()  # the next forced pass after as long again
                    await self.retry_stalled(deadline_seconds, batch)
            except Exception as exc:
                log.warning("sweep failed", extra={"fields": {"error": safe_database_error(exc)}})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)

    async def catalog_replicated(self) -> None:
        async with without_transaction(self.pool) as conn:
            if await repository.count_classes(conn) == 0:
                raise LookupError("class catalog not replicated yet")

    # -- events ----------------------------------------------------------------------------------

    async def on_class_upserted(self, envelope: Envelope, data: ClassUpserted, tx: Tx) -> None:
        await repository.upsert_class(tx.conn, data.environment_class, data.revision)

    async def lock_requests(self, envelopes: list[Envelope], tx: Tx) -> None:
        """A batch's requests, locked with one statement for its projections to share: a
        record one event changed is what the next event of that request in the batch sees."""
        for request in await repository.lock_many(tx.conn, list({e.subject for e in envelopes})):
            tx.loaded[request.id] = request

    async def on_request_event(self, envelope: Envelope, data: Any, tx: Tx) -> None:
        """Project any ``request.*`` event onto the request record and its timeline."""
        request = tx.loaded.get(envelope.subject) or await repository.get(
            tx.conn, envelope.subject, for_update=True
        )
        if request is None:
            # Not ours (or not yet visible): keep the fact in the timeline for the audit trail.
            await repository.append_timeline(
                tx.conn, envelope.subject, envelope, data, applied=False, status_after="unknown"
            )
            return
        before = request.status
        was_ready_before = request.last_reconciled_at is not None
        changed = request.apply(data, utcnow())
        # What this event led to: an approval shows "approved" even when the class's automatic
        # reconcile queued the request in the same step (request.reconcile_requested follows).
        if not changed:
            await repository.append_timeline(
                tx.conn, request.id, envelope, data, applied=False, status_after=str(request.status)
            )
            return
        status_after = request.reached if request.reached is not None else request.status
        metrics.observe_progress(request, envelope, before, was_ready_before=was_ready_before)
        # The record and its timeline entry in one statement.
        await repository.save(
            tx.conn, request, timeline=repository.TimelineRow(envelope, data, True, str(status_after))
        )
        await self._stage(tx.conn, request)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_EVENTS_PAGE_SIZE:
        raise ValidationFailed(
            f"limit must be between 1 and {MAX_EVENTS_PAGE_SIZE}",
            details=[{"field": "limit", "message": f"must be between 1 and {MAX_EVENTS_PAGE_SIZE}"}],
        )


def _timeline_position(after: str | None) -> int:
    """The sequence number a timeline page continues after (``next_cursor`` of the last page)."""
    if after is None:
        return 0
    # ASCII digits only (str.isdigit() takes "²", which int() refuses), within a bigint.
    if not (TIMELINE_CURSOR.fullmatch(after) and int(after) <= BIGINT_MAX):
        raise ValidationFailed(
            "invalid request parameters: after",
            details=[{"field": "after", "message": "must be the next_cursor of an earlier page"}],
        )
    return int(after)


def _timeline_entry(row: dict[str, Any], actor: Actor) -> TimelineEntry:
    # Rows written before the timeline kept bundles by reference still hold them whole: they
    # are answered in today's form (stored_form is idempotent on newer rows).
    stored = stored_form(row["data"]) if isinstance(row["data"], dict) else row["data"]
    data = stored if shows_attestations(actor) else redact_signatures(stored)
    return TimelineEntry(
        event_id=str(row["event_id"]),
        type=row["event_type"],
        source=row["source"],
        time=row["occurred_at"],
        generation=row["generation"],
        applied=row["applied"],
        status_after=row["status_after"],
        data=data,
        request_id=row.get("request_id"),
    )


def decode_view(data: Any) -> EnvironmentRequestView:
    return msgspec.convert(data, EnvironmentRequestView)
