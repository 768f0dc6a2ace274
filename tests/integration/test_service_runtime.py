"""What operators see of a running service: NATS micro endpoints, ops port, graceful stop."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import httpx
import nats

from libs.embedded import free_port
from libs.settings import child_environment
from tests.support.services import running_services


async def gather_replies(nc: Any, subject: str, wait: float = 0.5) -> list[dict[str, Any]]:
    """Every answer to a NATS services discovery request (one per running instance)."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    replies = []
    try:
        while True:
            replies.append(json.loads((await subscription.next_msg(timeout=wait)).data))
    except TimeoutError:
        pass
    await subscription.unsubscribe()
    return replies


async def test_rpc_verbs_are_listed_by_the_nats_services_api(platform_env: dict[str, str]) -> None:
    """What `nats micro ls` / `nats micro info platform-intake` show to an operator."""
    async with running_services(["policy", "intake"], platform_env):
        nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
        try:
            infos = await gather_replies(nc, "$SRV.INFO.platform-intake")
            pings = [reply["name"] for reply in await gather_replies(nc, "$SRV.PING")]
        finally:
            await nc.close()
    prefix = platform_env["PLATFORM_RPC_SUBJECT_PREFIX"]
    # The NATS server may be shared with other runs: pick this test's instance by its subjects.
    ours = [i for i in infos if any(e["subject"].startswith(prefix + ".") for e in i["endpoints"])]
    assert len(ours) == 1
    info = ours[0]
    endpoints = {endpoint["name"]: endpoint["subject"] for endpoint in info["endpoints"]}
    assert info["name"] == "platform-intake"
    assert endpoints["create_request"] == f"{prefix}.intake.create_request"
    assert {"get_request", "list_requests", "list_events", "ping"} <= set(endpoints)
    assert {"platform-intake", "platform-policy"} <= set(pings)


@contextlib.contextmanager
def policy_process(environment: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``platformd policy`` as its own process (stdout and stderr in one pipe); killed on the
    way out if the test left it running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "services.tools.platformd.main", "policy"],
        env=child_environment(environment),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()


def read_through(stream: IO[str], text: str) -> str:
    """What ``stream`` printed up to the first line holding ``text`` (all of it, if none did)."""
    lines = []
    for line in stream:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_ops_port_and_graceful_shutdown(platform_env: dict[str, str]) -> None:
    port = free_port()
    with policy_process({**platform_env, "PLATFORM_HEALTH_ADDRESS": f"127.0.0.1:{port}"}) as process:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "policy did not become ready"
            time.sleep(0.1)
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "nats": "ok"}}
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        metrics = httpx.get(f"{base}/metrics").text
        assert "platform_outbox_published_total" in metrics
        assert httpx.get(f"{base}/nope").status_code == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    output = process.stdout.read() if process.stdout else ""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert "shutting down" in messages
    assert "service stopped" in messages
    assert all(line["service"] == "policy" for line in lines)
    # No DSN, host or secret in any log line.
    assert platform_env["PLATFORM_POSTGRES_DSN"] not in output
    assert "127.0.0.1" not in output


def test_sigterm_during_start_up_stops_the_service(platform_env: dict[str, str]) -> None:
    """A service still waiting for NATS must not ignore the orchestrator's SIGTERM."""
    unreachable = f"nats://127.0.0.1:{free_port()}"
    with policy_process({**platform_env, "PLATFORM_NATS_URL": unreachable}) as process:
        assert process.stdout is not None
        # A failed attempt is logged while it retries: the service is in its start-up.
        output = read_through(process.stdout, "nats connection problem")
        assert process.poll() is None, "still waiting for NATS"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        output += process.stdout.read()
    assert "start-up interrupted" in output
    assert unreachable not in output
