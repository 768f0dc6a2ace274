"""The GitOps remote unreachable for a while under load costs time, never a request.

The remote is a bare repository on disk; moving its directory away makes every fetch and
push fail like an unreachable server does (git: "does not appear to be a git repository").
While it is away a client keeps creating preview requests: the gateway stays ready, every
create is accepted, and the waiting requests show the last error and when the next attempt
is due. Once the directory is back, every request ends ``ready`` with exactly one commit,
with no operator action. The outage lasts ``PLATFORM_GIT_OUTAGE_SECONDS`` (20 s in ``make
test``; ``make chaos`` runs it for two minutes). The retry settings are the production
rule with short backoffs: three ordinary attempts (an outage used to fail every request
after them), transient failures retried for the retry window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fault_load import create_with_retries, without_team_limits
from tests.support.stack import RunningStack

OUTAGE_SECONDS = float(os.environ.get("PLATFORM_GIT_OUTAGE_SECONDS", "20"))


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    return {
        "PLATFORM_RECONCILE_MAX_ATTEMPTS": "3",
        "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS": "0.2",
        "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS": "2",
    }


@pytest.fixture
def moved_away(stack: RunningStack) -> Iterator[Path]:
    """Where the remote's directory goes during the outage; it is always put back."""
    away = stack.remote.with_name(stack.remote.name + ".away")
    yield away
    if away.exists() and not stack.remote.exists():
        away.rename(stack.remote)


def preview(n: int) -> dict[str, object]:
    return {
        "app": f"outage-app-{n}",
        "team": "payments",
        "class": "preview",
        "region": "us-east-1",
        "ttl_hours": 4,
        "owner": "alice@example.com",
        "repository": "https://github.com/example/app.git",
    }


def test_a_remote_outage_under_load_costs_only_time(stack: RunningStack, moved_away: Path) -> None:
    with stack.client() as api, httpx.Client(base_url=stack.api_url, timeout=5) as probe:
        without_team_limits(stack)
        warm = create_with_retries(api, preview(0), "outage-0", time.monotonic() + 30)
        assert stack.wait_for_status(api, warm, {"ready", "failed"}, timeout=60)["status"] == "ready"

        stack.remote.rename(moved_away)
        ids: list[str] = []
        readiness: list[int] = []
        waiting_seen: dict[str, object] | None = None
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        n = 1
        while time.monotonic() < outage_ends:
            response = api.post("/v1/environment-requests", json=preview(n))
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
            readiness.append(probe.get("/readyz").status_code)
            if waiting_seen is None:
                current = api.get(f"/v1/environment-requests/{ids[0]}").json()
                if current.get("next_attempt_at"):
                    waiting_seen = current
            n += 1
            time.sleep(1.0)
        moved_away.rename(stack.remote)

        assert ids, "requests were created during the outage"
        assert readiness, "the gateway was probed during the outage"
        assert set(readiness) == {200}, readiness
        assert waiting_seen is not None, "a waiting request shows its next attempt"
        assert waiting_seen["status"] in {"queued", "reconciling"}
        assert waiting_seen["last_error"], waiting_seen
        final = [stack.wait_for_status(api, rid, {"ready", "failed"}, timeout=120) for rid in ids]

    assert [request["status"] for request in final] == ["ready"] * len(ids), [
        request.get("last_error") for request in final
    ]
    for request in final:
        assert request["last_error"] is None
        assert request["next_attempt_at"] is None
        assert stack.commits_for(request["id"]) == [request["git_commit_sha"]]
