"""platformctl: ask for environments and follow them from a terminal or a script.

    platformctl login --api https://platform.example.com     # or: token mint (development)
    platformctl token mint --role requester --actor alice@example.com --team payments
    platformctl classes
    platformctl request create --app payments-api --team payments --class preview \\
        --region us-east-1 --ttl 24 --owner alice@example.com --repo https://github.com/acme/payments.git
    platformctl request approve --id req-0123456789abcdef --approval-secret "$SECRET"
    platformctl request reconcile --id req-0123456789abcdef
    platformctl request wait --id req-0123456789abcdef
    platformctl events tail

Output is a table on a terminal and JSON when piped (`| jq -r .id`); `-o` chooses.
--api/--token win over PLATFORM_API/PLATFORM_TOKEN, which win over the context
(`platformctl config get-contexts`; --context picks another).
Exit codes are below; `platformctl <command> --help` shows examples.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn, TextIO

from contracts.roles import ROLE_NAMES
from libs.settings import SettingsError, load_settings, reveal
from services.tools.platformctl import catalog_commands, commands, completion, event_commands, login_commands
from services.tools.platformctl.client import ApiClient, CliError, UsageError
from services.tools.platformctl.config_file import load_config
from services.tools.platformctl.context import Command, Context
from services.tools.platformctl.examples import examples_epilog
from services.tools.platformctl.exit_codes import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_code_table,
)
from services.tools.platformctl.output import FORMATS, OUTPUT_HELP, output_format
from services.tools.platformctl.settings import CliSettings
from services.tools.platformctl.targets import resolve_target, selected_context
from services.tools.platformctl.waiting import DEFAULT_TIMEOUT

PROG = "platformctl"
# The installed distribution platformctl comes with (its --version).
DISTRIBUTION = "platform-control-plane"


def usage_error(prog: str, message: str) -> int:
    """Report a usage error as one line (``platformctl: <message> (see '<prog> --help')``)."""
    sys.stderr.write(f"{PROG}: {' '.join(message.split())} (see '{prog} --help')\n")
    return EXIT_USAGE


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual, but keeps an ``examples:`` epilog's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line, like :func:`usage_error`, and ends
    every command's ``--help`` with its examples."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        command_path = str(kwargs.get("prog", "")).removeprefix(PROG).strip()
        if command_path:
            kwargs.setdefault("formatter_class", HelpFormatter)
            kwargs.setdefault("epilog", examples_epilog(command_path))
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise SystemExit(usage_error(self.prog, message))


def add_common(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # Accepted before and after the command (`platformctl --api X classes` and
    # `platformctl classes --api X`): the subcommand copy defaults to SUPPRESS so it
    # only overrides what the user actually typed there.
    default = None if top_level else argparse.SUPPRESS
    parser.add_argument(
        "--api", default=default, help="API base URL (env PLATFORM_API, default http://localhost:8080)"
    )
    parser.add_argument("--token", default=default, help="bearer token (env PLATFORM_TOKEN)")
    parser.add_argument(
        "--context", default=default, help="context of the config file to use (default: the current one)"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=output_format,
        metavar="FORMAT",
        default=default,
        help=f"{OUTPUT_HELP} (default: table on a terminal, else json)",
    )


def command(
    group: argparse._SubParsersAction[Parser], name: str, run: Command, help_text: str
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text)
    add_common(parser, top_level=False)
    # usage_prog: the command a usage error found later (a bad --ttl value) points to for --help.
    parser.set_defaults(run=run, usage_prog=parser.prog)
    return parser


def add_token_commands(root: argparse._SubParsersAction[Parser]) -> None:
    token = root.add_parser("token", help="development tokens")
    sub = token.add_subparsers(dest="token_command", required=True, metavar="mint", parser_class=Parser)
    mint = command(
        sub, "mint", commands.token_mint, "mint an HS-signed JWT for the API (prints only the token)"
    )
    mint.add_argument("--subject", help="`sub` claim (default: --actor)")
    mint.add_argument("--actor", help="`email` claim, the acting user (default: --subject)")
    mint.add_argument(
        "--role",
        required=True,
        type=str.lower,
        choices=ROLE_NAMES,
        metavar="ROLE",
        help=f"the `role` claim: {', '.join(ROLE_NAMES)}",
    )
    mint.add_argument("--secret", help="signing secret (env PLATFORM_JWT_HS256_SECRET)")
    mint.add_argument("--issuer", help="`iss` claim")
    mint.add_argument("--audience", help="`aud` claim")
    mint.add_argument("--ttl", default="1h", help="lifetime: 1h, 30m, 3600s or seconds (default 1h)")
    mint.add_argument("--team", action="append", help="team claim; repeat or separate with commas")
    mint.add_argument(
        "--algorithm", choices=("HS256", "HS384", "HS512"), default="HS256", help=argparse.SUPPRESS
    )


def add_class_commands(root: argparse._SubParsersAction[Parser]) -> None:
    classes = command(root, "classes", commands.classes_list, "list environment classes")
    sub = classes.add_subparsers(dest="classes_command", metavar="{list,get,apply}", parser_class=Parser)
    command(sub, "list", commands.classes_list, "list environment classes")
    get = command(sub, "get", commands.classes_get, "show one environment class")
    get.add_argument("--name", required=True, help="class name")
    apply = command(
        sub,
        "apply",
        catalog_commands.classes_apply,
        "create or replace classes from a file (admin). Each object replaces the whole class: "
        "a field the file leaves out gets its default, not its current value (each field that "
        "changed that way is named on stderr)",
    )
    apply.add_argument(
        "-f", "--file", required=True, help="YAML or JSON: one class, a list, or documents; - is stdin"
    )


def add_policy_catalog_commands(root: argparse._SubParsersAction[Parser]) -> None:
    for group, noun, listing, getting, applying in (
        (
            "quota-profiles",
            "quota profile",
            catalog_commands.quota_profiles_list,
            catalog_commands.quota_profiles_get,
            catalog_commands.quota_profiles_apply,
        ),
        (
            "policy-packs",
            "policy pack",
            catalog_commands.policy_packs_list,
            catalog_commands.policy_packs_get,
            catalog_commands.policy_packs_apply,
        ),
    ):
        parent = command(root, group, listing, f"list {noun}s")
        sub = parent.add_subparsers(dest=f"{group}_command", metavar="{list,get,apply}", parser_class=Parser)
        command(sub, "list", listing, f"list {noun}s")
        command(sub, "get", getting, f"show one {noun}").add_argument("--name", required=True)
        apply = command(
            sub,
            "apply",
            applying,
            f"create or replace {noun}s from a file (admin). Each object replaces the whole {noun}: "
            "a field the file leaves out gets its default, not its current value",
        )
        apply.add_argument(
            "-f", "--file", required=True, help="YAML or JSON: one, a list, or documents; - is stdin"
        )


def add_team_flag(parser: argparse.ArgumentParser, default_team: str | None, help_text: str) -> None:
    """``--team``, required unless the context names a default team."""
    if default_team is None:
        parser.add_argument("--team", required=True, help=help_text)
    else:
        parser.add_argument(
            "--team", default=default_team, help=f"{help_text} (context default {default_team})"
        )


def add_team_commands(root: argparse._SubParsersAction[Parser], default_team: str | None) -> None:
    teams = root.add_parser("teams", help="team budgets and spend")
    sub = teams.add_subparsers(
        dest="teams_command", required=True, metavar="{get,set-budget}", parser_class=Parser
    )
    get = command(sub, "get", catalog_commands.teams_get, "a team's budget and current spend")
    add_team_flag(get, default_team, "the team")
    budget = command(
        sub, "set-budget", catalog_commands.teams_set_budget, "set a team's monthly budget (admin)"
    )
    budget.add_argument("--team", required=True)
    budget.add_argument("--monthly-usd", type=float, help="monthly budget in US dollars")
    budget.add_argument("--clear", action="store_true", help="remove the team's budget")


def add_wait_flags(parser: argparse.ArgumentParser, target: str) -> None:
    """``--wait`` (and its ``--timeout``): then the command ends as ``request wait`` does."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help=f"then wait until the request is {target} (exit 0), failed or rejected (1) or the "
        "timeout passes (124), showing each status change on stderr",
    )
    parser.add_argument(
        "--timeout", default=DEFAULT_TIMEOUT, help="with --wait: give up after this long (default 300s)"
    )
    parser.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)


def add_request_commands(root: argparse._SubParsersAction[Parser], default_team: str | None) -> None:
    request = root.add_parser("request", help="environment requests")
    sub = request.add_subparsers(
        dest="request_command",
        required=True,
        metavar="{create,list,get,events,wait,approve,reject,reconcile,extend,delete}",
        parser_class=Parser,
    )

    create = command(sub, "create", commands.request_create, "ask for an environment")
    create.add_argument(
        "-f",
        "--file",
        help="the request as YAML or JSON, the API's fields (app, team, class, region, ttl_hours, "
        "owner, repository, revision, labels); - is stdin; flags override its fields",
    )
    create.add_argument("--app", help="application name (DNS label)")
    team_help = "owning team (DNS label)"
    create.add_argument(
        "--team", help=f"{team_help} (context default {default_team})" if default_team else team_help
    )
    create.set_defaults(context_team=default_team)
    create.add_argument("--class", dest="class_name", help="environment class")
    create.add_argument("--region", help="one of the class's regions")
    create.add_argument("--ttl", help="lifetime in hours (24 or 24h)")
    create.add_argument("--owner", help="responsible person")
    create.add_argument("--repo", help="git repository URL (https:// or ssh)")
    create.add_argument("--revision", help="git ref to deploy (default main)")
    create.add_argument("--labels", help="k=v,k2=v2")
    create.add_argument("--idempotency-key", help="retries with the same key return the first request")
    create.add_argument("--dry-run", action="store_true", help="show the plan, store nothing")
    add_wait_flags(create, "ready")

    listing = command(sub, "list", commands.request_list, "list environment requests")
    listing.add_argument("--team")
    listing.add_argument("--status")
    listing.add_argument("--class", dest="class_name")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--cursor", help="next_cursor of the previous page")

    for name, run, help_text in (
        ("get", commands.request_get, "show one environment request"),
        ("events", commands.request_events, "show a request's timeline"),
    ):
        command(sub, name, run, help_text).add_argument("--id", required=True, help="request id (req-...)")

    wait = command(sub, "wait", commands.request_wait, "wait until a request is ready, failed or rejected")
    wait.add_argument("--id", required=True, help="request id (req-...)")
    wait.add_argument(
        "--timeout", default=DEFAULT_TIMEOUT, help="give up after this long: 300, 5m (default 300s)"
    )
    wait.add_argument(
        "--for",
        dest="target",
        choices=("ready", "approved", "deleted"),
        default="ready",
        help="the status to wait for (default ready)",
    )
    wait.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)

    approve = command(
        sub, "approve", commands.request_approve, "approve a request (signs approve:<id>:<actor>:<class>)"
    )
    approve.add_argument("--id", required=True, help="request id (req-...)")
    approve.add_argument("--approval-secret", help="HMAC key (env PLATFORM_APPROVAL_HMAC_SECRET)")
    add_wait_flags(approve, "ready")

    reject = command(sub, "reject", commands.request_reject, "reject a request pending approval")
    reject.add_argument("--id", required=True, help="request id (req-...)")
    reject.add_argument("--reason", required=True, help="why (shown on the request and in its timeline)")

    for name, run, help_text, target in (
        ("reconcile", commands.request_reconcile, "render, publish and bootstrap the request again", "ready"),
        ("delete", commands.request_delete, "tear the environment down", "deleted"),
    ):
        parser = command(sub, name, run, help_text)
        parser.add_argument("--id", required=True, help="request id (req-...)")
        parser.add_argument("--if-version", type=int, help="only if the request is still at this version")
        add_wait_flags(parser, target)

    extend = command(sub, "extend", commands.request_extend, "change the TTL (within the class maximum)")
    extend.add_argument("--id", required=True, help="request id (req-...)")
    extend.add_argument("--ttl", required=True, help="new lifetime in hours from now (24 or 24h)")
    extend.add_argument("--if-version", type=int, help="only if the request is still at this version")


def add_event_commands(root: argparse._SubParsersAction[Parser]) -> None:
    events = root.add_parser("events", help="the event feed and dead letters")
    sub = events.add_subparsers(
        dest="events_command", required=True, metavar="{tail,dlq,replay}", parser_class=Parser
    )
    tail = command(sub, "tail", event_commands.events_tail, "follow request events as they happen")
    tail.add_argument("--id", help="only this request's events (shown from its start)")
    tail.add_argument("--from-start", action="store_true", help="begin with the oldest recorded event")
    tail.add_argument("--count", type=int, help="exit after this many events")
    tail.add_argument("--timeout", help="exit after this long (e.g. 30s, 5m)")
    tail.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")

    dlq = command(sub, "dlq", event_commands.events_dlq, "list dead letters (admin)")
    dlq.add_argument("--service", help="only this service's dead letters")
    dlq.add_argument("--all", action="store_true", help="include dead letters already replayed")
    dlq.add_argument("--limit", type=int, help="per service (default 100)")

    replay = command(
        sub,
        "replay",
        event_commands.events_replay,
        "replay the stream to a service's consumers (--consumer) or redrive a dead letter (--service --id)",
    )
    stream = replay.add_argument_group("replay the stream to a service's own consumers (admin)")
    stream.add_argument("--consumer", metavar="SERVICE", help="the service whose consumers take the replay")
    stream.add_argument(
        "--from",
        dest="start",
        metavar="SEQ|TIME",
        help="a stream sequence (1: the oldest kept), an RFC 3339 time or a duration ago (30m, 2h, 1d)",
    )
    stream.add_argument(
        "--dry-run", action="store_true", help="count per event type what would be re-executed or skipped"
    )
    letter = replay.add_argument_group("redrive one dead letter (admin)")
    letter.add_argument("--service", help="the service that holds it (see events dlq)")
    letter.add_argument("--id", type=int, help="dead letter id (see events dlq)")


def add_session_commands(root: argparse._SubParsersAction[Parser]) -> None:
    login = command(
        root,
        "login",
        login_commands.login,
        "sign in with the API's identity provider (device code; --browser: this machine's browser)",
    )
    login.add_argument("--browser", action="store_true", help="sign in in a browser on this machine (PKCE)")
    login.add_argument(
        "--accept-issuer",
        action="store_true",
        help="sign in even though the API names another identity provider than the context's",
    )
    # login creates the context it names; logout may clean up after one removed from the file.
    login.set_defaults(context_optional=True)
    logout = command(root, "logout", login_commands.logout, "forget the context's tokens (and revoke them)")
    logout.set_defaults(context_optional=True)


def add_config_commands(root: argparse._SubParsersAction[Parser]) -> None:
    config = root.add_parser("config", help="contexts: which API, issuer, team and output to use")
    sub = config.add_subparsers(
        dest="config_command",
        required=True,
        metavar="{get-contexts,use-context,set-context}",
        parser_class=Parser,
    )
    command(sub, "get-contexts", login_commands.get_contexts, "list the contexts (* marks the current one)")
    use = command(sub, "use-context", login_commands.use_context, "make a context the current one")
    use.add_argument("name")
    # Not `command`: its --api and --output are the context's, not this call's.
    change = sub.add_parser(
        "set-context",
        help="create or change a context",
        description="create a context (--api required) or change the fields given; '' removes a field",
    )
    change.set_defaults(run=login_commands.set_context, usage_prog=change.prog)
    change.add_argument("name")
    change.add_argument("--api", dest="context_api", metavar="URL", help="the API's base URL")
    change.add_argument(
        "--issuer", dest="context_issuer", metavar="URL", help="the identity provider (login sets it)"
    )
    change.add_argument(
        "--team", dest="context_team", metavar="TEAM", help="default --team of request create, teams get"
    )
    change.add_argument(
        "--output",
        dest="context_output",
        choices=(*FORMATS, ""),
        metavar="FORMAT",
        help=f"default output format: {', '.join(FORMATS)}",
    )
    for parser in (use, change):
        # Switching away from, or repairing, a current context the file no longer defines.
        parser.set_defaults(context_optional=True)


def build_parser(default_team: str | None = None) -> Parser:
    """The command line; ``default_team`` (the context's) makes ``--team`` optional where it
    names the team to act for."""
    parser = Parser(
        prog=PROG,
        description=__doc__,
        epilog=f"exit codes:\n{exit_code_table()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, top_level=True)
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    root = parser.add_subparsers(
        dest="command",
        required=True,
        metavar=(
            "{login,logout,whoami,config,token,classes,request,events,teams,quota-profiles,policy-packs,"
            "completion}"
        ),
        parser_class=Parser,
    )
    command_groups: tuple[Callable[[argparse._SubParsersAction[Parser]], None], ...] = (
        add_session_commands,
        add_config_commands,
        add_token_commands,
        add_class_commands,
        partial(add_request_commands, default_team=default_team),
        add_event_commands,
        add_policy_catalog_commands,
        partial(add_team_commands, default_team=default_team),
    )
    command(root, "whoami", commands.whoami, "show who the API thinks you are and when the token expires")
    for add_group in command_groups:
        add_group(root)
    shells = root.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="print a completion script for the shell, made from platformctl's own commands and flags",
    )
    shells.add_argument("shell", choices=completion.SHELLS)
    return parser


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def default_output(stdout: TextIO) -> str:
    # JSON when piped, so `platformctl request create ... | jq -r .id` works.
    return "table" if stdout.isatty() else "json"


def context_team(argv: list[str] | None) -> str | None:
    """The default team of the context this command line uses, read before it is parsed
    (it decides whether ``--team`` is required); None when anything is amiss, which the
    full parse then reports."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--context")
    try:
        known, _ = early.parse_known_args(argv)
        config = load_config(load_settings(CliSettings).config_path)
        _, entry = selected_context(known, config)
    except (SystemExit, SettingsError, CliError):
        return None
    return entry.team if entry else None


def build_context(args: argparse.Namespace, settings: CliSettings) -> Context:
    config = load_config(settings.config_path)
    target = resolve_target(args, settings, config)
    return Context(
        api=ApiClient(target.api, target.token),
        output=target.output or default_output(sys.stdout),
        stdout=sys.stdout,
        stderr=sys.stderr,
        secret=reveal(settings.jwt_secret),
        approval_secret=reveal(settings.approval_secret),
        config=config,
        context_name=target.context,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(context_team(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Reported against the command they were given to, so its --help is the one to read.
        return usage_error(getattr(args, "usage_prog", PROG), f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "completion":
        # Needs neither an API nor a config: it must work in a fresh shell's rc file.
        sys.stdout.write(completion.script(args.shell, parser))
        return EXIT_OK
    try:
        settings = load_settings(CliSettings)
    except SettingsError as exc:
        # A PLATFORM_* variable standing in for a flag is unusable: a usage error too.
        return usage_error(PROG, str(exc))
    try:
        return int(args.run(args, build_context(args, settings)))
    except UsageError as exc:
        return usage_error(args.usage_prog, exc.message)
    except CliError as exc:
        sys.stderr.write(f"{PROG}: {' '.join(exc.message.split())}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `platformctl request list | head`: the reader left; nothing more to say.
        return 0
    except Exception as exc:
        # A bug in platformctl itself: still one line, since scripts parse stderr.
        sys.stderr.write(f"{PROG}: unexpected error ({type(exc).__name__}); please report it\n")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
