"""A service killed with SIGKILL while requests are in flight loses nothing and duplicates nothing.

For each backend service in turn: a client keeps submitting preview requests, the service
is SIGKILLed in the middle of the stream (so it dies with work half done), and restarted
a second later. Every request must end ``ready`` with exactly one commit in the GitOps
remote, and no request may exist twice. The outbox (nothing published before commit),
the inbox (redeliveries are no-ops), acks after commit and the client's Idempotency-Key
retries are what make this hold.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.tools.platformd.registry import BACKEND_SERVICES
from tests.support.fault_load import create_with_retries, without_team_limits
from tests.support.stack import RunningStack

BURST = 30


@pytest.mark.parametrize("victim", BACKEND_SERVICES)
def test_sigkill_mid_stream_loses_and_duplicates_nothing(stack: RunningStack, victim: str) -> None:
    app_prefix = f"{victim.replace('_', '-')}-app"
    half_submitted = threading.Event()
    submitted = 0
    lock = threading.Lock()

    with stack.client() as api:
        without_team_limits(stack)

        def submit(n: int) -> str:
            nonlocal submitted
            body = {
                "app": f"{app_prefix}-{n}",
                "team": "payments",
                "class": "preview",
                "region": "us-west-2",
                "ttl_hours": 4,
                "owner": "alice@example.com",
                "repository": "https://github.com/example/app.git",
            }
            request_id = create_with_retries(api, body, f"{victim}-{n}", time.monotonic() + 60)
            with lock:
                submitted += 1
                if submitted >= BURST // 2:
                    half_submitted.set()
            time.sleep(0.05)  # a steady stream rather than one spike
            return request_id

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(submit, n) for n in range(BURST)]
            assert half_submitted.wait(30)
            stack.processes.kill(victim)
            time.sleep(1.0)  # the rest of the platform keeps working and queueing meanwhile
            stack.processes.start(victim)
            ids = [future.result() for future in futures]
        stack.processes.wait_ready(names=(victim,), timeout=60)

        final = [
            stack.wait_for_status(api, request_id, {"ready", "failed", "rejected"}, timeout=90)
            for request_id in ids
        ]
        listed = api.get("/v1/environment-requests", params={"team": "payments", "limit": 200}).json()[
            "items"
        ]

    assert [request["status"] for request in final] == ["ready"] * BURST, [r.get("last_error") for r in final]
    mine = [item for item in listed if item["app"].startswith(app_prefix + "-")]
    assert len(mine) == BURST, "a retried create produced a duplicate request"
    for request in final:
        assert stack.commits_for(request["id"]) == [request["git_commit_sha"]]
