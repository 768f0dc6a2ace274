"""Dry-run plans and budgets on the whole stack (seven processes, real git): what the plan
shows is, byte for byte, what the real request commits, and the dry run leaves no trace."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import nats

from services.tools.platformd.registry import BACKEND_SERVICES
from tests.support.isolation import row_counts
from tests.support.platformctl import clean_env, run_platformctl
from tests.support.stack import RunningStack, mint_token

SCHEMAS = BACKEND_SERVICES
CREATE = (
    "request", "create", "--app", "checkout", "--team", "payments", "--class", "preview",
    "--region", "us-east-1", "--ttl", "24", "--owner", "alice@example.com",
    "--repo", "https://github.com/example/checkout.git", "--revision", "pr-7", "--labels", "pr=7",
)  # fmt: skip


def platformctl(
    stack: RunningStack, *args: str, actor: str, role: str, teams: list[str] | None = None
) -> Any:
    env = clean_env(PLATFORM_API=stack.api_url, PLATFORM_TOKEN=mint_token(actor, role, teams))
    result = run_platformctl(*args, env=env, timeout=60)
    assert result.code == 0, result.stderr
    return result.json()


def traces(stack: RunningStack, env: dict[str, str]) -> tuple[dict[str, int], int]:
    """Rows in every table of every service, and the event stream's last sequence."""

    async def last_sequence() -> int:
        nc = await nats.connect(env["PLATFORM_NATS_URL"])
        try:
            info = await nc.jetstream().stream_info(env["PLATFORM_EVENTS_STREAM"])
            return int(info.state.last_seq)
        finally:
            await nc.close()

    return row_counts(stack.dsn, SCHEMAS), asyncio.run(last_sequence())


def test_the_dry_run_shows_exactly_what_the_real_request_commits(
    stack: RunningStack, stack_env: dict[str, str]
) -> None:
    platformctl(
        stack,
        "teams",
        "set-budget",
        "--team",
        "payments",
        "--monthly-usd",
        "1000",
        actor="root@example.com",
        role="admin",
    )
    with stack.client() as api:
        warm = api.post("/v1/environment-requests", json={**_body(), "app": "warm-up"})
        assert warm.status_code == 201
        stack.wait_for_status(api, warm.json()["id"], {"ready"})  # the stack is busy with nothing else now

    before = traces(stack, stack_env)
    plan = platformctl(
        stack, *CREATE, "--idempotency-key", "checkout-pr-7", "--dry-run",
        actor="alice@example.com", role="requester", teams=["payments"],
    )  # fmt: skip
    assert traces(stack, stack_env) == before

    assert plan["decision"]["outcome"] == "allowed"
    assert plan["budget"]["active_spend_usd"] == 150.0  # the warm-up environment
    assert plan["budget"]["projected_spend_usd"] == 300.0
    manifests = plan["manifests"]

    created = platformctl(
        stack, *CREATE, "--idempotency-key", "checkout-pr-7",
        actor="alice@example.com", role="requester", teams=["payments"],
    )  # fmt: skip
    assert created["id"] == plan["request_id"]
    with stack.client() as api:
        ready = stack.wait_for_status(api, created["id"], {"ready", "failed", "rejected"})
    assert ready["status"] == "ready", ready.get("last_error")
    assert ready["gitops_path"] == manifests["gitops_path"]

    committed = stack.git("ls-tree", "--name-only", f"main:{manifests['gitops_path']}").split()
    assert manifests["files"], "the plan renders no files"
    assert sorted(committed) == sorted(file["name"] for file in manifests["files"])
    for file in manifests["files"]:
        content = subprocess.run(
            [
                "git",
                "--git-dir",
                str(stack.remote),
                "show",
                f"main:{manifests['gitops_path']}/{file['name']}",
            ],
            capture_output=True,
            check=True,
        ).stdout
        assert content == file["content"].encode(), file["name"]

    team = platformctl(stack, "teams", "get", "--team", "payments", actor="vic@example.com", role="viewer")
    assert team["spend_usd"] == 300.0
    assert sorted(e["request_id"] for e in team["active_environments"]) == sorted(
        [warm.json()["id"], created["id"]]
    )


def _body() -> dict[str, Any]:
    return {
        "app": "checkout",
        "team": "payments",
        "class": "preview",
        "region": "us-east-1",
        "ttl_hours": 24,
        "owner": "alice@example.com",
        "repository": "https://github.com/example/checkout.git",
    }
