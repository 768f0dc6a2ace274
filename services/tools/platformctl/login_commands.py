"""``platformctl login|logout`` and ``platformctl config get-contexts|use-context|set-context``.

    platformctl login --api https://platform.example.com     # device code; --browser for PKCE
    platformctl config get-contexts
    platformctl config use-context staging
    platformctl config set-context staging --team payments --output table
    platformctl logout

``login`` asks the API which identity provider it trusts (``GET /v1/auth/config``), signs
in there, keeps the tokens for the context (see :mod:`sessions`) and makes that context
the current one.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.tools.platformctl import oidc
from services.tools.platformctl.browser_login import browser_login
from services.tools.platformctl.client import ApiClient, CliError, UsageError, redact
from services.tools.platformctl.config_file import (
    CliConfig,
    ContextEntry,
    check_context_name,
    check_own_directory,
    new_context_name,
    same_api,
    save_config,
)
from services.tools.platformctl.context import EXIT_OK, Context
from services.tools.platformctl.exit_codes import EXIT_AUTH, EXIT_USAGE
from services.tools.platformctl.output import Column, emit
from services.tools.platformctl.sessions import Session, remove_session, save_session

CONTEXT_COLUMNS: list[Column] = [
    ("CURRENT", lambda c: "*" if c.get("current") else ""),
    ("NAME", lambda c: c.get("name")),
    ("API", lambda c: c.get("api")),
    ("ISSUER", lambda c: c.get("issuer")),
    ("TEAM", lambda c: c.get("team")),
    ("OUTPUT", lambda c: c.get("output")),
]


def _config(ctx: Context) -> CliConfig:
    assert ctx.config is not None  # main always loads it
    return ctx.config


def login(args: argparse.Namespace, ctx: Context) -> int:
    config = _config(ctx)
    api = ctx.api.base_url
    oidc.require_https(api, "the API", EXIT_USAGE)
    name = _login_context(config, args.context, ctx.context_name, api)
    for directory in (config.path.parent, config.tokens_dir):
        check_own_directory(directory)  # refused before the user signs in for nothing
    provider = oidc.discover(ctx.api)
    if not args.accept_issuer:
        _check_issuer(config.contexts.get(name), name, api, provider.issuer)
    answer = browser_login(provider, ctx.note) if args.browser else oidc.device_login(provider, ctx.note)
    session = Session.signed_in(api, provider, answer)
    save_session(config, name, session)
    previous = config.contexts.get(name) or ContextEntry(api=api)
    config.contexts[name] = ContextEntry(api, provider.issuer, previous.team, previous.output)
    config.current = name
    save_config(config)
    identity = ApiClient(api, session.token).get("/v1/whoami")
    ctx.note(f"Signed in to {name} ({redact(api)}) as {_describe(identity)}")
    return EXIT_OK


def _check_issuer(entry: ContextEntry | None, name: str, api: str, issuer: str) -> None:
    """A context keeps the identity provider it was first signed in with: an API (or
    someone answering in its name) that suddenly names another one does not get the
    user's sign-in there without the user saying so."""
    if entry is None or entry.issuer is None or entry.issuer == issuer:
        return
    raise CliError(
        f"the API at {redact(api)} now names the identity provider {issuer}, but context "
        f"{name} signs in with {entry.issuer}; if that change is expected, run "
        f"'platformctl login --context {name} --accept-issuer' "
        f"(or 'platformctl config set-context {name} --issuer {issuer}')",
        exit_code=EXIT_AUTH,
    )


def _login_context(config: CliConfig, requested: str | None, selected: str | None, api: str) -> str:
    """``--context``; else the current context when it is this API's; else a new context
    named after the API's host, port and path."""
    if requested:
        return check_context_name(requested)
    current = config.contexts.get(selected) if selected else None
    if selected and current is not None and same_api(current.api, api):
        return selected
    return new_context_name(config, api)


def _describe(identity: Any) -> str:
    if not isinstance(identity, dict):
        return "an unknown caller"
    teams = identity.get("teams")
    scope = f"teams {', '.join(teams)}" if teams else "all teams"
    return f"{identity.get('actor')} (role {identity.get('role')}, {scope})"


def logout(_: argparse.Namespace, ctx: Context) -> int:
    """Forget the context's tokens and, where the provider offers it, revoke the refresh token."""
    name = ctx.context_name
    if name is None:
        raise UsageError("no context to sign out of: pass --context NAME")
    session = remove_session(_config(ctx), name)
    if session is None:
        ctx.note(f"Not signed in to {name}")
        return EXIT_OK
    if session.refresh_token:
        try:
            oidc.revoke(session.provider, session.refresh_token)
        except CliError as exc:
            # The local tokens are gone either way; the refresh token lives until it expires.
            ctx.note(f"platformctl: the identity provider did not revoke the session: {exc.message}")
    ctx.note(f"Signed out of {name}")
    return EXIT_OK


def get_contexts(_: argparse.Namespace, ctx: Context) -> int:
    config = _config(ctx)
    items = [
        {"name": name, "current": name == config.current, **_fields(entry)}
        for name, entry in sorted(config.contexts.items())
    ]
    emit(ctx.stdout, {"items": items}, ctx.output, CONTEXT_COLUMNS)
    return EXIT_OK


def _fields(entry: ContextEntry) -> dict[str, Any]:
    return {"api": entry.api, "issuer": entry.issuer, "team": entry.team, "output": entry.output}


def use_context(args: argparse.Namespace, ctx: Context) -> int:
    config = _config(ctx)
    if args.name not in config.contexts:
        raise UsageError(
            f"no context {args.name!r} in {config.path} ('platformctl config get-contexts' lists them)"
        )
    config.current = args.name
    save_config(config)
    ctx.note(f"Switched to context {args.name} ({redact(config.contexts[args.name].api)})")
    return EXIT_OK


def set_context(args: argparse.Namespace, ctx: Context) -> int:
    """Create a context (``--api`` required) or change the fields given; an empty value
    (``--team ''``) removes that field."""
    config = _config(ctx)
    name = check_context_name(args.name)
    entry = config.contexts.get(name)
    if entry is None and not args.context_api:
        raise UsageError(f"context {name!r} is new: pass --api URL")
    entry = entry or ContextEntry(api=args.context_api)
    changes = {
        "api": args.context_api,
        "issuer": args.context_issuer,
        "team": args.context_team,
        "output": args.context_output,
    }
    for key, value in changes.items():
        if value is not None:
            setattr(entry, key, value or None)
    if not entry.api:
        raise UsageError("a context needs an API: --api cannot be empty")
    created = name not in config.contexts
    config.contexts[name] = entry
    save_config(config)
    ctx.note(f"Context {name} {'created' if created else 'updated'}")
    return EXIT_OK
