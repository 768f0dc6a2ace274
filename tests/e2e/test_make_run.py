"""The README's ``make run`` on a fresh copy of the checkout, as a new user meets it.

No ``PLATFORM_NATS_URL`` / ``PLATFORM_POSTGRES_DSN``: the embedded servers start, so this is
how CI keeps testing the fresh-machine path. One stack (``first``) is shared by the module;
the tests that stop it come last, and each of them stops it itself if it still runs, so
any one test also runs alone.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from libs.embedded import free_port
from services.platformd.dev_stack import DEV_JWT_SECRET, OPS_PORT_ORDER
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
    pytest.mark.e2e,
    # The printed development secret is short on purpose; strict mode refuses it.
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
]

START_SECONDS = 150  # a first start: initdb, migrations, seven services, on a busy machine
STOP_SECONDS = 60


@pytest.fixture(scope="module")
def checkout() -> Iterator[Path]:
    with fresh_checkout() as folder:
        yield folder


@pytest.fixture(scope="module")
def first(checkout: Path) -> Iterator[MakeRun]:
    run = MakeRun.start(checkout, f"127.0.0.1:{free_port()}")
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
def test_the_banner_commands_work_as_printed(first: MakeRun) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", first.try_it_script()],
        check=False,
        cwd=first.checkout,
        env=clean_env(PYTHONPATH=str(first.checkout)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"status": "ready"' in done.stdout  # platformctl request wait
    assert "Platform-Request: req-" in done.stdout  # git log of the remote
    assert done.stdout.strip().splitlines()[-1] in {'"submitted"', '"queued"', '"ready"'}  # the curl lines


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
        subprocess.run(["kill", "-KILL", str(launcher)], check=True)
        killed.wait_exit(30)
        assert [p["role"] for p in left if not is_running(p)] == []  # they outlive their launcher

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
