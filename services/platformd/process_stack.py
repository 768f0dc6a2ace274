"""The seven services as separate child processes: used by ``platformd dev`` and by the
end-to-end and fault-injection tests, so both run the system the same way.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from libs.embedded import free_port
from libs.settings import child_environment
from services.platformd.registry import BACKEND_SERVICES, SERVICES


@dataclass
class ServiceProcess:
    name: str
    ops_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ProcessStack:
    """Launches each service as ``python -m services.platformd.main <service>``.

    ``environment`` is shared by all services (database, NATS, stream, secrets); each
    service also gets its own ops port, and the gateway ``PLATFORM_ADDRESS``.
    """

    environment: Mapping[str, str]
    log_dir: Path
    gateway_address: str = "127.0.0.1:8080"
    # Per-service additions, e.g. one database role per service.
    service_environment: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Ops port per service; a service not named here gets a free port.
    ops_ports: Mapping[str, int] = field(default_factory=dict)
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            port = self.ops_ports.get(name) or free_port()
            self.services[name] = ServiceProcess(name, port, self.log_dir / f"{name}.log")

    @property
    def api_url(self) -> str:
        return f"http://{self.gateway_address}"

    def ops_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.services[name].ops_port}"

    def start(self, name: str) -> None:
        service = self.services[name]
        overrides = {
            **self.environment,
            **self.service_environment.get(name, {}),
            "PLATFORM_HEALTH_ADDRESS": f"127.0.0.1:{service.ops_port}",
            "PLATFORM_ADDRESS": self.gateway_address,
            "PYTHONUNBUFFERED": "1",
        }
        log = service.log_path.open("ab")
        service.process = subprocess.Popen(
            [sys.executable, "-m", "services.platformd.main", name],
            env=child_environment(overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group: Ctrl-C in the terminal reaches the launcher, which then
            # stops every child in order instead of all of them at once.
            start_new_session=True,
        )
        log.close()

    def start_all(self) -> None:
        for name in SERVICES:
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
        order = ["gateway", *[name for name in BACKEND_SERVICES if name != "gateway"]]
        for name in order:
            process = self.services[name].process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in order:
            process = self.services[name].process
            if process is None:
                continue
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def dead_services(self) -> list[str]:
        return [name for name, service in self.services.items() if service.process and not service.running]

    def wait_ready(self, timeout: float = 60.0, names: tuple[str, ...] = SERVICES) -> None:
        """Block until every named service answers ``/readyz`` with 200."""
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending:
            for name in sorted(pending):
                if not self.services[name].running:
                    raise RuntimeError(f"{name} exited during start-up; see {self.services[name].log_path}")
                url = f"{self.api_url}/readyz" if name == "gateway" else f"{self.ops_url(name)}/readyz"
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url, timeout=2).status_code == 200:
                        pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
            if pending:
                time.sleep(0.2)

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
