"""The README's ``make run`` on a fresh copy of the checkout, as a new user meets it.

No ``PLATFORM_NATS_URL`` / ``PLATFORM_POSTGRES_DSN``: the embedded servers start, so this is
how CI keeps testing the fresh-machine path. One stack (``first``) is shared by the module;
the tests that stop it come last, and each of them stops it itself if it still runs, so
any one test also runs alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.embedded import EmbeddedPostgres, free_port
from services.intake.domain.model import Status
from services.tools.platformd.dev_stack import DEV_JWT_SECRET, OPS_PORT_ORDER
from tests.support.api_flows import PREVIEW
from tests.support.make_run import (
    MakeRun,
    fresh_checkout,
    get,
    is_running,
    processes_under,
    wait_until_nothing_runs_under,
)
from tests.support.platformctl import clean_env
from tests.support.stack import mint_token

pytestmark = [
    # The printed development secret is short on purpose; strict mode refuses it.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

START_SECONDS = 150  # a first start: initdb, migrations, seven services, on a busy machine
STOP_SECONDS = 60


@pytest.fixture(scope="module")
def checkout() -> Iterator[Path]:
    # As root with this virtualenv out of nobody's reach, Postgres runs from a copy in
    # /var/tmp, a cache shared by checkouts: the suite removes the copies it made when it ends
    # (tests/conftest.py), not here, where another worker's test may be using it.
    with fresh_checkout() as folder:
        yield folder


@pytest.fixture(scope="module")
def first(checkout: Path) -> Iterator[MakeRun]:
    # No host (`:<port>`): the banner must still print a URL a client can use.
    run = MakeRun.start(checkout, f":{free_port()}")
    try:
        run.wait_for("is running", START_SECONDS)
        yield run
    finally:
        run.stop()


def _api(run: MakeRun) -> httpx.Client:
    token = mint_token("alice@example.com", "requester", ["payments"], secret=DEV_JWT_SECRET)
    return httpx.Client(
        base_url=run.banner_url("API"), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def _preview_becomes_ready(run: MakeRun) -> dict[str, Any]:
    """Create the PREVIEW request through the HTTP API and wait until it is ``ready``."""
    finished = {"ready", "failed", "rejected"}
    with _api(run) as api:
        created = api.post("/v1/environment-requests", json=PREVIEW)
        assert created.status_code == 201, created.text
        path = f"/v1/environment-requests/{created.json()['id']}"
        deadline = time.monotonic() + 60
        current: dict[str, Any] = created.json()
        while current.get("status") not in finished:
            assert time.monotonic() < deadline, f"did not finish: {current}"
            time.sleep(0.2)
            current = api.get(path).json()
    assert current["status"] == "ready", current.get("last_error")
    return current


def _git(run: MakeRun, *args: str) -> subprocess.CompletedProcess[str]:
    remote = run.state / "gitops-remote.git"
    return subprocess.run(
        ["git", "--git-dir", str(remote), *args], check=False, capture_output=True, text=True
    )


def test_a_fresh_checkout_serves_a_preview_request_end_to_end(first: MakeRun) -> None:
    api_url = first.banner_url("API")
    assert get(f"{api_url}/readyz").status_code == 200

    # The embedded NATS's monitoring port, as the banner names it.
    nats_line = first.banner_line("NATS")
    assert nats_line.startswith("nats://127.0.0.1:"), nats_line
    monitoring = nats_line.split("monitoring ", 1)[1].split("/varz", 1)[0]
    varz = get(f"{monitoring}/varz")
    assert varz.status_code == 200
    assert varz.json()["jetstream"]["config"]["store_dir"].startswith(str(first.state / "nats"))
    assert get(f"{monitoring}/jsz").status_code == 200
    assert get(f"{monitoring}/healthz").json() == {"status": "ok"}

    ready = _preview_becomes_ready(first)
    sha = str(ready["git_commit_sha"])
    assert _git(first, "cat-file", "-e", f"{sha}^{{commit}}").returncode == 0
    message = _git(first, "log", "-1", "--format=%B", sha).stdout
    assert f"Platform-Request: {ready['id']}" in message


def test_the_banner_follows_platform_address_and_names_every_port(first: MakeRun) -> None:
    api_url = first.banner_url("API")
    # PLATFORM_ADDRESS was `:<port>`: the stack listens on (and prints) 127.0.0.1.
    assert api_url.startswith("http://127.0.0.1:"), api_url
    script = first.try_it_script()
    assert script.splitlines()[0].strip() == f"export PLATFORM_API={api_url}"
    assert ":8080" not in first.output
    assert "token mint" in script
    assert "--team payments" in script
    # Every backend's ops port answers as the banner says.
    for name in OPS_PORT_ORDER:
        ops_url = first.banner_url(name.replace("_", "-"))
        assert get(f"{ops_url}/healthz").status_code == 200, name
        assert get(f"{ops_url}/readyz").status_code == 200, name
        assert "platform_" in get(f"{ops_url}/metrics").text, name
    assert first.banner_url("gateway") == api_url


@pytest.mark.skipif(shutil.which("jq") is None or shutil.which("curl") is None, reason="needs jq and curl")
def test_the_banner_commands_work_as_printed(first: MakeRun, tmp_path: Path) -> None:
    # "In another terminal": not necessarily in the checkout.
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", first.try_it_script()],
        check=False,
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(first.checkout)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "ready"' in done.stdout  # platformctl request wait
    assert "Platform-Request: req-" in done.stdout  # git log of the remote
    # The curl lines: the request just created, in any state of its way to ready.
    status = Status(json.loads(done.stdout.strip().splitlines()[-1]))
    assert status not in {Status.FAILED, Status.REJECTED}, done.stdout


def test_a_second_make_run_on_the_same_state_is_refused_and_the_first_keeps_serving(
    first: MakeRun, checkout: Path
) -> None:
    launcher = first.launcher_pid()
    servers = [p for p in first.recorded() if p["role"] in {"nats-server", "postgres"}]
    assert len(servers) == 2

    second = MakeRun.start(checkout, f"127.0.0.1:{free_port()}")
    code = second.wait_exit(60)

    assert code != 0
    assert f"{first.state} is in use by another platformd dev (pid {launcher})" in second.output
    assert "is running" not in second.output
    assert all(is_running(server) for server in servers)
    assert first.launcher_pid() == launcher
    assert get(f"{first.banner_url('API')}/readyz").status_code == 200
    _preview_becomes_ready(first)


def test_a_taken_gateway_port_fails_fast_naming_the_port(checkout: Path) -> None:
    state = checkout / "state-port-taken"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        run = MakeRun.start(checkout, f"127.0.0.1:{port}", PLATFORM_STATE_DIR=str(state))
        code = run.wait_exit(60)
        elapsed = time.monotonic() - started

    assert code != 0
    assert f"port {port} of the gateway's address 127.0.0.1:{port} is already in use" in run.output
    assert "PLATFORM_ADDRESS=" in run.output
    assert elapsed < 30, f"took {elapsed:.0f}s"
    # Refused before any server started.
    assert not (state / "nats").exists()
    assert not (state / "postgres").exists()
    assert processes_under(state) == {}


def test_a_state_that_cannot_hold_the_servers_fails_in_one_line(checkout: Path) -> None:
    state = checkout / "state-blocked"
    state.mkdir()
    (state / "nats").write_text("a file where the embedded NATS keeps its directory\n")

    run = MakeRun.start(checkout, f"127.0.0.1:{free_port()}", PLATFORM_STATE_DIR=str(state))
    code = run.wait_exit(60)

    assert code != 0
    assert "Traceback" not in run.output
    assert (
        f"platformd dev: could not start the stack: [Errno 17] File exists: '{state / 'nats'}'" in run.output
    )


def _using(state: Path, timeout: float = 20) -> dict[int, str]:
    """Processes that still run under ``state`` or hold one of its files open (a service's
    log), after waiting up to ``timeout`` for them to go."""
    deadline = time.monotonic() + timeout
    while True:
        found = processes_under(state)
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if any(os.readlink(fd).startswith(f"{state}/") for fd in (entry / "fd").iterdir()):
                    found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _postgres_under(state: Path) -> dict[int, str]:
    return {pid: command for pid, command in processes_under(state).items() if "/postgres -D" in command}


def test_ctrl_c_while_postgres_starts_stops_it_and_the_next_make_run_starts(checkout: Path) -> None:
    state = checkout / "state-interrupted"
    address = f"127.0.0.1:{free_port()}"
    run = MakeRun.start(checkout, address, PLATFORM_STATE_DIR=str(state))
    following: MakeRun | None = None
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _postgres_under(state):
            assert run.process.poll() is None, run.output
            assert time.monotonic() < deadline, run.output
            time.sleep(0.01)
        assert "starting services" not in run.output  # still starting Postgres

        run.interrupt()

        assert run.wait_exit(STOP_SECONDS) == 0, run.output
        assert run.output.rstrip().endswith("stopped.")
        assert _using(state) == {}
        following = MakeRun.start(checkout, address, PLATFORM_STATE_DIR=str(state))
        # Ctrl-C again as the services are being spawned: none of them may be left either.
        following.wait_for("starting services", START_SECONDS)
        following.interrupt()
        assert following.wait_exit(STOP_SECONDS) == 0, following.output
        assert _using(state) == {}
    finally:
        run.stop()
        if following is not None:
            following.stop()


def _make_clean(checkout: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """``make clean`` with a stand-in virtualenv (it is deleted) whose python is this one."""
    venv = Path(tempfile.mkdtemp(prefix="pcp-clean-venv-"))
    (venv / "bin").mkdir()
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    try:
        return subprocess.run(
            ["make", "--no-print-directory", "clean", f"VENV={venv}"],
            cwd=checkout,
            env=clean_env(PYTHONPATH=str(checkout), **extra_env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_make_clean_does_not_delete_what_a_forged_data_location_names() -> None:
    with fresh_checkout() as other, tempfile.TemporaryDirectory() as precious:
        (Path(precious) / "work.txt").write_text("keep me\n")
        record = other / "state" / "postgres" / "data-location"
        record.parent.mkdir(parents=True)
        record.write_text(f"{precious}\n")

        done = _make_clean(other)

        assert done.returncode != 0
        assert f"names {precious!r}, which is not a directory this platform creates" in done.stderr
        assert (Path(precious) / "work.txt").read_text() == "keep me\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root keeps the cluster outside the state directory")
def test_make_clean_removes_a_cluster_kept_outside_the_state() -> None:
    with fresh_checkout() as other, tempfile.TemporaryDirectory() as private:
        # A state directory `nobody` cannot enter: the cluster lives under /var/tmp.
        state = Path(private) / "state"
        server = EmbeddedPostgres(state / "postgres", fast_unsafe=True)
        server.start()
        server.stop()
        location = server.data_location()
        assert not location.is_relative_to(state)
        try:
            done = _make_clean(other, PLATFORM_STATE_DIR=str(state))

            assert done.returncode == 0, done.stdout + done.stderr
            assert not location.exists()
            assert not state.exists()
        finally:
            if state.exists():
                server.remove_data()


def test_ctrl_c_stops_everything_make_run_started(first: MakeRun, checkout: Path) -> None:
    started = first.recorded()
    assert {p["role"] for p in started} >= {"nats-server", "postgres", *OPS_PORT_ORDER, "gateway"}
    launcher = first.launcher_pid()

    first.interrupt()

    assert first.wait_exit(STOP_SECONDS) == 0, first.output
    assert first.output.rstrip().endswith("stopped.")
    assert not Path(f"/proc/{launcher}").exists()
    assert [p["role"] for p in started if is_running(p)] == []
    assert wait_until_nothing_runs_under(checkout) == {}
    assert not (first.state / "platformd.pids").exists()


def test_the_next_make_run_stops_what_a_killed_launcher_left(first: MakeRun, checkout: Path) -> None:
    first.stop()
    address = f"127.0.0.1:{free_port()}"
    killed = MakeRun.start(checkout, address)
    try:
        killed.wait_for("is running", START_SECONDS)
        left = killed.recorded()
        launcher = killed.launcher_pid()
        assert [p["role"] for p in left if not is_running(p)] == [], log_tails(killed, left)
        subprocess.run(["kill", "-KILL", str(launcher)], check=True)
        killed.wait_exit(30)
        # They outlive their launcher.
        assert [p["role"] for p in left if not is_running(p)] == [], log_tails(killed, left)

        following = MakeRun.start(checkout, address)
        try:
            following.wait_for("is running", START_SECONDS)
            notice = f"An earlier platformd dev on {following.state} (pid {launcher}) is gone"
            assert notice in following.output
            assert all(f"{p['role']} (pid {p['pid']})" in following.output for p in left)
            assert [p["role"] for p in left if is_running(p)] == []
            assert get(f"{following.banner_url('API')}/readyz").status_code == 200

            following.interrupt()
            assert following.wait_exit(STOP_SECONDS) == 0, following.output
            assert wait_until_nothing_runs_under(checkout) == {}
        finally:
            following.stop()
    finally:
        killed.stop()


def log_tails(run: MakeRun, processes: list[dict[str, object]]) -> str:
    """The last log lines of every recorded process that is no longer running."""
    tails = []
    for process in processes:
        if is_running(process):
            continue
        log = run.state / "logs" / f"{process['role']}.log"
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        tails.append(f"--- {process['role']}:\n" + "\n".join(text.splitlines()[-15:]))
    return "\n".join(tails)
