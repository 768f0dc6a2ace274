"""``platformd dev`` (what ``make run`` runs) as a test fixture: the launcher itself, its banner
and its state directory, not a stack assembled by the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from libs.embedded import EmbeddedPostgres, free_port
from tests.support.isolation import Isolation, delete_stream, fresh_database

READY_LINE = "is running"


@dataclass(frozen=True)
class DevStack:
    api_url: str
    state_dir: Path
    log_path: Path

    def banner(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def nats_url(self) -> str:
        """The embedded NATS, as the banner names it."""
        match = re.search(r"^\s*NATS\s+(nats://\S+)", self.banner(), re.MULTILINE)
        assert match, f"no embedded NATS in the banner:\n{self.banner()}"
        return match.group(1)

    def seed_file(self, identity: str) -> Path:
        """The NKEY seed ``platformd dev`` made for ``identity`` (a service, subscriber, operator)."""
        return self.state_dir / "nats" / f"{identity}.nk"


def _launcher_environment(state_dir: Path, address: str) -> dict[str, str]:
    """This process's environment without any ``PLATFORM_*``, so the launcher uses its own
    defaults (the development secrets the docs use) unless the test servers are given."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PLATFORM_")}
    environment.update(
        PLATFORM_STATE_DIR=str(state_dir),
        PLATFORM_ADDRESS=address,
        PYTHONUNBUFFERED="1",
        # Bounded teardown of the module; what users get is the default.
        PLATFORM_SHUTDOWN_TIMEOUT_SECONDS="5",
        # Not the preferred ports (14222, 8222, 15432, 9101..9106): a developer's `make run`
        # or another launcher of a parallel test run may want them at the same moment.
        PLATFORM_DEV_NATS_PORT=str(free_port()),
        PLATFORM_DEV_NATS_HTTP_PORT=str(free_port()),
        PLATFORM_DEV_POSTGRES_PORT=str(free_port()),
        # The base and the next five; a taken one falls back to a free port.
        PLATFORM_DEV_OPS_BASE_PORT=str(min(free_port(), 65000)),
    )
    return environment


@contextlib.contextmanager
def platformd_dev(
    folder: Path,
    start_timeout: float = 120.0,
    arguments: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    embedded_nats: bool = False,
) -> Iterator[DevStack]:
    """Run ``python -m services.tools.platformd.main dev [arguments]`` with its state under ``folder``.

    With ``PLATFORM_TEST_POSTGRES_DSN`` / ``PLATFORM_TEST_NATS_URL`` set, the launcher gets a
    fresh database and a private stream and subject prefixes on those servers (faster than
    starting embedded ones); otherwise it starts its embedded servers under its state
    directory, exactly as ``make run`` does. ``embedded_nats``: the embedded NATS (with the
    platform's identities, as ``make run``) even when a test NATS is given; ``environment``
    adds settings of the launcher's (its secrets, say).
    """
    state_dir = folder / "state"
    log_path = folder / "platformd-dev.log"
    address = f"127.0.0.1:{free_port()}"
    launcher_environment = {**_launcher_environment(state_dir, address), **(environment or {})}
    admin_dsn = os.environ.get("PLATFORM_TEST_POSTGRES_DSN")
    nats_url = None if embedded_nats else os.environ.get("PLATFORM_TEST_NATS_URL")
    with contextlib.ExitStack() as cleanup:
        if admin_dsn:
            launcher_environment["PLATFORM_POSTGRES_DSN"] = cleanup.enter_context(fresh_database(admin_dsn))
        else:
            # As root the embedded cluster lives outside the state directory (under
            # /var/tmp); remove_data deletes it wherever it is, once the launcher stopped it.
            cleanup.callback(lambda: EmbeddedPostgres(state_dir / "postgres").remove_data())
        if nats_url:
            isolation = Isolation.new()
            launcher_environment.update(
                PLATFORM_NATS_URL=nats_url,
                PLATFORM_EVENTS_STREAM=isolation.stream,
                PLATFORM_EVENTS_SUBJECT_PREFIX=isolation.events_prefix,
                PLATFORM_RPC_SUBJECT_PREFIX=isolation.rpc_prefix,
            )
            cleanup.callback(lambda: asyncio.run(delete_stream(nats_url, isolation.stream)))
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.tools.platformd.main", "dev", *arguments],
                cwd=folder,
                env=launcher_environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_banner(process, log_path, start_timeout)
            yield DevStack(f"http://{address}", state_dir, log_path)
        finally:
            _stop(process)


def _wait_for_banner(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while READY_LINE not in log_path.read_text(errors="replace"):
        if process.poll() is not None:
            raise AssertionError(
                f"platformd dev exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"platformd dev not running after {timeout:.0f}s:\n{log_path.read_text()[-4000:]}"
            )
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops it; SIGKILL to the whole group if it hangs."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
