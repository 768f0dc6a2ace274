"""The real platformctl console script against a real gateway (stand-in services behind NATS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import yaml

from libs.embedded import free_port
from tests.support.api_flows import request_body
from tests.support.gateway import JWT_SECRET, GatewayStack, mint
from tests.support.platformctl import PLATFORMCTL, Result, clean_env, platformctl


def api_env(stack: GatewayStack, role: str = "requester", **claims: Any) -> dict[str, str]:
    return clean_env(PLATFORM_API=stack.base_url, PLATFORM_TOKEN=mint(role, **claims))


CREATE_ARGS = (
    "request",
    "create",
    "--app",
    "payments-api",
    "--team",
    "payments",
    "--class",
    "preview",
    "--region",
    "us-east-1",
    "--ttl",
    "24",
    "--owner",
    "alice@example.com",
    "--repo",
    "https://github.com/example/payments-api.git",
)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("platformctl: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


async def test_a_minted_token_round_trips_through_whoami(stack: GatewayStack) -> None:
    minted = await platformctl(
        "token",
        "mint",
        "--subject",
        "u-9",
        "--actor=bob@example.com",
        "--role",
        "approver",
        f"--secret={JWT_SECRET}",
        "--ttl",
        "30m",
        "--team",
        "payments",
        "--team=search,infra",
    )
    assert minted.code == 0, minted.stderr
    token = minted.stdout.strip()
    assert minted.stdout == token + "\n"  # only the token, for $(...)
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.get("/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    expected = {
        "actor": "bob@example.com",
        "role": "approver",
        "teams": ["payments", "search", "infra"],
        "subject": "u-9",
    }
    assert response.json() == expected
    whoami = await platformctl("whoami", f"--api={stack.base_url}", "--token", token)
    assert whoami.code == 0
    shown = whoami.json()
    # ... and when the token expires (its exp, 30 minutes after its iat).
    claims = jwt.decode(token, options={"verify_signature": False})
    assert shown.pop("expires_at") == datetime.fromtimestamp(claims["exp"], UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert claims["exp"] - claims["iat"] == 1800
    assert shown == expected


async def test_token_ttl_forms(stack: GatewayStack) -> None:
    mint_viewer = ("token", "mint", "--actor", "a@example.com", "--role", "viewer")
    for ttl in ("1h", "3600s", "3600", "30m"):
        result = await platformctl(
            *mint_viewer, "--ttl", ttl, env=clean_env(PLATFORM_JWT_HS256_SECRET=JWT_SECRET)
        )
        assert result.code == 0, (ttl, result.stderr)
    bad = await platformctl(*mint_viewer, "--ttl", "soon", "--secret", JWT_SECRET)
    assert_one_line_error(bad, "--ttl")
    assert bad.code == 2


async def test_create_prints_json_when_piped(stack: GatewayStack) -> None:
    result = await platformctl(*CREATE_ARGS, "--labels", "pr=42,tier=web", env=api_env(stack))
    assert result.code == 0, result.stderr
    created = result.json()
    assert created["id"].startswith("req-")
    assert created["labels"] == {"pr": "42", "tier": "web"}
    assert created["ttl_hours"] == 24
    [command] = stack.intake.received
    assert command.body.repository == "https://github.com/example/payments-api.git"


async def test_equals_form_flags_and_idempotency_key(stack: GatewayStack) -> None:
    args = [f"{name}={value}" for name, value in zip(CREATE_ARGS[2::2], CREATE_ARGS[3::2], strict=True)]
    first = await platformctl("request", "create", *args, "--idempotency-key=deploy-7", env=api_env(stack))
    again = await platformctl("request", "create", *args, "--idempotency-key", "deploy-7", env=api_env(stack))
    assert first.code == 0, first.stderr
    assert again.code == 0, again.stderr
    assert again.json()["id"] == first.json()["id"]
    assert "replayed" in again.stderr
    assert [command.idempotency_key for command in stack.intake.received] == ["deploy-7", "deploy-7"]


async def test_reading_commands_and_output_formats(stack: GatewayStack) -> None:
    created = (await platformctl(*CREATE_ARGS, env=api_env(stack))).json()
    env = api_env(stack, "viewer")
    got = await platformctl("request", "get", "--id", created["id"], env=env)
    assert got.code == 0
    assert got.json()["id"] == created["id"]
    listed = await platformctl("request", "list", "--team=payments", "--limit", "10", "-o", "yaml", env=env)
    assert listed.code == 0
    assert [item["id"] for item in yaml.safe_load(listed.stdout)["items"]] == [created["id"]]
    events = await platformctl("request", "events", "--id", created["id"], env=env)
    assert [item["type"] for item in events.json()["items"]] == ["request.submitted"]
    classes = await platformctl("classes", "-o", "table", env=env)
    assert classes.code == 0
    header, *rows = classes.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "REGIONS", "APPROVAL"]
    assert [row.split()[0] for row in rows] == ["preview", "shared-staging"]
    one = await platformctl("classes", "get", "--name", "preview", env=env)
    assert one.json()["name"] == "preview"


async def test_http_errors_are_one_line_naming_the_problem(stack: GatewayStack) -> None:
    missing = await platformctl(
        "request", "get", "--id", "req-0000000000000000", env=api_env(stack, "viewer")
    )
    assert_one_line_error(missing, "req-0000000000000000 not found", "404")
    assert missing.code == 3  # the API refused: not a usage error
    denied = await platformctl(*CREATE_ARGS, env=api_env(stack, "viewer"))
    assert_one_line_error(denied, "viewer", "403")
    assert denied.code == 4
    scoped = await platformctl(*CREATE_ARGS, env=api_env(stack, teams=["search"]))
    assert_one_line_error(scoped, "team payments", "403")


async def test_unreachable_api_and_missing_token_are_one_line() -> None:
    api = f"http://127.0.0.1:{free_port()}"
    unreachable = await platformctl("classes", "--api", api, "--token", "x")
    assert_one_line_error(unreachable, f"cannot reach the API at {api}")
    assert unreachable.code == 3
    no_token = await platformctl("classes", "--api", api)
    assert_one_line_error(no_token, "PLATFORM_TOKEN")


async def test_usage_errors_are_one_line() -> None:
    result = await platformctl("request", "create", "--app", "x")
    assert_one_line_error(result, "--team")
    assert result.code == 2


def replaced(args: tuple[str, ...], flag: str, value: str) -> tuple[str, ...]:
    index = args.index(flag)
    return (*args[: index + 1], value, *args[index + 2 :])


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (replaced(CREATE_ARGS, "--ttl", "1d"), ("--ttl", "'1d'", "whole hours")),
        ((*CREATE_ARGS, "--labels", "pr"), ("--labels", "key=value")),
        ((*CREATE_ARGS, "--colour", "blue"), ("unrecognized arguments: --colour blue",)),
        (CREATE_ARGS[:-2], ("required", "--repo")),
        (("request", "wait", "--id", "req-0000000000000000", "--timeout", "soon"), ("--timeout", "'soon'")),
        (("request", "list", "--limit", "ten"), ("--limit", "'ten'")),
        (("request", "frobnicate"), ("invalid choice: 'frobnicate'",)),
        (("token", "mint", "--role", "admin", "--actor", "a@example.com"), ("no secret", "--secret")),
    ],
    ids=["ttl-1d", "labels", "unknown-flag", "missing-flag", "wait-timeout", "limit", "verb", "no-secret"],
)
async def test_usage_errors_exit_2_naming_the_problem_before_calling_the_api(
    args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    # An API that is not there: a usage error must be found before anything is sent.
    unreachable = clean_env(PLATFORM_API=f"http://127.0.0.1:{free_port()}", PLATFORM_TOKEN="t")
    result = await platformctl(*args, env=unreachable)
    assert_one_line_error(result, *fragments)
    assert result.code == 2
    assert "--help" in result.stderr


async def test_a_misspelt_role_mints_no_token_and_names_the_valid_roles() -> None:
    result = await platformctl(
        "token", "mint", "--role", "aprover", "--actor", "a@example.com", "--secret", JWT_SECRET
    )
    assert_one_line_error(result, "'aprover'", "'viewer'", "'requester'", "'approver'", "'admin'")
    assert result.code == 2
    # platformctl takes the role in any case and mints it in the exact form the gateway accepts.
    upper = await platformctl(
        "token", "mint", "--role", "Approver", "--actor", "a@example.com", "--secret", JWT_SECRET
    )
    assert upper.code == 0, upper.stderr
    token = upper.stdout.strip()
    assert jwt.decode(token, JWT_SECRET, algorithms=["HS256"])["role"] == "approver"


async def test_wait_exits_0_when_ready(stack: GatewayStack) -> None:
    created = (await platformctl(*CREATE_ARGS, env=api_env(stack))).json()
    stack.intake.status_scripts[created["id"]] = ["queued", "reconciling", "ready"]
    result = await platformctl(
        "request", "wait", "--id", created["id"], "--timeout", "20", env=api_env(stack)
    )
    assert result.code == 0, result.stderr
    assert result.json()["status"] == "ready"


async def test_wait_exits_1_on_failure_with_the_last_error(stack: GatewayStack) -> None:
    created = (await platformctl(*CREATE_ARGS, env=api_env(stack))).json()
    stack.intake.status_scripts[created["id"]] = ["queued", "failed"]
    result = await platformctl("request", "wait", "--id", created["id"], env=api_env(stack))
    assert result.code == 1
    assert result.json()["status"] == "failed"
    *progress, reason, next_step = result.stderr.splitlines()
    assert [line.split("  ", 2)[2] for line in progress] == ["queued", "queued → failed"]
    assert reason == (
        f"platformctl: request {created['id']} is failed: render: template error in networkpolicy.yaml"
    )
    assert next_step.startswith(
        f"platformctl: next: see what happened: platformctl request events --id {created['id']}"
    )


async def test_wait_exits_124_on_timeout(stack: GatewayStack) -> None:
    created = (await platformctl(*CREATE_ARGS, env=api_env(stack))).json()
    stack.intake.status_scripts[created["id"]] = ["queued"]
    result = await platformctl("request", "wait", "--id", created["id"], "--timeout=1s", env=api_env(stack))
    assert result.code == 124
    assert result.json()["status"] == "queued"
    assert "timed out" in result.stderr


def test_request_body_fixture_matches_the_cli_flags() -> None:
    # Keeps CREATE_ARGS and the HTTP tests' body describing the same request.
    flags = dict(zip(CREATE_ARGS[2::2], CREATE_ARGS[3::2], strict=True))
    body = request_body()
    assert (flags["--app"], flags["--team"], flags["--class"], flags["--repo"]) == (
        body["app"],
        body["team"],
        body["class"],
        body["repository"],
    )


async def test_wait_shows_status_changes_live_on_a_terminal(stack: GatewayStack) -> None:
    created = (await platformctl(*CREATE_ARGS, env=api_env(stack))).json()
    stack.intake.status_scripts[created["id"]] = ["queued", "queued", "reconciling", "ready"]
    controller, terminal = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        str(PLATFORMCTL),
        "request",
        "wait",
        "--id",
        created["id"],
        stdout=asyncio.subprocess.PIPE,
        stderr=terminal,
        env=api_env(stack),
    )
    os.close(terminal)
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the terminal's other end is closed
        while chunk := os.read(controller, 4096):
            shown += chunk
    os.close(controller)
    assert process.returncode == 0
    assert json.loads(stdout)["status"] == "ready"
    lines = shown.decode().splitlines()
    # HH:MM:SS, the time since the wait began, the change
    assert [line.split("  ", 2)[2] for line in lines] == [
        "queued",
        "queued → reconciling",
        "reconciling → ready",
    ]
