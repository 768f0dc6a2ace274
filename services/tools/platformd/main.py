"""``platformd``: run a service, migrate a schema, or start the whole stack locally.

platformd <service>              run one service (intake, policy, approval, renderer,
                                 git-publisher, cluster-bootstrapper, gateway)
platformd migrate <service|all>  apply pending migrations and exit
platformd dev [--replicas N]     embedded NATS + Postgres and all seven services
                                 (N processes of each backend service; the gateway runs once)
platformd config <service>       list the service's settings and their defaults
platformd nats-config [--format table|server|helm]
                                 the NATS identities and their subject permissions: as a
                                 table, as nats-server's authorization block, or as values
                                 for the official NATS Helm chart (deploy/nats/identities.yaml)
platformd clean-state            delete dev's state and its embedded Postgres cluster (make clean)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import Any

import psycopg

from libs.bus import NatsUnavailable, configure_stream
from libs.database import safe_database_error
from libs.migrations import MigrationError, discover, migrate
from libs.service_runner import run as run_service
from libs.settings import BusSettings, SettingsError, describe_settings, load_settings
from services.tools.platformd.registry import BACKEND_SERVICES, SERVICES, service_entry


def _fail(message: str, code: int = 2) -> int:
    print(f"platformd: {message}", file=sys.stderr)
    return code


def _entry(name: str) -> Any:
    try:
        return service_entry(name)
    except KeyError:
        known = ", ".join(s.replace("_", "-") for s in SERVICES)
        raise SystemExit(_fail(f"unknown service {name!r} (known: {known})")) from None


def run(name: str) -> int:
    entry = _entry(name)
    settings = load_settings(entry.settings_class)
    bootstrap_module = importlib.import_module(f"{entry.package}.bootstrap")
    custom_run = getattr(bootstrap_module, "run", None)
    if custom_run is not None:
        custom_run(settings)
    else:
        run_service(entry.name, settings, bootstrap_module.bootstrap)
    return 0


def migrate_command(target: str) -> int:
    names = BACKEND_SERVICES if target == "all" else (_entry(target).name,)
    for name in names:
        entry = _entry(name)
        if entry.schema is None:
            continue
        settings = load_settings(entry.settings_class)
        applied = asyncio.run(migrate(settings.require_dsn(), entry.schema, discover(entry.package)))
        print(f"{name}: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
    # The event stream's configuration (replicas, retention, dedup window) is applied here, at
    # deploy time: a service start only creates a missing stream, never resets an existing one.
    shared = load_settings(BusSettings)
    asyncio.run(configure_stream(shared))
    print(f"stream {shared.stream_name}: configuration applied", file=sys.stderr)
    return 0


def config_command(name: str) -> int:
    entry = _entry(name)
    for variable, default, doc in describe_settings(entry.settings_class):
        print(f"{variable:48} {default or '-':28} {doc}")
    # Flushed here, inside main's BrokenPipeError handling, rather than at interpreter exit.
    sys.stdout.flush()
    return 0


NATS_CONFIG_FORMATS = ("table", "server", "helm")


def nats_config_command(output_format: str) -> int:
    """The permission model for the subjects and stream these settings name."""
    from services.tools import nats_permissions

    settings = load_settings(BusSettings)
    render = {
        "table": nats_permissions.describe,
        "server": nats_permissions.server_authorization,
        "helm": nats_permissions.helm_values,
    }[output_format]
    sys.stdout.write(render(settings))
    sys.stdout.flush()
    return 0


def _reader_left() -> int:
    """``platformd config gateway | head``: the reader closed the pipe; end quietly.

    stdout points at /dev/null from here on, so the interpreter's own flush at exit
    cannot raise a second BrokenPipeError (Python's documented recipe for SIGPIPE).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 0


def _at_least_one(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="platformd", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "command", help="a service name, or migrate / dev / config / nats-config / clean-state"
    )
    parser.add_argument("target", nargs="?", help="service for migrate/config (migrate accepts 'all')")
    parser.add_argument(
        "--replicas",
        type=_at_least_one,
        metavar="N",
        help="dev only: run N processes of every backend service, each with its own ops port and\n"
        "log file (<service>-<n>.log); the gateway runs once. Default: PLATFORM_DEV_REPLICAS or 1",
    )
    parser.add_argument(
        "--format",
        choices=NATS_CONFIG_FORMATS,
        default="table",
        help="nats-config only: table (default), server (nats-server's authorization block) or helm",
    )
    args = parser.parse_args(argv)
    if args.replicas is not None and args.command != "dev":
        parser.error("--replicas applies to dev only")
    if args.format != "table" and args.command != "nats-config":
        parser.error("--format applies to nats-config only")
    try:
        if args.command == "dev":
            from services.tools.platformd.dev_stack import run_dev_stack

            return run_dev_stack(replicas=args.replicas)
        if args.command == "nats-config":
            return nats_config_command(args.format)
        if args.command == "clean-state":
            from services.tools.platformd.dev_stack import clean_dev_state

            return clean_dev_state()
        if args.command in ("migrate", "config"):
            if not args.target:
                return _fail(f"{args.command} needs a service name")
            return migrate_command(args.target) if args.command == "migrate" else config_command(args.target)
        return run(args.command)
    except SettingsError as exc:
        return _fail(str(exc))
    except NatsUnavailable as exc:
        return _fail(str(exc), code=1)
    except MigrationError as exc:
        return _fail(str(exc), code=1)
    except psycopg.Error as exc:
        # The driver's message names hosts and ports; say what failed, not where.
        return _fail(f"database unavailable ({safe_database_error(exc)})", code=1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_left()


if __name__ == "__main__":
    sys.exit(main())
