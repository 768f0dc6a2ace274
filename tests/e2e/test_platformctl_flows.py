"""The README flows driven with platformctl only (the installed console script), against the
real stack: mint tokens, create, approve with a signature, reconcile, wait until ready;
reject, extend, delete; follow events; list and replay dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import nats
import pytest
import yaml

from tests.support.isolation import TEST_APPROVAL_SECRET, TEST_JWT_SECRET
from tests.support.platformctl import Result, clean_env, run_platformctl
from tests.support.stack import RunningStack


def cli(*args: str, token: str | None = None, timeout: float = 90, **env: str) -> Result:
    """Run platformctl with pipes (as a script would) and only the variables given."""
    if token is not None:
        env["PLATFORM_TOKEN"] = token
    return run_platformctl(*args, env=clean_env(**env), timeout=timeout)


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("platformctl: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def api(stack: RunningStack) -> dict[str, str]:
    return {"PLATFORM_API": stack.api_url}


def mint(role: str, actor: str, *teams: str) -> str:
    # Both flag forms, as the original CLI accepted.
    args = [
        "token",
        "mint",
        "--role",
        role,
        f"--actor={actor}",
        "--subject",
        actor.split("@", maxsplit=1)[0],
        "--ttl=1h",
    ]
    for team in teams:
        args += ["--team", team]
    result = cli(*args, PLATFORM_JWT_HS256_SECRET=TEST_JWT_SECRET)
    assert result.code == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def tokens(stack: RunningStack) -> dict[str, str]:
    return {
        "alice": mint("requester", "alice@example.com", "payments"),
        "bob": mint("approver", "bob@example.com"),
        "root": mint("admin", "root@example.com"),
    }


def create_production(api: dict[str, str], token: str, app: str) -> str:
    result = cli(
        "request",
        "create",
        "--app",
        app,
        "--team",
        "payments",
        "--class",
        "production",
        "--region",
        "us-east-1",
        "--ttl",
        "12",
        "--owner",
        "alice@example.com",
        "--repo",
        "https://github.com/example/ledger.git",
        "--revision=v1.4.2",
        "--labels",
        "change=chg-7",
        token=token,
        **api,
    )
    assert result.code == 0, result.stderr
    created = result.json()  # JSON because stdout is a pipe: `| jq -r .id` works
    assert created["status"] == "submitted"
    assert created["created_by"] == "alice@example.com"
    return str(created["id"])


def test_the_production_flow_with_platformctl_only(
    stack: RunningStack, api: dict[str, str], tokens: dict[str, str]
) -> None:
    request_id = create_production(api, tokens["alice"], "ledger")

    approved = cli(
        "request",
        "approve",
        "--id",
        request_id,
        token=tokens["bob"],
        PLATFORM_APPROVAL_HMAC_SECRET=TEST_APPROVAL_SECRET,
        **api,
    )
    assert approved.code == 0, approved.stderr
    assert approved.json()["status"] == "approved"
    assert approved.json()["approved_by"] == "bob@example.com"

    reconciled = cli("request", "reconcile", f"--id={request_id}", "--token", tokens["bob"], **api)
    assert reconciled.code == 0, reconciled.stderr
    assert reconciled.json()["status"] == "queued"

    waited = cli("request", "wait", "--id", request_id, "--timeout", "90", token=tokens["alice"], **api)
    assert waited.code == 0, waited.stderr
    ready = waited.json()
    assert ready["status"] == "ready"
    assert ready["generation"] == 1
    message = stack.git("log", "-1", "--format=%B", ready["git_commit_sha"])
    assert "Approved-by: bob@example.com" in message

    timeline = cli("request", "events", "--id", request_id, "-o", "yaml", token=tokens["alice"], **api)
    types = [item["type"] for item in yaml.safe_load(timeline.stdout)["items"]]
    assert types[:5] == [
        "request.submitted",
        "request.policy_evaluated",
        "request.approval_recorded",
        "request.approved",
        "request.reconcile_requested",
    ]
    assert types[-1] == "request.bootstrapped"

    tail = cli("events", "tail", "--id", request_id, "--count", "3", token=tokens["alice"], **api)
    assert tail.code == 0, tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [line["type"] for line in lines] == types[:3]

    extended = cli("request", "extend", "--id", request_id, "--ttl", "24h", token=tokens["alice"], **api)
    assert extended.code == 0, extended.stderr
    assert extended.json()["ttl_hours"] == 24

    deleted = cli("request", "delete", "--id", request_id, token=tokens["alice"], **api)
    assert deleted.code == 0, deleted.stderr
    assert deleted.json()["status"] == "deleting"
    gone = cli(
        "request",
        "wait",
        "--id",
        request_id,
        "--for",
        "deleted",
        "--timeout=60",
        token=tokens["alice"],
        **api,
    )
    assert gone.code == 0, gone.stderr
    assert gone.json()["status"] == "deleted"


def test_approval_errors_are_one_line(
    api: dict[str, str], tokens: dict[str, str], stack: RunningStack
) -> None:
    request_id = create_production(api, tokens["alice"], "ledger-err")
    no_secret = cli("request", "approve", "--id", request_id, token=tokens["bob"], **api)
    one_line_error(no_secret, "approval secret")
    wrong = cli(
        "request",
        "approve",
        "--id",
        request_id,
        "--approval-secret=not-the-secret-000000000000000000",
        token=tokens["bob"],
        **api,
    )
    one_line_error(wrong, "signature", "HTTP 401")
    own = cli(
        "request",
        "approve",
        "--id",
        request_id,
        "--approval-secret",
        TEST_APPROVAL_SECRET,
        token=mint("admin", "alice@example.com"),
        **api,
    )
    one_line_error(own, "created this request", "HTTP 403")
    viewer = cli("request", "reconcile", "--id", request_id, token=mint("viewer", "vic@example.com"), **api)
    one_line_error(viewer, "viewer", "HTTP 403")
    pending = cli("request", "reconcile", "--id", request_id, token=tokens["bob"], **api)
    one_line_error(pending, "is pending approval", "HTTP 409")


def test_a_rejected_request_makes_wait_fail(api: dict[str, str], tokens: dict[str, str]) -> None:
    request_id = create_production(api, tokens["alice"], "ledger-no")
    rejected = cli(
        "request", "reject", "--id", request_id, "--reason", "no change ticket", token=tokens["bob"], **api
    )
    assert rejected.code == 0, rejected.stderr
    assert rejected.json()["status"] == "rejected"
    waited = cli("request", "wait", "--id", request_id, "--timeout", "10", token=tokens["alice"], **api)
    assert waited.code == 1
    assert waited.json()["status"] == "rejected"
    assert "rejected" in waited.stderr
    assert "no change ticket" in waited.stderr


def test_dead_letters_listed_and_replayed(
    stack_env: dict[str, str], api: dict[str, str], tokens: dict[str, str]
) -> None:
    async def publish_garbage() -> None:
        # On a subject intake subscribes to: consumers now receive only the types they handle.
        nc = await nats.connect(stack_env["PLATFORM_NATS_URL"])
        await nc.jetstream().publish(
            f"{stack_env['PLATFORM_EVENTS_SUBJECT_PREFIX']}.request.approved",
            b"not an envelope",
            headers={"Nats-Msg-Id": str(uuid.uuid4())},
        )
        await nc.close()

    asyncio.run(publish_garbage())
    listed: list[dict[str, Any]] = []
    for _ in range(50):
        result = cli("events", "dlq", "--service", "intake", token=tokens["root"], **api)
        assert result.code == 0, result.stderr
        listed = result.json()["items"]
        if listed:
            break
    [letter] = listed
    assert (letter["service"], letter["consumer"]) == ("intake", "intake-requests")
    assert "not an event envelope" in letter["error"]

    replayed = cli(
        "events", "replay", "--service", "intake", "--id", str(letter["id"]), token=tokens["root"], **api
    )
    assert replayed.code == 0, replayed.stderr
    assert replayed.json()["replayed_at"] is not None
    again = cli("events", "replay", "--service=intake", f"--id={letter['id']}", token=tokens["root"], **api)
    one_line_error(again, "already replayed", "HTTP 409")
    denied = cli("events", "dlq", token=tokens["bob"], **api)
    one_line_error(denied, "approver", "HTTP 403")
    table = cli("events", "dlq", "--all", "-o", "table", token=tokens["root"], **api)
    assert table.stdout.splitlines()[0].split()[:3] == ["SERVICE", "ID", "CONSUMER"]
