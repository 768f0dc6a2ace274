"""``platformd dev`` (``make run``): the whole system on one machine with only Python.

Embedded NATS and Postgres unless ``PLATFORM_NATS_URL`` / ``PLATFORM_POSTGRES_DSN`` are
set, migrations, a GitOps repository with a local bare remote (unless
``PLATFORM_GITOPS_REPO_URL`` is set) so pushes are real, and all seven services as child
processes. State lives under ``./state`` (``PLATFORM_STATE_DIR``); running it again
reuses it. Ctrl-C stops every child cleanly. ``--replicas N`` (``PLATFORM_DEV_REPLICAS``)
runs N processes of every backend service, each with its own ops port and log file.

A service that exits while the stack starts is started again (a few times, with a growing
pause, saying why); one that dies later is restarted by the supervisor until Ctrl-C.

One launcher per state directory: it holds an exclusive lock on ``<state>/platformd.lock``
(which names its pid) for as long as it runs, and a second one on the same directory is
refused before it touches any server. The launcher records every process it starts in
``<state>/platformd.pids``; a launcher that was killed leaves those running, and the next
one on that state stops them (after checking each pid still is that process) before
starting its own. It never signals a process it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Annotated

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from libs.bus import configure_stream
from libs.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError, free_port
from libs.migrations import discover, migrate
from libs.settings import (
    Bounds,
    BusSettings,
    Secret,
    SecretUrl,
    child_environment,
    load_settings,
    reveal,
    server_environment,
    setting,
    split_address,
)
from services.tools.nats_permissions import OPERATOR, PROVISIONER, SUBSCRIBER, inbox_prefix
from services.tools.platformd.nats_identities import BusIdentities, ensure_identities
from services.tools.platformd.process_stack import (
    ProcessStack,
    ServiceProcess,
    git_init_bare,
    process_name,
    python_bin_dir,
)
from services.tools.platformd.registry import BACKEND_SERVICES, SERVICES, ops_port_order, service_entry

DEV_JWT_SECRET = "dev-jwt-secret"  # noqa: S105 - printed development default, refused in strict mode
DEV_APPROVAL_SECRET = "dev-approval-secret"  # noqa: S105 - printed development default

LOCK_FILE = "platformd.lock"
PIDS_FILE = "platformd.pids"
# The order of the preferred ops ports from PLATFORM_DEV_OPS_BASE_PORT: with the default
# base these are each service's own PLATFORM_HEALTH_ADDRESS default (9101..9106), the
# ports docs/architecture.md, compose.yaml and the charts use.
OPS_PORT_ORDER = ops_port_order()
NATS_ROLE = "nats-server"
POSTGRES_ROLE = "postgres"
LEFTOVER_STOP_SECONDS = 20.0
# Starts of one service before the launcher gives up on the stack: enough to ride out a
# broker that is still electing leaders (pauses 1 + 2 + 4 + 8 s), few enough that a
# service that cannot start is reported within a minute.
START_ATTEMPTS = 5


@dataclass(frozen=True)
class DevStackSettings:
    state_dir: Path = setting("PLATFORM_STATE_DIR", Path("state"), doc="Where the dev stack keeps its state.")
    nats_url: SecretUrl | None = setting(
        "PLATFORM_NATS_URL", None, doc="Use this NATS instead of an embedded one."
    )
    postgres_dsn: SecretUrl | None = setting(
        "PLATFORM_POSTGRES_DSN", None, doc="Use this Postgres instead of an embedded one."
    )
    gitops_repo_url: SecretUrl | None = setting(
        "PLATFORM_GITOPS_REPO_URL", None, doc="GitOps remote; a local bare repository when unset."
    )
    address: str = setting("PLATFORM_ADDRESS", "127.0.0.1:8080", doc="Gateway listen address.")
    jwt_secret: Secret = setting("PLATFORM_JWT_HS256_SECRET", Secret(DEV_JWT_SECRET), doc="Dev token secret.")
    approval_secret: Secret = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET", Secret(DEV_APPROVAL_SECRET), doc="Dev approval secret."
    )
    nats_port: int = setting("PLATFORM_DEV_NATS_PORT", 14222, doc="Preferred port of the embedded NATS.")
    nats_identities: bool = setting(
        "PLATFORM_DEV_NATS_IDENTITIES",
        True,
        doc="The embedded NATS admits only the platform's identities (a seed per service, "
        "state/nats/subscriber.nk, state/nats/operator.nk; docs/security.md); false: anonymous.",
    )
    nats_http_port: int = setting(
        "PLATFORM_DEV_NATS_HTTP_PORT",
        8222,
        doc="Preferred monitoring port (/varz, /jsz, /healthz) of the embedded NATS.",
    )
    postgres_port: int = setting(
        "PLATFORM_DEV_POSTGRES_PORT", 15432, doc="Preferred port of the embedded Postgres."
    )
    ops_base_port: int = setting(
        "PLATFORM_DEV_OPS_BASE_PORT",
        9101,
        doc="Preferred ops port of intake; policy, approval, renderer, git-publisher and "
        "cluster-bootstrapper prefer the next five, their second replicas the six after those, "
        "and so on. A taken port falls back to a free one.",
    )
    replicas: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_DEV_REPLICAS",
        1,
        doc="Processes of every backend service (the gateway runs once); `platformd dev --replicas`.",
    )


class DevStackRefused(Exception):
    """The dev stack will not start; the message says why and what to do."""


def _say(message: str = "") -> None:
    print(message, flush=True)


def _complain(message: str) -> None:
    print(f"platformd dev: {message}", file=sys.stderr, flush=True)


# --- one launcher per state directory -------------------------------------------------


class StateLock:
    """An exclusive ``flock`` on ``<state>/platformd.lock`` naming the holder's pid.

    The kernel drops the lock when the holder exits, however it exits (a SIGKILLed
    launcher frees it too), so a free lock means no live launcher uses the state. Child
    processes must not inherit the descriptor, or they would keep the lock alive after
    the launcher died; Python opens files non-inheritable and ``Popen`` closes the rest.
    """

    def __init__(self, state: Path) -> None:
        self.path = state / LOCK_FILE
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            state = self.path.parent
            raise DevStackRefused(
                f"{state} is in use by another platformd dev (pid {holder}); only one may run on a "
                f"state directory. Use the running one, stop it (Ctrl-C in its terminal, or kill "
                f"{holder}), or start this one on its own state: PLATFORM_STATE_DIR=<another dir> "
                f"(and another PLATFORM_ADDRESS) make run"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        self._handle.truncate(0)
        # Not unlinked: a launcher waiting on the old inode would lock a file nobody else sees.
        self._handle.close()
        self._handle = None


# --- what this launcher started ------------------------------------------------------


@dataclass(frozen=True)
class StartedProcess:
    role: str
    pid: int
    # Clock ticks after boot (/proc/<pid>/stat): tells the process apart from a later one
    # that got the same pid.
    start_time: int
    # As read at spawn, for the messages (possibly still the launcher's, before the exec).
    cmdline: list[str]


def _identity(pid: int) -> tuple[int, list[str]] | None:
    """(start time, command line) of a live process; None when it is gone or a zombie.

    Without /proc (not Linux) nothing can be verified, so nothing counts as alive and no
    leftover is ever signalled.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19]), [part.decode(errors="replace") for part in cmdline.split(b"\0") if part]


def _is_still(process: StartedProcess) -> bool:
    """Whether the recorded process still runs: same pid and start time (a reused pid starts
    later). Not the command line: it is recorded right after the fork, when the child may not
    have exec'd its program yet and still shows the launcher's."""
    identity = _identity(process.pid)
    return identity is not None and identity[0] == process.start_time


class ProcessLedger:
    """``<state>/platformd.pids``: the launcher's pid and every process it started.

    Rewritten (atomically) whenever a process starts, so a launcher killed at any moment
    leaves an accurate list for the next one; deleted after a clean stop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.processes: dict[str, StartedProcess] = {}

    def record(self, role: str, pid: int) -> None:
        identity = _identity(pid)
        if identity is None:
            return  # already gone: nothing to stop later
        self.processes[role] = StartedProcess(role, pid, *identity)
        payload = {"launcher": os.getpid(), "processes": [asdict(p) for p in self.processes.values()]}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(payload, indent=2) + "\n")
        temporary.replace(self.path)

    def previous(self) -> tuple[int | None, list[StartedProcess]]:
        """The previous launcher's pid and those of its processes that are still running."""
        try:
            payload = json.loads(self.path.read_text())
            launcher = payload.get("launcher")
            recorded = [StartedProcess(**entry) for entry in payload["processes"]]
        except (OSError, ValueError, TypeError, KeyError):
            return None, []
        return launcher, [process for process in recorded if _is_still(process)]

    def clear(self) -> None:
        self.processes.clear()
        self.path.unlink(missing_ok=True)


def _stop_leftovers(ledger: ProcessLedger, state: Path) -> None:
    """Stop what a killed launcher on this state left running: services first (they
    drain on SIGTERM), then Postgres (SIGINT, its fast shutdown), then NATS."""
    launcher, alive = ledger.previous()
    if alive:
        names = ", ".join(f"{p.role} (pid {p.pid})" for p in alive)
        _say(
            f"An earlier platformd dev on {state} (pid {launcher}) is gone but left processes "
            f"running; stopping them: {names}"
        )
        servers = (POSTGRES_ROLE, NATS_ROLE)
        _stop_and_wait([p for p in alive if p.role not in servers], signal.SIGTERM)
        _stop_and_wait([p for p in alive if p.role == POSTGRES_ROLE], signal.SIGINT)
        _stop_and_wait([p for p in alive if p.role == NATS_ROLE], signal.SIGTERM)
    ledger.clear()


def _stop_and_wait(processes: list[StartedProcess], signum: signal.Signals) -> None:
    for process in processes:
        if _is_still(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
    deadline = time.monotonic() + LEFTOVER_STOP_SECONDS
    while any(_is_still(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for process in processes:
        if _is_still(process):
            _say(f"  {process.role} (pid {process.pid}) did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").glob("[0-9]*"):
        identity = _identity(int(entry.name))
        if identity is not None:
            yield int(entry.name), identity[1]


def _refuse_foreign_nats(state: Path) -> None:
    """Refuse a state whose NATS runs without this launcher's record of it.

    Called with the lock held and the recorded leftovers stopped, so such a server was
    started by someone else (or by a launcher killed within its first second): a second
    nats-server on the same storage would corrupt it, and stopping this one would take it
    from whoever runs it.
    """
    nats_config = str(state / "nats" / "nats-server.conf")
    for pid, cmdline in _processes():
        if nats_config in cmdline:
            raise DevStackRefused(
                f"a nats-server (pid {pid}) that this launcher did not start is using {state / 'nats'}; "
                f"stop it (kill {pid}) or choose another PLATFORM_STATE_DIR"
            )


def _foreign_postgres(server: EmbeddedPostgres, state: Path) -> DevStackRefused:
    """EmbeddedPostgres adopts a postmaster already running on its cluster. With the lock
    held and the recorded leftovers stopped, that one is not this launcher's to use or stop."""
    return DevStackRefused(
        f"a Postgres that this launcher did not start already runs on the cluster of {state / 'postgres'} "
        f"({_listener(server.port or 0) or 'pid unknown'}, port {server.port}); "
        "stop it or choose another PLATFORM_STATE_DIR"
    )


# --- ports -------------------------------------------------------------------------------


def _can_listen(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn binds: a connection in TIME_WAIT does not make the port unusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _listener(port: int) -> str:
    """``pid N: command`` of the process listening on ``port`` when /proc tells, else ``""``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return ""
    for pid, cmdline in _processes():
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return f"pid {pid}: {' '.join(cmdline)[:120]}"
    return ""


def _check_gateway_address(address: str) -> None:
    host, port = split_address(address, "PLATFORM_ADDRESS")
    if not _can_listen(host, port):
        holder = _listener(port)
        raise DevStackRefused(
            f"port {port} of the gateway's address {address} is already in use{f' ({holder})' if holder else ''}. "
            f"Stop what listens there, or choose a free address: PLATFORM_ADDRESS=127.0.0.1:{free_port()} "
            f"make run"
        )


def _loopback_if_no_host(address: str) -> str:
    """``:8080`` is ``127.0.0.1:8080``: the dev stack listens on this machine only (as its
    servers do), and the banner must print a URL a client can use, not ``http://:8080``."""
    host, separator, port = address.rpartition(":")
    return f"127.0.0.1:{port}" if separator and not host else address


def _preferred_port(port: int) -> int | None:
    return port if _can_listen("127.0.0.1", port) else None


def _ops_process_names(replicas: int) -> list[str]:
    """The backend processes in banner order: every service's first replica, then the seconds, ..."""
    return [
        process_name(service, replica, replicas)
        for replica in range(1, replicas + 1)
        for service in OPS_PORT_ORDER
    ]


def _ops_ports(settings: DevStackSettings) -> dict[str, int]:
    return {
        name: _preferred_port(settings.ops_base_port + index) or free_port()
        for index, name in enumerate(_ops_process_names(settings.replicas))
    }


# --- start, supervise, stop ------------------------------------------------------------


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


def _provision_stream(nats_url: str, identities: BusIdentities | None) -> None:
    """What ``platformd migrate`` does to the stream, as the provisioner: the services' own
    identities may create a missing stream but never change one."""
    overrides = {"PLATFORM_NATS_URL": nats_url}
    if identities is not None:
        overrides.update(identities.environment(PROVISIONER))
    environment = child_environment(overrides)
    asyncio.run(configure_stream(load_settings(BusSettings, environment)))


class _Stop(Exception):
    pass


class _StopSignals:
    """SIGINT/SIGTERM raise :class:`_Stop`, except inside :meth:`deferred`, which raises it
    on leaving: a Popen interrupted after its fork leaves a running child whose pid the
    launcher never learns, so it could neither stop nor record it."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self._depth:
            self._pending = True
            return
        raise _Stop

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending:
            self._pending = False
            raise _Stop


def run_dev_stack(replicas: int | None = None) -> int:
    """Run the stack until Ctrl-C; ``replicas`` (``--replicas``) overrides ``PLATFORM_DEV_REPLICAS``."""
    settings = load_settings(DevStackSettings)
    if replicas is not None:
        settings = dataclasses.replace(settings, replicas=replicas)
    settings = dataclasses.replace(settings, address=_loopback_if_no_host(settings.address))
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    lock = StateLock(state)
    ledger = ProcessLedger(state / PIDS_FILE)
    nats: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    stack: ProcessStack | None = None
    # Explicit handlers: a launcher started in the background inherits an ignored SIGINT.
    stop_signals = _StopSignals()
    signal.signal(signal.SIGTERM, stop_signals.handle)
    signal.signal(signal.SIGINT, stop_signals.handle)
    try:
        # The order matters: nothing that could disturb another launcher's servers
        # (stopping leftovers, binding ports, starting NATS on shared storage) happens
        # before the lock is ours.
        lock.acquire()
        _stop_leftovers(ledger, state)
        _refuse_foreign_nats(state)
        _check_gateway_address(settings.address)
        nats_monitoring: str | None = None
        identities: BusIdentities | None = None
        if settings.nats_url:
            nats_url = settings.nats_url.reveal()
        else:
            if settings.nats_identities:
                identities = ensure_identities(state / "nats", load_settings(BusSettings))
            # Assigned and recorded before it is ready: a Ctrl-C while it starts stops it
            # (the finally below), and a killed launcher's successor finds it in the ledger.
            nats = EmbeddedNats(
                state / "nats",
                port=_preferred_port(settings.nats_port),
                http_port=_preferred_port(settings.nats_http_port) or free_port(),
                on_spawn=lambda process: ledger.record(NATS_ROLE, process.pid),
                authorization=identities.authorization if identities is not None else None,
                environment=server_environment(),
            )
            nats.start()
            nats_url = nats.url
            nats_monitoring = f"http://127.0.0.1:{nats.http_port}"
        if settings.postgres_dsn:
            dsn = settings.postgres_dsn.reveal()
        else:
            # As NATS: owned from the moment it is spawned, not only once it accepts connections.
            postgres = EmbeddedPostgres(
                state / "postgres",
                port=_preferred_port(settings.postgres_port),
                on_spawn=lambda process: ledger.record(POSTGRES_ROLE, process.pid),
                environment=server_environment(),
            )
            postgres.start()
            if postgres.process is None:
                raise _foreign_postgres(postgres, state)  # adopted, not spawned: never stopped
            dsn = _ensure_database(postgres.dsn(), "platform")
        asyncio.run(_migrate_all(dsn))
        _provision_stream(nats_url, identities)
        remote = reveal(settings.gitops_repo_url)
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
            "PLATFORM_JWT_HS256_SECRET": settings.jwt_secret.reveal(),
            "PLATFORM_APPROVAL_HMAC_SECRET": settings.approval_secret.reveal(),
        }
        stack = ProcessStack(
            environment,
            state / "logs",
            gateway_address=settings.address,
            service_environment=identities.service_environment(SERVICES) if identities is not None else {},
            ops_ports=_ops_ports(settings),
            replicas=settings.replicas,
            on_start=lambda process: _record_service(ledger, process),
            spawning=stop_signals.deferred,
        )
        each = "" if settings.replicas == 1 else f" ({settings.replicas} processes of each backend)"
        _say(f"starting services{each} ...")
        stack.start_all()
        # Each process adds a few seconds of start-up CPU on a small machine.
        stack.wait_ready(timeout=60 + 30 * settings.replicas, start_attempts=START_ATTEMPTS, report=_say)
        facts = BannerFacts(
            api_url=stack.api_url,
            nats_url=None if settings.nats_url else nats_url,
            nats_monitoring_url=nats_monitoring,
            nats_seed_files=(
                {name: identities.seed_files[name] for name in (SUBSCRIBER, OPERATOR)}
                if identities is not None
                else {}
            ),
            postgres_dsn=postgres.dsn("platform") if postgres is not None else None,
            remote=None if settings.gitops_repo_url else remote,
            state=state,
            ops_urls={name: stack.ops_url(name) for name in _ops_process_names(settings.replicas)},
            jwt_secret=settings.jwt_secret,
            approval_secret=settings.approval_secret,
            platformctl=_platformctl_path(),
        )
        _say(render_banner(facts))
        _supervise(stack)
    except (KeyboardInterrupt, _Stop):
        _say("\nstopping ...")
    except DevStackRefused as exc:
        _complain(str(exc))
        return 1
    except (EmbeddedServerError, TimeoutError, RuntimeError, OSError) as exc:
        # An OSError (a directory that cannot be created, a binary that cannot be run) says
        # what failed in one line; its traceback would say nothing more to the user.
        _complain(str(exc) if not isinstance(exc, OSError) else f"could not start the stack: {exc}")
        if stack is not None:
            for name in stack.dead_services() or list(stack.services):
                _say(stack.exit_report(name) if name in stack.dead_services() else _log_excerpt(stack, name))
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop_all()
        # Only a Postgres this launcher spawned: an adopted one (process None) is someone else's.
        if postgres is not None and postgres.process is not None:
            postgres.stop()
        if nats is not None:
            nats.stop()
        if lock.held:
            ledger.clear()
            lock.release()
    _say("stopped.")
    return 0


def clean_dev_state() -> int:
    """``make clean``: stop what a killed launcher left, delete the embedded Postgres' cluster
    wherever it lives (as root, possibly outside the state; only where this platform puts
    clusters), then the state directory (``PLATFORM_STATE_DIR``). Refused while a launcher
    runs on it."""
    state = load_settings(DevStackSettings).state_dir.resolve()
    if not state.exists():
        return 0
    lock = StateLock(state)
    try:
        lock.acquire()
        _stop_leftovers(ProcessLedger(state / PIDS_FILE), state)
        EmbeddedPostgres(state / "postgres").remove_data()
        shutil.rmtree(state)
    except (DevStackRefused, EmbeddedServerError, OSError) as exc:
        _complain(f"cannot remove {state}: {exc}")
        return 1
    finally:
        lock.release()
    _say(f"removed {state}")
    return 0


def _record_service(ledger: ProcessLedger, service: ServiceProcess) -> None:
    if service.process is not None:
        ledger.record(service.name, service.process.pid)


def _log_excerpt(stack: ProcessStack, name: str) -> str:
    tail = stack.log_tail(name, 5)
    return f"--- {name} (last lines of {stack.services[name].log_path}) ---\n{tail}" if tail else ""


def _supervise(stack: ProcessStack) -> None:
    """Restart a process that died, with a growing pause, until Ctrl-C; say why it died.
    Each replica is watched on its own: one that crash-loops does not delay the others."""
    while True:
        time.sleep(0.5)
        stack.supervise_once(_say)


# --- the banner ------------------------------------------------------------------------


@dataclass(frozen=True)
class BannerFacts:
    """Everything the banner tells. ``None`` means external, configured by the user, and
    not printed (its URL may carry credentials)."""

    api_url: str
    nats_url: str | None
    nats_monitoring_url: str | None
    # The seed files of the identities people use (subscriber, operator); empty: anonymous NATS.
    nats_seed_files: Mapping[str, Path]
    postgres_dsn: str | None
    remote: str | None
    state: Path
    # Ops URL of every backend process (replicas included), in the order shown.
    ops_urls: Mapping[str, str]
    # Shown only while they are the development defaults: a secret the user set stays theirs.
    jwt_secret: Secret
    approval_secret: Secret
    platformctl: str


def _platformctl_path() -> str:
    """Absolute: the banner's commands run in another terminal, in any directory."""
    return str(python_bin_dir().absolute() / "platformctl")


def _shown(secret: Secret, default: str, variable: str) -> str:
    """A development default as it is (the docs print it too); anything else by its variable only."""
    if secret.reveal() == default:
        return f"{default} (dev default)"
    return f"{secret} (your {variable})"


def render_banner(facts: BannerFacts) -> str:
    """The text printed once the stack is ready. Its "Try it" lines are a shell script
    that works as printed: they begin with ``export PLATFORM_API=...`` (platformctl and the
    curl lines read it), so a changed ``PLATFORM_ADDRESS`` is followed everywhere."""
    q = shlex.quote
    ctl = q(facts.platformctl)
    jwt_is_default = facts.jwt_secret.reveal() == DEV_JWT_SECRET
    if facts.nats_url is None:
        nats = "external (PLATFORM_NATS_URL)"
    else:
        monitoring = facts.nats_monitoring_url
        nats = f"{facts.nats_url} (embedded; monitoring {monitoring}/varz, /jsz, /healthz)"
    # Anonymous connections are refused: these seeds are how people reach the bus.
    nats_keys = "".join(f"\n    {name:12} {path}" for name, path in facts.nats_seed_files.items())
    operator_seed = facts.nats_seed_files.get(OPERATOR)
    nats_cli = (
        f"  # the bus as the operator (the nats CLI): nats --server {facts.nats_url} "
        f"--nkey {q(str(operator_seed))} --inbox-prefix {inbox_prefix(OPERATOR)} stream ls\n"
        if operator_seed is not None
        else ""
    )
    # Without --secret, platformctl takes PLATFORM_JWT_HS256_SECRET, which a user who set
    # their own secret has in their environment.
    mint_secret = f" --secret {q(DEV_JWT_SECRET)}" if jwt_is_default else ""
    postgres = (
        "external (PLATFORM_POSTGRES_DSN)"
        if facts.postgres_dsn is None
        else f"{facts.postgres_dsn} (embedded)"
    )
    remote = "external (PLATFORM_GITOPS_REPO_URL)" if facts.remote is None else facts.remote
    # Each process's log is <state>/logs/<process name>.log.
    ops = "\n".join(
        f"  {name.replace('_', '-'):22} {url:24} {name}.log" for name, url in facts.ops_urls.items()
    )
    git_log = f"  git --git-dir {q(facts.remote)} log --stat -1\n" if facts.remote is not None else ""
    return f"""
platform-control-plane is running
  API            {facts.api_url}   (OpenAPI: {facts.api_url}/schema)
  NATS           {nats}{nats_keys}
  Postgres       {postgres}
  GitOps remote  {remote}
  State, logs    {facts.state}  ({facts.state / "logs"})
  JWT secret     {_shown(facts.jwt_secret, DEV_JWT_SECRET, "PLATFORM_JWT_HS256_SECRET")}
  Approval key   {_shown(facts.approval_secret, DEV_APPROVAL_SECRET, "PLATFORM_APPROVAL_HMAC_SECRET")}

Ops ports: GET <url>/healthz, <url>/readyz, <url>/metrics; log files in {facts.state / "logs"}
  {"gateway":22} {facts.api_url:24} gateway.log (ops on the API port)
{ops}

Try it (in another terminal):
  export PLATFORM_API={facts.api_url}
  export PLATFORM_TOKEN=$({ctl} token mint --subject alice --actor alice@example.com --role requester \\
        --team payments{mint_secret})
  ID=$({ctl} request create --app payments-api --team payments --class preview --region us-east-1 \\
        --ttl 24 --owner alice@example.com --repo https://github.com/example/payments-api.git | jq -r .id)
  {ctl} request wait --id "$ID"
{git_log}{nats_cli}
  # or with curl:
  ID=$(curl -s -H "Authorization: Bearer $PLATFORM_TOKEN" -H 'Content-Type: application/json' \\
        -d '{{"app": "payments-api", "team": "payments", "class": "preview", "region": "us-east-1",
             "ttl_hours": 24, "owner": "alice@example.com",
             "repository": "https://github.com/example/payments-api.git"}}' \\
        "$PLATFORM_API/v1/environment-requests" | jq -r .id)
  curl -s -H "Authorization: Bearer $PLATFORM_TOKEN" "$PLATFORM_API/v1/environment-requests/$ID" | jq .status

Press Ctrl-C to stop."""


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run_dev_stack())
