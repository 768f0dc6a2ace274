"""``make run`` as a new user meets it: a fresh copy of the checkout, no terminal, no
``PLATFORM_*`` settings of the developer's, observed through what it prints, what it
records in its state directory and what /proc shows.

The copy runs against the virtualenv that runs the tests (``make run VENV=...``); the
install step is marked up to date (``make -o <stamp>``) and :func:`make_run_command`
refuses to go on if ``make`` would still install anything, so a test can never reinstall
the shared virtualenv from the copy. ``PYTHONPATH`` points at the copy, so the launcher and
the services import the copy's code, not the checkout the virtualenv was installed from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.platformctl import clean_env

REPOSITORY = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def copy_checkout(destination: Path) -> None:
    """The committed and working-tree files (what ``git ls-files -co --exclude-standard``
    lists: no virtualenv, no state, no caches), with their modification times."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPOSITORY / name
        if not source.is_file():
            continue  # deleted in the working tree, not yet committed
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


@contextlib.contextmanager
def fresh_checkout() -> Iterator[Path]:
    """A copy of the checkout in a directory every user can enter (the embedded Postgres
    runs as ``nobody`` when the tests run as root); removed afterwards with whatever it
    still runs."""
    folder = Path(tempfile.mkdtemp(prefix="pcp-make-run-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        copy_checkout(folder)
        yield folder
    finally:
        stop_everything_under(folder)
        shutil.rmtree(folder, ignore_errors=True)


def make_run_command(checkout: Path) -> list[str]:
    """``make run`` on the copy with the tests' virtualenv, after checking (``make -n``)
    that it would run platformd and install nothing."""
    command = ["make", "--no-print-directory", "run", f"VENV={VENV}", "-o", str(VENV / ".installed")]
    planned = subprocess.run(
        [*command, "--dry-run"],
        check=False,
        cwd=checkout,
        env=_environment(checkout),
        capture_output=True,
        text=True,
    )
    if (
        planned.returncode != 0
        or "pip" in planned.stdout
        or "services.tools.platformd.main dev" not in planned.stdout
    ):
        raise AssertionError(
            "`make run` in a copy of the checkout would not just start platformd (it must not "
            f"reinstall the shared virtualenv {VENV}):\n{planned.stdout}{planned.stderr}"
        )
    return command


def _environment(checkout: Path, **extra: str) -> dict[str, str]:
    environment = clean_env(PYTHONPATH=str(checkout), **extra)
    for variable in MAKE_VARIABLES:
        environment.pop(variable, None)  # a `make test` around pytest must not leak its flags
    return environment


@dataclass
class MakeRun:
    """One ``make run`` in the background, its output going to a file."""

    checkout: Path
    state: Path
    process: subprocess.Popen[bytes]
    output_path: Path

    @classmethod
    def start(cls, checkout: Path, address: str, **extra_env: str) -> MakeRun:
        state = Path(extra_env.get("PLATFORM_STATE_DIR", checkout / "state"))
        environment = _environment(checkout, PLATFORM_ADDRESS=address, **extra_env)
        descriptor, name = tempfile.mkstemp(prefix="make-run-", suffix=".out", dir=checkout)
        os.close(descriptor)
        output_path = Path(name)
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                make_run_command(checkout),
                cwd=checkout,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Like a terminal's job: its own process group, which Ctrl-C would reach.
                start_new_session=True,
            )
        return cls(checkout, state, process, output_path)

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"make run exited ({self.process.returncode}) without printing {text!r}:\n{self.output}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"make run did not print {text!r} within {timeout:.0f}s:\n{self.output}")
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"make run still runs after {timeout:.0f}s:\n{self.output}") from None

    def banner_line(self, label: str) -> str:
        """The rest of the banner line that begins with ``label``."""
        match = re.search(rf"^\s*{re.escape(label)}\s+(.*)$", self.output, re.MULTILINE)
        assert match, f"no {label!r} line in:\n{self.output}"
        return match.group(1)

    def banner_url(self, label: str) -> str:
        match = re.search(r"(?:https?|nats)://[^\s/]+", self.banner_line(label))
        assert match, f"no URL on the {label!r} line"
        return match.group(0)

    def try_it_script(self) -> str:
        """The banner's "Try it" lines (a shell script, as printed)."""
        match = re.search(r"^Try it.*?\n(.*?)\n\s*\nPress Ctrl-C", self.output, re.MULTILINE | re.DOTALL)
        assert match, f"no 'Try it' section in:\n{self.output}"
        return match.group(1)

    def launcher_pid(self) -> int:
        return int((self.state / "platformd.lock").read_text())

    def recorded(self) -> list[dict[str, Any]]:
        """The processes the launcher says it started (``<state>/platformd.pids``)."""
        processes: list[dict[str, Any]] = json.loads((self.state / "platformd.pids").read_text())["processes"]
        return processes

    def interrupt(self) -> None:
        """Ctrl-C as the launcher gets it (make, also in the terminal's group, then waits
        for it and exits with its code)."""
        os.kill(self.launcher_pid(), signal.SIGINT)

    def stop(self) -> None:
        """Ctrl-C if it still runs; then make sure nothing of it is left."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.interrupt()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def is_running(recorded: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (same pid and start time; the recorded command
    line may be the launcher's, read between the fork and the exec)."""
    try:
        stat = Path(f"/proc/{recorded['pid']}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return fields[0] != "Z" and int(fields[19]) == recorded["start_time"]


def processes_under(folder: Path) -> dict[int, str]:
    """Live processes whose command line names ``folder`` or whose working directory is in
    it (the services run from the checkout, Postgres from its data directory)."""
    found = {}
    prefix = str(folder)
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cwd = os.readlink(entry / "cwd")
            if prefix in command or cwd == prefix or cwd.startswith(prefix + "/"):
                found[pid] = command
    return found


def wait_until_nothing_runs_under(folder: Path, timeout: float = 20) -> dict[int, str]:
    """Poll until no process runs under ``folder``; returns what still runs at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := processes_under(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def stop_everything_under(folder: Path) -> None:
    """Clean-up after a failed test: SIGTERM (SIGINT for Postgres), then SIGKILL."""
    for pid, command in processes_under(folder).items():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT if "postgres" in command else signal.SIGTERM)
    for pid in wait_until_nothing_runs_under(folder, timeout=20):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=5)
