"""``platformd dev`` (``make run``): the whole system on one machine with only Python.

Embedded NATS and Postgres unless ``PLATFORM_NATS_URL`` / ``PLATFORM_POSTGRES_DSN`` are
set, migrations, a GitOps repository with a local bare remote (unless
``PLATFORM_GITOPS_REPO_URL`` is set) so pushes are real, and all seven services as child
processes. State lives under ``./state`` (``PLATFORM_STATE_DIR``); running it again
reuses it. Ctrl-C stops every child cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from libs.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError, port_is_free
from libs.migrations import discover, migrate
from libs.settings import load_settings, setting
from services.platformd.process_stack import ProcessStack, git_init_bare, python_bin_dir
from services.platformd.registry import BACKEND_SERVICES, service_entry

DEV_JWT_SECRET = "dev-jwt-secret"  # noqa: S105 - printed development default, refused in strict mode
DEV_APPROVAL_SECRET = "dev-approval-secret"  # noqa: S105 - printed development default


@dataclass(frozen=True)
class DevStackSettings:
    state_dir: Path = setting("PLATFORM_STATE_DIR", Path("state"), doc="Where the dev stack keeps its state.")
    nats_url: str | None = setting("PLATFORM_NATS_URL", None, doc="Use this NATS instead of an embedded one.")
    postgres_dsn: str | None = setting(
        "PLATFORM_POSTGRES_DSN", None, doc="Use this Postgres instead of an embedded one.", secret=True
    )
    gitops_repo_url: str | None = setting(
        "PLATFORM_GITOPS_REPO_URL",
        None,
        doc="GitOps remote; a local bare repository when unset.",
        secret=True,
    )
    address: str = setting("PLATFORM_ADDRESS", "127.0.0.1:8080", doc="Gateway listen address.")
    jwt_secret: str = setting(
        "PLATFORM_JWT_HS256_SECRET", DEV_JWT_SECRET, doc="Dev token secret.", secret=True
    )
    approval_secret: str = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET", DEV_APPROVAL_SECRET, doc="Dev approval secret.", secret=True
    )
    nats_port: int = setting("PLATFORM_DEV_NATS_PORT", 14222, doc="Preferred port of the embedded NATS.")
    postgres_port: int = setting(
        "PLATFORM_DEV_POSTGRES_PORT", 15432, doc="Preferred port of the embedded Postgres."
    )


def _say(message: str = "") -> None:
    print(message, flush=True)


def _ensure_database(admin_dsn: str, name: str) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


async def _migrate_all(dsn: str) -> None:
    for name in BACKEND_SERVICES:
        entry = service_entry(name)
        if entry.schema is not None:
            await migrate(dsn, entry.schema, discover(entry.package))


def _preferred_port(port: int) -> int | None:
    return port if port_is_free(port) else None


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run_dev_stack() -> int:
    settings = load_settings(DevStackSettings)
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    stack: ProcessStack | None = None
    # Explicit handlers: a launcher started in the background inherits an ignored SIGINT.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        if settings.nats_url:
            nats_url = settings.nats_url
        else:
            nats = EmbeddedNats(state / "nats", port=_preferred_port(settings.nats_port))
            nats.start()
            nats_url = nats.url
        if settings.postgres_dsn:
            dsn = settings.postgres_dsn
        else:
            postgres = EmbeddedPostgres(state / "postgres", port=_preferred_port(settings.postgres_port))
            postgres.start()
            dsn = _ensure_database(postgres.dsn(), "platform")
        asyncio.run(_migrate_all(dsn))
        remote = settings.gitops_repo_url
        if not remote:
            bare = state / "gitops-remote.git"
            git_init_bare(bare)
            remote = str(bare)
        environment = {
            "PLATFORM_NATS_URL": nats_url,
            "PLATFORM_POSTGRES_DSN": dsn,
            "PLATFORM_AUTO_MIGRATE": "false",
            "PLATFORM_GITOPS_REPO_URL": remote,
            "PLATFORM_GITOPS_REPO_PATH": str(state / "git-publisher-repo"),
            "PLATFORM_GIT_PUSH_ENABLED": "true",
            "PLATFORM_JWT_HS256_SECRET": settings.jwt_secret,
            "PLATFORM_APPROVAL_HMAC_SECRET": settings.approval_secret,
        }
        stack = ProcessStack(environment, state / "logs", gateway_address=settings.address)
        stack.start_all()
        _say("starting services ...")
        stack.wait_ready(timeout=90)
        _banner(settings, stack, nats is not None, postgres is not None, remote, state)
        _supervise(stack)
    except (KeyboardInterrupt, _Stop):
        _say("\nstopping ...")
    except (EmbeddedServerError, TimeoutError, RuntimeError) as exc:
        _say(f"platformd dev: {exc}")
        if stack is not None:
            for name in stack.dead_services() or list(stack.services):
                tail = stack.log_tail(name, 5)
                if tail:
                    _say(f"--- {name} (last lines of {stack.services[name].log_path}) ---\n{tail}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop_all()
        if postgres is not None:
            postgres.stop()
        if nats is not None:
            nats.stop()
    _say("stopped.")
    return 0


def _supervise(stack: ProcessStack) -> None:
    """Restart a service that died, with a pause, until Ctrl-C."""
    while True:
        time.sleep(1)
        for name in stack.dead_services():
            service = stack.services[name]
            _say(f"{name} exited (code {service.process.returncode if service.process else '?'}); restarting")
            time.sleep(min(10, 1 + service.restarts))
            service.restarts += 1
            stack.start(name)


def _banner(
    settings: DevStackSettings,
    stack: ProcessStack,
    embedded_nats: bool,
    embedded_pg: bool,
    remote: str,
    state: Path,
) -> None:
    bin_dir = python_bin_dir()
    try:
        ctl = str(bin_dir.relative_to(Path.cwd()) / "platformctl")
    except ValueError:
        ctl = str(bin_dir / "platformctl")
    jwt_note = " (dev default)" if settings.jwt_secret == DEV_JWT_SECRET else ""
    approval_note = " (dev default)" if settings.approval_secret == DEV_APPROVAL_SECRET else ""
    _say(
        f"""
platform-control-plane is running
  API            {stack.api_url}   (OpenAPI: {stack.api_url}/schema)
  NATS           {"embedded" if embedded_nats else "external"}; Postgres {"embedded" if embedded_pg else "external"}
  GitOps remote  {remote}
  State, logs    {state}  ({state / "logs"})
  JWT secret     {settings.jwt_secret}{jwt_note}
  Approval key   {settings.approval_secret}{approval_note}

Try it (in another terminal):
  export PLATFORM_TOKEN=$({ctl} token mint --subject alice --actor alice@example.com --role requester --secret {settings.jwt_secret})
  ID=$({ctl} request create --app payments-api --team payments --class preview --region us-east-1 \\
        --ttl 24 --owner alice@example.com --repo https://github.com/example/payments-api.git | jq -r .id)
  {ctl} request wait --id $ID
  git --git-dir {remote} log --stat -1

or with curl:
  curl -s -H "Authorization: Bearer $PLATFORM_TOKEN" {stack.api_url}/v1/environment-classes

Press Ctrl-C to stop."""
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run_dev_stack())
