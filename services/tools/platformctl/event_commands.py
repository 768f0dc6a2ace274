"""``platformctl events tail|dlq|replay``: follow the platform's events, replay them, handle dead letters.

``events tail`` follows ``GET /v1/events`` (the timelines intake records for every request
the caller may see), so it needs only the API and a token, honours team scope, and shows
exactly what the request timelines show. It polls; each entry is printed once, in order.
Piped (or ``-o json``), every entry is one JSON line, so ``| jq`` works on a live stream.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import yaml

from services.tools.platformctl.client import CliError, UsageError
from services.tools.platformctl.context import EXIT_OK, Context
from services.tools.platformctl.jsonpath import PREFIX
from services.tools.platformctl.output import Column, emit, render, table
from services.tools.platformctl.tokens import parse_duration

EVENTS = "/v1/events"
DEAD_LETTERS = "/v1/dead-letters"
CONSUMERS = "/v1/consumers"

REPLAY_COLUMNS: list[Column] = [
    ("CONSUMER", lambda d: d.get("consumer")),
    ("TYPE", lambda d: d.get("event_type")),
    ("MESSAGES", lambda d: d.get("messages")),
    ("ACTION", lambda d: d.get("action")),
    ("WHY", lambda d: d.get("reason")),
]
REPLAY_USAGE = (
    "events replay: give --consumer SERVICE --from SEQ|TIME [--dry-run] (replay the stream to a "
    "service's consumers) or --service SERVICE --id N (redrive a dead letter)"
)

DEAD_LETTER_COLUMNS: list[Column] = [
    ("SERVICE", lambda d: d.get("service")),
    ("ID", lambda d: d.get("id")),
    ("CONSUMER", lambda d: d.get("consumer")),
    ("TYPE", lambda d: d.get("event_type")),
    ("ATTEMPTS", lambda d: d.get("attempts")),
    ("ERROR", lambda d: d.get("error")),
    ("CREATED", lambda d: d.get("created_at")),
    ("REPLAYED", lambda d: d.get("replayed_at")),
]


def _entry_line(entry: dict[str, Any], fmt: str) -> str:
    if fmt.startswith(PREFIX):
        return render(entry, fmt)
    if fmt == "json":
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
    if fmt == "yaml":
        return "---\n" + yaml.safe_dump(entry, sort_keys=False, allow_unicode=True).rstrip("\n")
    generation = entry.get("generation")
    # applied=false: a late or duplicate event that changed nothing (not a failure).
    marks = "" if entry.get("applied") else "  (no effect: late or duplicate)"
    return (
        f"{entry.get('time')}  {entry.get('request_id')}  {entry.get('type'):<30}  "
        f"{'g' + str(generation) if generation is not None else '-':>4}  → {entry.get('status_after')}{marks}"
    )


def events_tail(args: argparse.Namespace, ctx: Context) -> int:
    """Print new timeline entries as they are recorded, until Ctrl-C, ``--count`` or ``--timeout``."""
    try:
        timeout = parse_duration(args.timeout) if args.timeout else None
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    # Without --from-start only what happens from now on is shown, like `tail -f`; a single
    # request's timeline is short, so it is shown whole.
    cursor: str | None = None if (args.from_start or args.id) else "end"
    deadline = time.monotonic() + timeout if timeout is not None else None
    printed = 0
    while True:
        try:
            page = ctx.api.get(EVENTS, {"after": cursor, "request_id": args.id, "limit": 500})
        except CliError as exc:
            if not exc.transient:
                raise
            page = None  # the API is briefly away: keep the position and try again
        if page is not None:
            for entry in page.get("items") or []:
                ctx.stdout.write(_entry_line(entry, ctx.output) + "\n")
                printed += 1
                if args.count is not None and printed >= args.count:
                    ctx.stdout.flush()
                    return EXIT_OK
            ctx.stdout.flush()
            cursor = page.get("next_cursor") or cursor
            if page.get("items") and len(page["items"]) >= 500:
                continue  # more waiting: no pause
        if deadline is not None and time.monotonic() >= deadline:
            return EXIT_OK
        time.sleep(args.interval)


def events_dlq(args: argparse.Namespace, ctx: Context) -> int:
    page = ctx.api.get(
        DEAD_LETTERS,
        {
            "service": args.service,
            "include_replayed": "true" if args.all else None,
            "limit": args.limit,
        },
    )
    if ctx.output == "table":
        ctx.stdout.write(table(page.get("items") or [], DEAD_LETTER_COLUMNS) + "\n")
        ctx.stdout.flush()
    else:
        emit(ctx.stdout, page, ctx.output)
    for name in page.get("unavailable") or []:
        ctx.note(f"platformctl: the {name} service did not answer; its dead letters are not listed")
    return EXIT_OK


def events_replay(args: argparse.Namespace, ctx: Context) -> int:
    """``--consumer S --from X``: replay the stream; ``--service S --id N``: redrive a dead letter."""
    stream_form = args.consumer is not None or args.start is not None or args.dry_run
    letter_form = args.service is not None or args.id is not None
    if stream_form and letter_form:
        raise UsageError(
            "events replay: --consumer/--from/--dry-run (replay the stream) and --service/--id "
            "(redrive a dead letter) are two different replays; give one"
        )
    if stream_form:
        return _replay_stream(args, ctx)
    if args.service is None or args.id is None:
        raise UsageError(REPLAY_USAGE if not letter_form else "events replay: --service and --id go together")
    path = f"{DEAD_LETTERS}/{quote(args.service, safe='')}/{args.id}/replay"
    reply = ctx.api.request("POST", path)
    emit(ctx.stdout, reply.body, ctx.output)
    return EXIT_OK


def parse_start(text: str, now: datetime | None = None) -> dict[str, Any]:
    """``--from``: a stream sequence, an RFC 3339 time (no offset: UTC) or a duration ago."""
    value = text.strip()
    if value.isascii() and value.isdigit():
        if int(value) < 1:
            raise UsageError("--from: stream sequences start at 1")
        return {"from_sequence": int(value)}
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        pass
    else:
        return {"from_time": (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()}
    try:
        ago = parse_duration(value)
    except ValueError:
        raise UsageError(
            f"--from: {text!r} is neither a stream sequence (1, 2, ...), an RFC 3339 time "
            "(2026-01-31T12:00:00Z) nor a duration ago (30m, 2h, 1d)"
        ) from None
    return {"from_time": ((now or datetime.now(UTC)) - timedelta(seconds=ago)).isoformat()}


def _replay_stream(args: argparse.Namespace, ctx: Context) -> int:
    if args.consumer is None or args.start is None:
        raise UsageError("events replay: --consumer and --from go together (" + REPLAY_USAGE + ")")
    path = f"{CONSUMERS}/{quote(args.consumer, safe='')}/replay"
    body: dict[str, Any] = {**parse_start(args.start), "dry_run": bool(args.dry_run)}
    report = ctx.api.request("POST", path, json_body=body).body
    # One call covers a page of the range: go on where it stopped, up to the same end.
    pages = [report]
    while report.get("next_sequence") is not None:
        body = {
            "from_sequence": report["next_sequence"],
            "to_sequence": report["to_sequence"],
            "dry_run": bool(args.dry_run),
        }
        report = ctx.api.request("POST", path, json_body=body).body
        pages.append(report)
    merged = _merged(pages)
    if ctx.output == "table":
        ctx.stdout.write(table(merged["types"], REPLAY_COLUMNS) + "\n")
        verb = ("would be re-executed", "would be skipped") if args.dry_run else ("re-executed", "skipped")
        ctx.stdout.write(
            f"{merged['service']}: {merged['re_executed']} messages {verb[0]}, {merged['skipped']} {verb[1]}"
            f" (stream sequence {merged['from_sequence']} to {merged['to_sequence']})"
            + ("; dry run, nothing changed" if args.dry_run else "")
            + "\n"
        )
        ctx.stdout.flush()
    else:
        emit(ctx.stdout, merged, ctx.output)
    return EXIT_OK


def _merged(pages: list[dict[str, Any]]) -> dict[str, Any]:
    """The pages' reports as one: counts added up per consumer and event type."""
    types: dict[tuple[str, str], dict[str, Any]] = {}
    for page in pages:
        for item in page.get("types") or []:
            key = (item["consumer"], item["event_type"])
            if key in types:
                types[key]["messages"] += item["messages"]
            else:
                types[key] = dict(item)
    first = next((page["from_sequence"] for page in pages if page.get("from_sequence") is not None), None)
    return {
        **pages[-1],
        "from_sequence": first,
        "next_sequence": None,
        "re_executed": sum(page.get("re_executed", 0) for page in pages),
        "skipped": sum(page.get("skipped", 0) for page in pages),
        "types": [types[key] for key in sorted(types)],
    }
