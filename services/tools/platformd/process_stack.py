"""The seven services as separate child processes: used by ``platformd dev`` and by the
end-to-end and fault-injection tests, so both run the system the same way.

Every backend service may run as several processes (replicas) side by side, as it does in
production; the gateway always runs once. A process is named after its service, or
``<service>-<n>`` (``intake-2``) when its service has replicas; its log file and ops port
are its own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from libs.embedded import free_port
from libs.settings import child_environment
from services.tools.platformd.registry import BACKEND_SERVICES, SERVICES, own_secrets, platform_secrets

# Settings that name a directory a process keeps for itself. Replicas must not share one:
# two git-publishers in one working repository would overwrite each other's index, refs
# and batch state. Each replica gets the value with ``-<n>`` appended.
PER_PROCESS_PATHS = ("PLATFORM_GITOPS_REPO_PATH",)
# platformd's exit code for a refused configuration (or usage): starting it again cannot help.
CONFIGURATION_REFUSED = 2
MAX_RESTART_PAUSE_SECONDS = 10


def process_name(service: str, replica: int, replicas: int) -> str:
    """``intake`` for a service running once, ``intake-1`` .. ``intake-<n>`` for its replicas."""
    return service if replicas == 1 else f"{service}-{replica}"


@dataclass
class ServiceProcess:
    name: str
    service: str
    replica: int
    ops_port: int
    log_path: Path
    # What this process gets on top of the stack's environment (its own paths).
    environment: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    # When the supervisor will start it again (monotonic clock); None while it runs.
    restart_at: float | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ProcessStack:
    """Launches each process as ``python -m services.tools.platformd.main <service>``.

    ``environment`` is shared by all services (database, NATS, stream, secrets), less the
    secrets a service's settings do not declare (:func:`secrets_of_its_own`); each process
    also gets its own ops port, its own copy of :data:`PER_PROCESS_PATHS`, and the gateway
    ``PLATFORM_ADDRESS``.
    """

    environment: Mapping[str, str]
    log_dir: Path
    gateway_address: str = "127.0.0.1:8080"
    # Per-service additions, e.g. one database role per service (shared by its replicas).
    service_environment: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Ops port per process name; a process not named here gets a free port.
    ops_ports: Mapping[str, int] = field(default_factory=dict)
    # Processes of every backend service; the gateway runs once.
    replicas: int = 1
    # Called after every start of a process (e.g. to record its pid).
    on_start: Callable[[ServiceProcess], None] | None = None
    # Held while a process is spawned and recorded: platformd dev defers Ctrl-C inside it,
    # since an interrupted Popen leaves a running child whose pid nobody holds.
    spawning: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            count = self.replicas if service in BACKEND_SERVICES else 1
            for replica in range(1, count + 1):
                name = process_name(service, replica, count)
                port = self.ops_ports.get(name) or free_port()
                own = self._own_paths(service, replica) if count > 1 else {}
                self.services[name] = ServiceProcess(
                    name, service, replica, port, self.log_dir / f"{name}.log", own
                )

    def _own_paths(self, service: str, replica: int) -> dict[str, str]:
        shared = {**self.environment, **self.service_environment.get(service, {})}
        return {key: f"{shared[key]}-{replica}" for key in PER_PROCESS_PATHS if shared.get(key)}

    @property
    def api_url(self) -> str:
        return f"http://{self.gateway_address}"

    def replicas_of(self, service: str) -> list[str]:
        """The names of ``service``'s processes, in replica order."""
        return [name for name, process in self.services.items() if process.service == service]

    def ops_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].ops_port}"

    def start(self, name: str) -> None:
        service = self.services[name]
        if not _can_listen(service.ops_port):
            # Taken since it was chosen (a free port from the ephemeral range can become any
            # process's outgoing connection): the process would only fail to bind it.
            taken, service.ops_port = service.ops_port, free_port()
            with service.log_path.open("a") as note:
                note.write(f"platformd: ops port {taken} is taken; {name} listens on {service.ops_port}\n")
        overrides = {
            **self.environment,
            **self.service_environment.get(service.service, {}),
            **service.environment,
            "PLATFORM_HEALTH_ADDRESS": f"127.0.0.1:{service.ops_port}",
            "PLATFORM_ADDRESS": self.gateway_address,
            "PYTHONUNBUFFERED": "1",
        }
        with service.log_path.open("ab") as log, self.spawning():
            service.process = subprocess.Popen(
                [sys.executable, "-m", "services.tools.platformd.main", service.service],
                env=secrets_of_its_own(service.service, child_environment(overrides)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Own process group: Ctrl-C in the terminal reaches the launcher, which then
                # stops every child in order instead of all of them at once.
                start_new_session=True,
            )
            service.restart_at = None
            if self.on_start is not None:
                self.on_start(service)

    def start_all(self) -> None:
        for name in self.services:
            self.start(name)

    def stop(self, name: str, timeout: float = 20.0) -> None:
        """Graceful stop (SIGTERM: drain in-flight work), then SIGKILL after ``timeout``."""
        process = self.services[name].process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self, name: str) -> None:
        """SIGKILL: the crash the outbox/inbox design must survive."""
        process = self.services[name].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.services[name].restarts += 1
        self.start(name)

    def stop_all(self, timeout: float = 20.0) -> None:
        # Gateway first so no new work arrives while the workers drain.
        order = sorted(self.services.values(), key=lambda process: process.service != "gateway")
        for service in order:
            if service.running:
                assert service.process is not None
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in order:
            if service.process is None:
                continue
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()

    def dead_services(self) -> list[str]:
        return [name for name, service in self.services.items() if service.process and not service.running]

    def wait_ready(
        self,
        timeout: float = 60.0,
        names: Iterable[str] | None = None,
        start_attempts: int = 1,
        report: Callable[[str], None] | None = None,
    ) -> None:
        """Block until every named process (a service's name stands for all its replicas;
        default: all) answers ``/readyz`` with 200.

        A process that exits before it is ready is started again, up to ``start_attempts``
        starts in all, after a pause that doubles each time (1 s, 2 s, 4 s, ...): a broker
        still electing its leaders, or a database that is still starting, is no reason to
        give up on the whole stack. ``report`` is told why each time. A process that exits
        with code 2 (its configuration is refused) is not started again, as the next start
        would be refused the same way.

        Raises RuntimeError when a process exited with no start left, TimeoutError at the
        deadline.
        """
        deadline = time.monotonic() + timeout
        pending = set(self._expand(names))
        starts = dict.fromkeys(pending, 1)
        again_at: dict[str, float] = {}
        while pending:
            for name in sorted(pending):
                if not self.services[name].running:
                    self._start_again_later(name, starts, again_at, start_attempts, report)
                    continue
                url = f"{self.api_url}/readyz" if name == "gateway" else f"{self.ops_url(name)}/readyz"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=2).status_code == 200:
                        pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
            if pending:
                time.sleep(0.2)

    def _expand(self, names: Iterable[str] | None) -> list[str]:
        if names is None:
            return list(self.services)
        expanded: list[str] = []
        for name in names:
            expanded.extend([name] if name in self.services else self.replicas_of(name))
        return expanded

    def _start_again_later(
        self,
        name: str,
        starts: dict[str, int],
        again_at: dict[str, float],
        start_attempts: int,
        report: Callable[[str], None] | None,
    ) -> None:
        """``wait_ready``'s part for a process that is not running: schedule, or make, its next start."""
        if name in again_at:
            if time.monotonic() >= again_at[name]:
                del again_at[name]
                starts[name] += 1
                self.start(name)
            return
        service = self.services[name]
        refused = service.process is not None and service.process.returncode == CONFIGURATION_REFUSED
        if refused or starts[name] >= start_attempts:
            raise RuntimeError(f"{name} exited during start-up; see {service.log_path}")
        pause = 2 ** (starts[name] - 1)
        if report is not None:
            report(
                f"{self.exit_report(name)}\n  starting {name} again in {pause}s "
                f"(start {starts[name] + 1} of {start_attempts})"
            )
        again_at[name] = time.monotonic() + pause

    def supervise_once(self, report: Callable[[str], None]) -> list[str]:
        """One pass of the supervisor; returns the names it started.

        A process found dead is started again after a pause that grows with its restarts
        (1 s, 2 s, ... up to 10 s), so one that dies at once does not spin; ``report`` says
        why it died. Call it every second or so.
        """
        started = []
        now = time.monotonic()
        for name in self.dead_services():
            service = self.services[name]
            if service.restart_at is None:
                pause = min(MAX_RESTART_PAUSE_SECONDS, 1 + service.restarts)
                service.restart_at = now + pause
                report(f"{self.exit_report(name)}\n  restarting {name} in {pause}s")
            elif now >= service.restart_at:
                service.restarts += 1
                self.start(name)
                started.append(name)
        return started

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.services[name].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def exit_report(self, name: str, lines: int = 5) -> str:
        """Why ``name`` stopped, as a person reads it: its exit status and the last lines of its log."""
        service = self.services[name]
        code = service.process.returncode if service.process is not None else None
        if code is None:
            status = "exited"
        elif code < 0:
            status = f"was killed by {_signal_name(-code)}"
        else:
            status = f"exited with code {code}"
        tail = [_readable_log_line(line) for line in self.log_tail(name, lines).splitlines()]
        if not tail:
            return f"{name} {status} (its log {service.log_path} is empty)"
        shown = "\n".join(f"    {line}" for line in tail)
        return f"{name} {status}; last lines of {service.log_path}:\n{shown}"


def secrets_of_its_own(service: str, environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` without the secrets ``service``'s settings do not declare.

    The stack's environment and the launcher's own hold every service's secrets; a process
    gets only those of its settings class (derived from it, so a new secret setting needs
    no list here), and no ``<NAME>_FILE`` of any other: the gateway never sees the approval
    secret or the database DSN. A ``<NAME>_FILE`` beside ``<NAME>`` is dropped too: the
    launcher read the file and passes the value, and a service refuses both at once.
    """
    own = own_secrets(service.replace("-", "_"))
    foreign = platform_secrets() - own
    dropped = (
        foreign
        | {f"{name}_FILE" for name in foreign}
        | {f"{name}_FILE" for name in own if name in environment}
    )
    return {key: value for key, value in environment.items() if key not in dropped}


def _can_listen(port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn binds: a connection in TIME_WAIT does not make the port unusable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _readable_log_line(line: str) -> str:
    """A service's JSON log line as ``level message (error type)``; other lines unchanged."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "message" not in record:
        return line
    error = f" ({record['error_type']})" if record.get("error_type") else ""
    return f"{record.get('level', '')}: {record['message']}{error}"


def git_init_bare(path: Path, branch: str = "main") -> None:
    if (path / "HEAD").exists():
        return
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--initial-branch={branch}", str(path)],
        check=True,
        env=child_environment({"GIT_TERMINAL_PROMPT": "0"}),
    )


def python_bin_dir() -> Path:
    return Path(sys.executable).parent
