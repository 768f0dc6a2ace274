"""platformctl as a CI job uses it: exit codes to branch on, a request kept as a file,
progress in a log that is not a terminal, completion scripts, --version, jsonpath fields.

The real console script runs as a process with pipes for stdout and stderr, against a real
gateway with stand-in services behind NATS."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.embedded import free_port
from tests.support.gateway import GatewayStack, mint
from tests.support.platformctl import clean_env, platformctl

REPOSITORY = Path(__file__).resolve().parents[2]
PREVIEW = json.loads((REPOSITORY / "examples" / "preview.json").read_text())
# HH:MM:SS, the time since the wait began, what changed.
PROGRESS_LINE = re.compile(r"^\d\d:\d\d:\d\d  \+\d+\.\ds  (?P<change>.+)$")


def api_env(stack: GatewayStack, role: str = "requester", **claims: Any) -> dict[str, str]:
    return clean_env(PLATFORM_API=stack.base_url, PLATFORM_TOKEN=mint(role, **claims))


def progress(stderr: str) -> list[str]:
    """The progress lines of a wait, without their clock and elapsed time."""
    changes = []
    for line in stderr.splitlines():
        matched = PROGRESS_LINE.match(line)
        if matched:
            changes.append(matched["change"])
    return changes


async def created_id(stack: GatewayStack) -> str:
    result = await platformctl("request", "create", "-f", "-", stdin=json.dumps(PREVIEW), env=api_env(stack))
    assert result.code == 0, result.stderr
    return str(result.json()["id"])


# -- exit codes ------------------------------------------------------------------------------------


async def test_each_kind_of_failure_has_its_own_exit_code(stack: GatewayStack, tmp_path: Path) -> None:
    request_id = await created_id(stack)
    get = ("request", "get", "--id", request_id)
    unknown = ("request", "get", "--id", "req-0000000000000000")
    cases = {
        "usage: a flag value that does not parse": (("request", "list", "--limit", "ten"), api_env(stack), 2),
        "usage: a -f file that is not there": (
            ("request", "create", "-f", str(tmp_path / "missing.yaml")),
            api_env(stack),
            2,
        ),
        "401: a token the API does not accept": (
            get,
            clean_env(PLATFORM_API=stack.base_url, PLATFORM_TOKEN="not-a-token"),
            4,
        ),
        "403: a role that may not create": (
            ("request", "create", "-f", "-"),
            api_env(stack, "viewer"),
            4,
        ),
        "404: the API refused for another reason": (unknown, api_env(stack), 3),
        "unreachable API": (
            get,
            clean_env(PLATFORM_API=f"http://127.0.0.1:{free_port()}", PLATFORM_TOKEN="t"),
            3,
        ),
    }
    for case, (args, env, expected) in cases.items():
        result = await platformctl(*args, env=env, stdin=json.dumps(PREVIEW))
        assert result.code == expected, (case, result.stderr)
        assert result.stderr.startswith("platformctl: "), (case, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("ending", "expected"), [("failed", 1), ("rejected", 1), ("ready", 0)])
async def test_wait_exits_1_when_the_environment_ends_failed_or_rejected(
    stack: GatewayStack, ending: str, expected: int
) -> None:
    request_id = await created_id(stack)
    stack.intake.status_scripts[request_id] = ["queued", ending]
    if ending == "rejected":
        stack.intake.requests[request_id].rejection_reason = "production needs a change ticket"
    result = await platformctl("request", "wait", "--id", request_id, env=api_env(stack))
    assert result.code == expected, result.stderr
    assert result.json()["status"] == ending
    if ending == "rejected":
        assert (
            f"platformctl: request {request_id} is rejected: production needs a change ticket"
            in result.stderr
        )


async def test_a_wait_that_times_out_exits_124_and_says_how_to_keep_waiting(stack: GatewayStack) -> None:
    request_id = await created_id(stack)
    stack.intake.status_scripts[request_id] = ["queued"]
    result = await platformctl("request", "wait", "--id", request_id, "--timeout", "1s", env=api_env(stack))
    assert result.code == 124
    assert result.json()["status"] == "queued"
    assert result.stderr.splitlines()[-1] == (
        f"platformctl: timed out after 1s waiting for {request_id} to be ready (status queued); "
        f"to keep waiting: platformctl request wait --id {request_id}"
    )


# -- request as code -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["yaml", "json", "stdin"])
async def test_create_takes_the_request_from_a_file_or_stdin(
    stack: GatewayStack, tmp_path: Path, form: str
) -> None:
    if form == "stdin":
        result = await platformctl(
            "request", "create", "-f", "-", stdin=json.dumps(PREVIEW), env=api_env(stack)
        )
    else:
        path = tmp_path / f"request.{form}"
        path.write_text(yaml.safe_dump(PREVIEW) if form == "yaml" else json.dumps(PREVIEW))
        result = await platformctl("request", "create", "-f", str(path), env=api_env(stack))
    assert result.code == 0, result.stderr
    created = result.json()
    sent = {key: created[key] for key in PREVIEW if key != "repository"}
    assert sent == {key: value for key, value in PREVIEW.items() if key != "repository"}
    assert created["repository"] == PREVIEW["repository"]


async def test_flags_override_the_files_fields(stack: GatewayStack, tmp_path: Path) -> None:
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(PREVIEW))
    result = await platformctl(
        "request", "create", "-f", str(path), "--revision", "abc1234", "--ttl", "12h", env=api_env(stack)
    )
    assert result.code == 0, result.stderr
    created = result.json()
    assert (created["revision"], created["ttl_hours"], created["app"]) == ("abc1234", 12, PREVIEW["app"])


async def test_a_file_missing_a_required_field_is_a_usage_error_and_unknown_fields_are_refused_by_the_api(
    stack: GatewayStack,
) -> None:
    partial = {key: value for key, value in PREVIEW.items() if key != "repository"}
    missing = await platformctl("request", "create", "-f", "-", stdin=json.dumps(partial), env=api_env(stack))
    assert missing.code == 2
    assert "--repo (or their fields in the -f file)" in missing.stderr
    extra = await platformctl(
        "request", "create", "-f", "-", stdin=json.dumps({**PREVIEW, "colour": "blue"}), env=api_env(stack)
    )
    assert extra.code == 3, extra.stderr
    assert "colour" in extra.stderr
    assert stack.intake.requests == {}  # neither was stored


# -- progress in a CI log --------------------------------------------------------------------------


async def test_create_wait_shows_each_stage_in_a_log_that_is_not_a_terminal(stack: GatewayStack) -> None:
    request_id = await created_id(stack)
    view = stack.intake.requests[request_id]
    view.namespace, view.git_commit_sha = "payments-api-pr-42", "0123456789abcdef0123"
    stack.intake.status_scripts[request_id] = ["queued", "reconciling", "ready"]
    waited = await platformctl("request", "wait", "--id", request_id, env=api_env(stack))
    assert waited.code == 0, waited.stderr
    assert progress(waited.stderr) == [
        "queued  namespace payments-api-pr-42  commit 0123456789ab",
        "queued → reconciling",
        "reconciling → ready",
    ]


async def test_create_with_wait_prints_the_final_request_only(stack: GatewayStack) -> None:
    # The stand-in's request stays submitted (no script can name an id not yet created).
    result = await platformctl(
        "request",
        "create",
        "-f",
        "-",
        "--wait",
        "--timeout",
        "1s",
        stdin=json.dumps(PREVIEW),
        env=api_env(stack),
    )
    assert result.code == 124
    assert result.json()["status"] == "submitted"  # one JSON document: `| jq` still works
    assert progress(result.stderr) == ["submitted"]


async def test_a_request_waiting_for_approval_says_who_may_approve(stack: GatewayStack) -> None:
    request_id = await created_id(stack)
    view = stack.intake.requests[request_id]
    view.policy_decision = {"outcome": "allowed", "requires_approval": True, "approvals_required": 2}
    stack.intake.status_scripts[request_id] = ["pending_approval"]
    result = await platformctl("request", "wait", "--id", request_id, "--timeout", "1s", env=api_env(stack))
    assert result.code == 124
    assert progress(result.stderr) == [
        "pending_approval",
        "  waits for approval by an approver or admin (2 of 2 approvals still needed): "
        f"platformctl request approve --id {request_id}",
    ]


# -- completion, version, fields -------------------------------------------------------------------


async def test_completion_scripts_are_generated_from_the_commands(tmp_path: Path) -> None:
    bash = await platformctl("completion", "bash")
    assert bash.code == 0, bash.stderr
    script = tmp_path / "platformctl.bash"
    script.write_text(bash.stdout)
    assert (await asyncio.to_thread(subprocess.run, ["bash", "-n", str(script)], check=False)).returncode == 0
    # What a user gets on Tab after `platformctl request wait --for `, and after `request cr`.
    offered = await asyncio.to_thread(
        subprocess.run,
        [
            "bash",
            "-c",
            f"source {script}; COMP_WORDS=(platformctl request wait --for ''); COMP_CWORD=4; _platformctl; "
            'echo "${COMPREPLY[*]}"; COMP_WORDS=(platformctl request cr); COMP_CWORD=2; _platformctl; '
            'echo "${COMPREPLY[*]}"',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert offered.stdout.splitlines() == ["ready approved deleted", "create"]
    zsh = await platformctl("completion", "zsh")
    assert "bashcompinit" in zsh.stdout
    assert "complete -F _platformctl platformctl" in zsh.stdout
    fish = await platformctl("completion", "fish")
    assert "complete -c platformctl -n 'test (_platformctl_path) = \\'request wait\\'" in fish.stdout
    if shutil.which("fish"):
        checked = await asyncio.to_thread(
            subprocess.run, ["fish", "--no-execute", "-c", fish.stdout], check=False
        )
        assert checked.returncode == 0
    wrong = await platformctl("completion", "tcsh")
    assert wrong.code == 2


async def test_version_is_the_installed_packages() -> None:
    result = await platformctl("--version")
    assert result.code == 0
    assert result.stdout == f"platformctl {importlib.metadata.version('platform-control-plane')}\n"


async def test_jsonpath_picks_fields(stack: GatewayStack) -> None:
    first, second = await created_id(stack), await created_id(stack)
    status = await platformctl(
        "request", "get", "--id", first, "-o", "jsonpath={.status}", env=api_env(stack)
    )
    assert status.stdout == "submitted\n"
    ids = await platformctl("request", "list", "-o", "jsonpath={.items[*].id}", env=api_env(stack))
    assert ids.stdout == f"{first} {second}\n"
    mixed = await platformctl(
        "request",
        "list",
        "-o",
        "jsonpath=first={.items[0].id} labels={.items[-1].labels}",
        env=api_env(stack),
    )
    assert mixed.stdout == f"first={first} labels={json.dumps(PREVIEW['labels'])}\n"
    # Keys with dots and slashes, in brackets; items of [*] lacking the field are left out.
    labelled = await platformctl(
        "request", "list", "-o", "jsonpath={.items[*].labels['pr']}|{.items[*].nothing}|", env=api_env(stack)
    )
    assert (labelled.code, labelled.stdout) == (0, f"{PREVIEW['labels']['pr']} {PREVIEW['labels']['pr']}||\n")
    # A path that finds nothing prints nothing and says so; the exit code stays the call's.
    misspelt = await platformctl(
        "request", "get", "--id", first, "-o", "jsonpath={.stauts}", env=api_env(stack)
    )
    assert (misspelt.code, misspelt.stdout) == (0, "\n")
    assert (
        "platformctl: warning: -o jsonpath={.stauts}: {.stauts} found nothing in the answer"
        in misspelt.stderr
    )
    outside = await platformctl("request", "get", "--id", first, "-o", "jsonpath={..id}", env=api_env(stack))
    assert (outside.code, outside.stdout) == (2, "")  # refused before anything is sent
    assert "only .field, ['key'], [n] and [*] are supported" in outside.stderr


async def test_a_create_whose_output_path_finds_nothing_still_exits_0(stack: GatewayStack) -> None:
    """The request was created: a script must not take it for a usage error and create again."""
    result = await platformctl(
        "request", "create", "-f", "-", "-o", "jsonpath={.idd}", stdin=json.dumps(PREVIEW), env=api_env(stack)
    )
    assert result.code == 0, result.stderr
    assert "{.idd} found nothing" in result.stderr
    assert len(stack.intake.requests) == 1


async def test_a_request_file_that_is_not_utf8_is_a_usage_error(stack: GatewayStack, tmp_path: Path) -> None:
    latin1 = tmp_path / "request.yaml"
    latin1.write_bytes(yaml.safe_dump({**PREVIEW, "owner": "andre@example.com"}).encode() + b"# Andr\xe9\n")
    for args, stdin in (((str(latin1),), None), (("-",), latin1.read_bytes())):
        result = await platformctl("request", "create", "-f", *args, stdin=stdin, env=api_env(stack))
        assert result.code == 2, result.stderr
        assert "not UTF-8 text" in result.stderr
        assert "Traceback" not in result.stderr
    assert stack.intake.requests == {}
