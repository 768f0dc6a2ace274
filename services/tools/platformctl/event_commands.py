"""``platformctl events tail|dlq|replay``: follow the platform's events and handle dead letters.

``events tail`` follows ``GET /v1/events`` (the timelines intake records for every request
the caller may see), so it needs only the API and a token, honours team scope, and shows
exactly what the request timelines show. It polls; each entry is printed once, in order.
Piped (or ``-o json``), every entry is one JSON line, so ``| jq`` works on a live stream.
"""

from __future__ import annotations

import argparse
import json
import time
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
    path = f"{DEAD_LETTERS}/{quote(args.service, safe='')}/{args.id}/replay"
    reply = ctx.api.request("POST", path)
    emit(ctx.stdout, reply.body, ctx.output)
    return EXIT_OK
