"""Waiting for a request to reach a status: ``request wait`` and every command's ``--wait``.

Progress goes to stderr as one line per status change, on a terminal and in a CI log alike
(a CI job's log is where someone looks when a pipeline hangs), with the time since the wait
began and what the request has become (its namespace, its commit). The final request goes
to stdout, so ``--wait | jq -r .status`` works. When the request cannot get further by
itself, the last lines say why and which command to run next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from services.tools.platformctl.client import CliError, UsageError
from services.tools.platformctl.context import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, Context
from services.tools.platformctl.output import emit
from services.tools.platformctl.tokens import parse_duration

REQUESTS = "/v1/environment-requests"
DEFAULT_TIMEOUT = "300"

# A wait for READY ends successfully there and unsuccessfully on any of FAILED_STATUSES:
# from those the request cannot reach ready without someone acting.
READY = "ready"
FAILED_STATUSES = frozenset({"failed", "rejected", "expiring", "deleting", "deleted"})

# `wait --for approved` is met by any status an approved request moves on to.
APPROVED_OR_LATER = frozenset({"approved", "queued", "reconciling", "awaiting_promotion", "ready"})


def request_path(request_id: str) -> str:
    # Quoted so an id can never turn into another route ("../environment-classes").
    return f"{REQUESTS}/{quote(request_id, safe='')}"


def wait_outcome(status: str, target: str) -> int | None:
    """EXIT_OK when ``status`` is the awaited one, EXIT_FAILED when it can no longer get there
    by itself, None while waiting makes sense. Waiting for ``deleted`` passes through the
    teardown statuses, which are progress then, not failure."""
    if status == target or (target == "approved" and status in APPROVED_OR_LATER):
        return EXIT_OK
    hopeless = FAILED_STATUSES - {target}
    if target == "deleted":
        hopeless -= {"expiring", "deleting"}
    return EXIT_FAILED if status in hopeless else None


def timeout_seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None


@dataclass
class Progress:
    """What has been said about the request so far, so each change is said once."""

    ctx: Context
    started: float = field(default_factory=time.monotonic)
    status: str | None = None
    shown: dict[str, str] = field(default_factory=dict)
    last_retry: str | None = None

    def line(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.ctx.note(f"{datetime.now().strftime('%H:%M:%S')}  +{elapsed:.1f}s  {text}")

    def observe(self, request: dict[str, Any]) -> None:
        status = str(request.get("status"))
        facts = known_facts(request)
        new_facts = {key: value for key, value in facts.items() if self.shown.get(key) != value}
        if status == self.status and not new_facts:
            return
        change = f"{self.status} → {status}" if self.status and status != self.status else status
        self.line("  ".join([change, *(f"{key} {value}" for key, value in new_facts.items())]))
        if status != self.status:
            hint = waiting_hint(request)
            if hint:
                self.line(f"  {hint}")
        self.status = status
        self.shown.update(facts)
        self.last_retry = None

    def retrying(self, message: str) -> None:
        if message != self.last_retry:
            self.line(f"(retrying: {message})")
        self.last_retry = message


def known_facts(request: dict[str, Any]) -> dict[str, str]:
    """The namespace and the commit, once the request has them."""
    facts = {}
    if request.get("namespace"):
        facts["namespace"] = str(request["namespace"])
    if request.get("git_commit_sha"):
        facts["commit"] = str(request["git_commit_sha"])[:12]
    return facts


def waiting_hint(request: dict[str, Any]) -> str | None:
    """What a request that waits for a person waits for, and who can move it on."""
    status = request.get("status")
    request_id = request.get("id")
    decision = request.get("policy_decision") or {}
    if status == "pending_approval":
        return (
            f"waits for approval by an approver or admin{approvals_still_needed(request)}: "
            f"platformctl request approve --id {request_id}"
        )
    if status == "approved" and decision.get("auto_reconcile") is False:
        return (
            "approved; it is deployed once an approver or admin reconciles it: "
            f"platformctl request reconcile --id {request_id}"
        )
    if status == "awaiting_promotion" and request.get("git_promotion_url"):
        return f"waits for the promotion to be merged: {request['git_promotion_url']}"
    return None


def approvals_still_needed(request: dict[str, Any]) -> str:
    required = (request.get("policy_decision") or {}).get("approvals_required")
    if not isinstance(required, int) or required <= 0:
        return ""
    remaining = max(required - len(request.get("approvals") or []), 0)
    return f" ({remaining} of {required} approval{'s' if required != 1 else ''} still needed)"


def next_command(request: dict[str, Any]) -> str:
    """The command that helps most once the request can go no further by itself."""
    request_id = request.get("id")
    status = request.get("status")
    if status == "failed":
        return (
            f"see what happened: platformctl request events --id {request_id} -o table; "
            f"once fixed: platformctl request reconcile --id {request_id}"
        )
    if status == "rejected":
        return f"ask again with a changed request: platformctl request create ... (see platformctl request get --id {request_id})"
    return f"see its timeline: platformctl request events --id {request_id} -o table"


def failure_reason(request: dict[str, Any]) -> str:
    return str(request.get("rejection_reason") or request.get("last_error") or "no error recorded")


def wait_for(ctx: Context, request_id: str, target: str, timeout_text: str, interval: float) -> int:
    """Poll until the request reaches ``target`` (0), can no longer get there (1) or
    ``timeout_text`` passes (124); prints the final request on stdout."""
    deadline = time.monotonic() + timeout_seconds(timeout_text)
    progress = Progress(ctx)
    current: dict[str, Any] | None = None
    while True:
        try:
            current = ctx.api.get(request_path(request_id))
        except CliError as exc:
            # A gateway restart or a service blip must not fail a script that waits minutes;
            # anything else (401, 403, 404) will not get better by waiting.
            if not exc.transient or time.monotonic() >= deadline:
                raise
            progress.retrying(exc.message)
            time.sleep(interval)
            continue
        progress.observe(current)
        outcome = wait_outcome(str(current.get("status")), target)
        if outcome is not None:
            emit(ctx.stdout, current, ctx.output)
            if outcome == EXIT_FAILED:
                ctx.note(
                    f"platformctl: request {request_id} is {current.get('status')}: {failure_reason(current)}"
                )
                ctx.note(f"platformctl: next: {next_command(current)}")
            return outcome
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    emit(ctx.stdout, current, ctx.output)
    ctx.note(
        f"platformctl: timed out after {timeout_text} waiting for {request_id} to be {target} "
        f"(status {progress.status}); to keep waiting: platformctl request wait --id {request_id}"
        + (f" --for {target}" if target != READY else "")
    )
    return EXIT_TIMEOUT
