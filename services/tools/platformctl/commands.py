"""What each platformctl command does. Each takes the parsed arguments and a
:class:`~services.tools.platformctl.context.Context` and returns the exit code; failures raise
:class:`CliError` (printed as one line by main)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from contracts.attestation import sign_approval
from services.tools.platformctl import catalog_commands
from services.tools.platformctl.catalog_commands import CLASSES
from services.tools.platformctl.client import ApiClient, CliError, UsageError, redact
from services.tools.platformctl.context import EXIT_OK, Context
from services.tools.platformctl.exit_codes import EXIT_AUTH
from services.tools.platformctl.files import load_object
from services.tools.platformctl.oidc import AUTH_CONFIG, expiry_of
from services.tools.platformctl.output import CLASS_COLUMNS, EVENT_COLUMNS, REQUEST_COLUMNS, emit
from services.tools.platformctl.tokens import mint, parse_duration, split_teams
from services.tools.platformctl.waiting import READY, REQUESTS, request_path, wait_for

# Short: minting is local, and a blackholed API must not make it hang.
STRICT_CHECK_SECONDS = 3.0

# The request body's fields and the flags that set them (`request create`); the flags win
# over a file's fields, which win over the context's default team.
CREATE_FLAGS = (
    ("app", "--app"),
    ("team", "--team"),
    ("class", "--class"),
    ("region", "--region"),
    ("ttl_hours", "--ttl"),
    ("owner", "--owner"),
    ("repository", "--repo"),
)


# -- token ---------------------------------------------------------------------------------------


def token_mint(args: argparse.Namespace, ctx: Context) -> int:
    secret = args.secret or ctx.secret
    if not secret:
        raise UsageError("no secret: pass --secret or set PLATFORM_JWT_HS256_SECRET")
    subject = args.subject or args.actor
    if not subject:
        raise UsageError("pass --subject or --actor (the token must name someone)")
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from None
    refuse_in_strict_production(ctx)
    token = mint(
        secret=secret,
        subject=subject,
        actor=args.actor,
        role=args.role,
        ttl_seconds=ttl,
        teams=split_teams(args.team),
        issuer=args.issuer,
        audience=args.audience,
        algorithm=args.algorithm,
    )
    # Only the token, so `export PLATFORM_TOKEN=$(platformctl token mint ...)` works.
    ctx.stdout.write(token + "\n")
    return EXIT_OK


def refuse_in_strict_production(ctx: Context) -> None:
    """A gateway in strict production mode takes its identity provider's tokens only: minting
    for it is a mistake worth stopping early. Minting needs no API, so one that cannot be
    asked (offline, an older gateway) does not stop it."""
    try:
        published = ApiClient(ctx.api.base_url, None, timeout=STRICT_CHECK_SECONDS).get_public(AUTH_CONFIG)
    except CliError:
        return
    if isinstance(published, dict) and published.get("strict_production") is True:
        raise CliError(
            f"the API at {redact(ctx.api.base_url)} runs in strict production mode and refuses "
            "development tokens; sign in with 'platformctl login' instead",
            exit_code=EXIT_AUTH,
        )


# -- identity and classes ------------------------------------------------------------------------


def whoami(_: argparse.Namespace, ctx: Context) -> int:
    """The caller as the API resolved it, and when the token expires."""
    identity = ctx.api.get("/v1/whoami")
    expires_at = expiry_of(ctx.api.bearer())
    if isinstance(identity, dict) and expires_at is not None:
        identity["expires_at"] = datetime.fromtimestamp(expires_at, UTC).isoformat().replace("+00:00", "Z")
    emit(ctx.stdout, identity, ctx.output)
    return EXIT_OK


def classes_list(_: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(CLASSES), ctx.output, CLASS_COLUMNS)
    return EXIT_OK


def classes_get(args: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(f"{CLASSES}/{quote(args.name, safe='')}"), ctx.output)
    return EXIT_OK


# -- requests ------------------------------------------------------------------------------------


def parse_labels(text: str | None) -> dict[str, str] | None:
    """``k=v,k2=v2`` -> dict; the server validates the keys and values themselves."""
    if text is None:
        return None
    labels: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--labels: expected key=value pairs separated by commas, got {pair!r}")
        labels[key.strip()] = value.strip()
    return labels


def parse_hours(text: str) -> int:
    """``24`` or ``24h`` -> 24."""
    value = text.strip().lower().removesuffix("h")
    if not (value.isascii() and value.isdigit()):
        raise UsageError(f"--ttl: expected whole hours (24 or 24h), got {text!r}")
    return int(value)


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request to create: ``-f``'s fields, overridden by the flags given; every field
    the API requires must come from one of them. Fields the file names that the API does
    not know are sent as they are, and refused there."""
    body: dict[str, Any] = {"team": args.context_team} if args.context_team else {}
    if args.file is not None:
        body.update(load_object(args.file))
    flags: dict[str, Any] = {
        "app": args.app,
        "team": args.team,
        "class": args.class_name,
        "region": args.region,
        "ttl_hours": parse_hours(args.ttl) if args.ttl is not None else None,
        "owner": args.owner,
        "repository": args.repo,
        "revision": args.revision,
        "labels": parse_labels(args.labels),
    }
    body.update({field: value for field, value in flags.items() if value is not None})
    missing = [flag for field, flag in CREATE_FLAGS if body.get(field) in (None, "")]
    if missing:
        where = " (or their fields in the -f file)" if args.file is not None else ""
        raise UsageError(f"the following arguments are required: {', '.join(missing)}{where}")
    return body


def request_create(args: argparse.Namespace, ctx: Context) -> int:
    body = create_body(args)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    params = {"dry_run": "true"} if args.dry_run else None
    reply = ctx.api.request("POST", REQUESTS, json_body=body, headers=headers, params=params)
    if args.dry_run:
        return catalog_commands.show_plan(reply.body, ctx)
    if reply.headers.get("Idempotent-Replayed") == "true":
        ctx.note(
            f"platformctl: replayed: {reply.body.get('id')} was created earlier with this idempotency key"
        )
    return shown_or_awaited(args, ctx, reply.body, READY)


def shown_or_awaited(args: argparse.Namespace, ctx: Context, request: dict[str, Any], target: str) -> int:
    """The request as the API answered, or with ``--wait`` the request once it is ``target``
    (or can no longer get there, or the timeout passed)."""
    if not args.wait:
        emit(ctx.stdout, request, ctx.output)
        return EXIT_OK
    return wait_for(ctx, str(request.get("id")), target, args.timeout, args.interval)


def request_list(args: argparse.Namespace, ctx: Context) -> int:
    page = ctx.api.get(
        REQUESTS,
        {
            "team": args.team,
            "status": args.status,
            "class": args.class_name,
            "limit": args.limit,
            "cursor": args.cursor,
        },
    )
    emit(ctx.stdout, page, ctx.output, REQUEST_COLUMNS)
    if ctx.output == "table" and isinstance(page, dict) and page.get("next_cursor"):
        ctx.note(f"more: --cursor {page['next_cursor']}")
    return EXIT_OK


def request_get(args: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(request_path(args.id)), ctx.output)
    return EXIT_OK


# Entries asked for per page of a timeline: the API's largest (a page may still stop earlier,
# at what one reply carries; next_cursor then continues).
TIMELINE_PAGE_LIMIT = 500


def request_events(args: argparse.Namespace, ctx: Context) -> int:
    """The whole timeline: every page, following ``next_cursor``, printed as one list."""
    path = f"{request_path(args.id)}/events"
    params: dict[str, Any] = {"limit": TIMELINE_PAGE_LIMIT}
    items: list[Any] = []
    seen: set[str] = set()
    while True:
        page = ctx.api.get(path, params=params)
        if not isinstance(page, dict):
            raise CliError("the API answered a timeline page that is not an object")
        items += page.get("items") or []
        cursor = page.get("next_cursor")
        if not isinstance(cursor, str):
            break
        if cursor in seen:  # an API that does not move on would keep us here for ever
            raise CliError(f"the API answered the same timeline page twice (cursor {cursor})")
        seen.add(cursor)
        params = {"limit": TIMELINE_PAGE_LIMIT, "after": cursor}
    emit(ctx.stdout, {"items": items}, ctx.output, EVENT_COLUMNS)
    return EXIT_OK


def request_approve(args: argparse.Namespace, ctx: Context) -> int:
    """Sign ``approve:<id>:<actor>:<class>`` (actor as the server sees us) and approve."""
    secret = args.approval_secret or ctx.approval_secret
    if not secret:
        raise UsageError("no approval secret: pass --approval-secret or set PLATFORM_APPROVAL_HMAC_SECRET")
    actor = ctx.api.get("/v1/whoami").get("actor")
    current = ctx.api.get(request_path(args.id))
    if not isinstance(actor, str) or not isinstance(current.get("class"), str):
        raise CliError("the API answered without an actor or a class; cannot sign the approval")
    signature = sign_approval(secret, request_id=args.id, actor=actor, class_name=current["class"])
    reply = ctx.api.request(
        "POST", f"{request_path(args.id)}/approve", headers={"X-Platform-Approval-Signature": signature}
    )
    approved = reply.body
    if approved.get("status") == "pending_approval":
        count = len(approved.get("approvals") or [])
        ctx.note(f"platformctl: approval recorded ({count} so far); more approvers are needed")
    return shown_or_awaited(args, ctx, approved, READY)


def request_reject(args: argparse.Namespace, ctx: Context) -> int:
    reply = ctx.api.request("POST", f"{request_path(args.id)}/reject", json_body={"reason": args.reason})
    emit(ctx.stdout, reply.body, ctx.output)
    return EXIT_OK


def _if_match(args: argparse.Namespace) -> dict[str, str] | None:
    version = getattr(args, "if_version", None)
    return {"If-Match": f'"{version}"'} if version is not None else None


def request_reconcile(args: argparse.Namespace, ctx: Context) -> int:
    reply = ctx.api.request("POST", f"{request_path(args.id)}/reconcile", headers=_if_match(args))
    return shown_or_awaited(args, ctx, reply.body, READY)


def request_extend(args: argparse.Namespace, ctx: Context) -> int:
    body = {"ttl_hours": parse_hours(args.ttl)}
    reply = ctx.api.request("PATCH", request_path(args.id), json_body=body, headers=_if_match(args))
    emit(ctx.stdout, reply.body, ctx.output)
    return EXIT_OK


def request_delete(args: argparse.Namespace, ctx: Context) -> int:
    reply = ctx.api.request("DELETE", request_path(args.id), headers=_if_match(args))
    return shown_or_awaited(args, ctx, reply.body, "deleted")


def request_wait(args: argparse.Namespace, ctx: Context) -> int:
    """Poll until the request is ready (0), failed or rejected (1), or the timeout passes (124)."""
    return wait_for(ctx, args.id, getattr(args, "target", None) or READY, args.timeout, args.interval)
