"""Which API, token and output format a command uses: what is typed on the command line
wins, then ``PLATFORM_API``/``PLATFORM_TOKEN``, then the context of the config file.

A context's ``login`` token is sent only to that context's API: with ``--api`` or
``PLATFORM_API`` naming another one, the token has to come from ``--token`` or
``PLATFORM_TOKEN`` too, so a token is never handed to a server it was not obtained for.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial

from libs.settings import reveal
from services.tools.platformctl.client import TokenSource, UsageError
from services.tools.platformctl.config_file import CliConfig, ContextEntry, same_api
from services.tools.platformctl.sessions import current_token
from services.tools.platformctl.settings import CliSettings

DEFAULT_API = "http://localhost:8080"


@dataclass(frozen=True)
class Target:
    api: str
    # A login token is read (and refreshed) only when a request is sent.
    token: str | TokenSource | None
    output: str | None
    context: str | None
    team: str | None


def resolve_target(args: argparse.Namespace, settings: CliSettings, config: CliConfig) -> Target:
    name, entry = selected_context(args, config)
    api = args.api or settings.api or (entry.api if entry else DEFAULT_API)
    token: str | TokenSource | None = args.token or reveal(settings.token)
    if token is None and name is not None and entry is not None and same_api(api, entry.api):
        token = partial(current_token, config, name, api)
    return Target(
        api=api,
        token=token,
        output=args.output or (entry.output if entry else None),
        context=name,
        team=entry.team if entry else None,
    )


def selected_context(args: argparse.Namespace, config: CliConfig) -> tuple[str | None, ContextEntry | None]:
    """``--context``, else the current context. A name the file does not define is a usage
    error, except for the commands that create or repair contexts (``context_optional``)."""
    name = getattr(args, "context", None) or config.current
    if name is None:
        return None, None
    entry = config.contexts.get(name)
    if entry is None and not getattr(args, "context_optional", False):
        raise UsageError(
            f"no context {name!r} in {config.path} ('platformctl config get-contexts' lists them)"
        )
    return name, entry
