"""What people read when the API or platformctl refuses something: sentences, not reprs.

Through the real gateway in front of the real services (policy, intake, approval, renderer)
on real NATS and Postgres, and the platformctl console script against it. Each test names a
message that once read like a Python value ("role=requester, allowed_roles=['admin',
'approver']", "class; class: ...", "not in the token's teams", "... of none", an unchanged
class "configured" with a new revision) and asserts the text that replaced it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contracts.events import ClassUpserted
from libs.service_kit import ServiceKit
from tests.support.api_flows import PREVIEW, signature
from tests.support.bus import outbox_drained, stream_events, wait_until
from tests.support.gateway import auth, gateway_with_services, mint
from tests.support.platformctl import clean_env, platformctl

SCHEMAS = ("intake", "policy", "approval", "renderer")
TOKEN_TTL = 4 * 3600
ADMIN = auth("admin", email="root@example.com", sub="root", ttl=TOKEN_TTL)
ALICE = auth("requester", teams=["payments"], ttl=TOKEN_TTL)
BOB = auth("approver", email="bob@example.com", sub="bob", ttl=TOKEN_TTL)
BILLING = auth("requester", email="bo@example.com", sub="bo", teams=["billing", "search"], ttl=TOKEN_TTL)
SEEDED_CLASSES = {"preview", "production", "shared-staging"}
PROBLEM_MEMBERS = {"error", "code", "details", "type", "title", "status", "detail", "instance"}


@dataclass
class Stack:
    http: httpx.AsyncClient
    base_url: str
    env: dict[str, str]
    kits: dict[str, ServiceKit]

    async def class_revisions(self, name: str) -> list[int]:
        """The revision of every ``class.upserted`` of class ``name`` on the stream, once all
        outboxes are drained (so none is still on its way)."""

        async def drained() -> bool:
            dsn = self.env["PLATFORM_POSTGRES_DSN"]
            return all([await outbox_drained(dsn, schema) for schema in SCHEMAS])

        await wait_until(drained, what="every staged event published")
        events = await stream_events(
            self.kits["policy"].js,
            self.env["PLATFORM_EVENTS_STREAM"],
            self.env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
            "class.upserted",
        )
        upserts = [event.decode_data() for event in events if event.subject == name]
        return [upsert.revision for upsert in upserts if isinstance(upsert, ClassUpserted)]


@pytest.fixture(scope="module")
async def stack(stack_env: dict[str, str]) -> AsyncIterator[Stack]:
    """One gateway and its services for the module: each test writes only what is its own (its
    own request, a class, a team's budget or a catalog document no other test reads back)."""
    async with (
        gateway_with_services(stack_env, ["policy", "intake", "approval", "renderer"]) as (base_url, kits),
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        yield Stack(http, base_url, stack_env, kits)


async def cli(stack: Stack, *args: str, role: str = "admin", **claims: Any) -> tuple[int, str, str]:
    """platformctl against this stack with a token for ``role``: (exit code, stdout, stderr)."""
    env = clean_env(PLATFORM_API=stack.base_url, PLATFORM_TOKEN=mint(role, **claims))
    result = await platformctl(*args, env=env)
    return result.code, result.stdout, result.stderr


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == PROBLEM_MEMBERS
    assert body["detail"] == body["error"]
    return body


def no_reprs(text: str) -> None:
    """Nothing of a Python value in a message meant for people."""
    for fragment in ("['", "']", "{'", "None", "=[", "allowed_roles", "(allowed:"):
        assert fragment not in text, f"{fragment!r} in {text!r}"


# -- who may do what -----------------------------------------------------------------------------


async def test_a_refused_role_is_told_who_can(stack: Stack, tmp_path: Path) -> None:
    refused = problem(
        await stack.http.post(
            "/v1/environment-requests/req-0123456789abcdef/reject", json={"reason": "no"}, headers=ALICE
        ),
        403,
    )
    assert (
        refused["error"] == "the requester role cannot reject environment requests; approvers and admins can"
    )
    # The machine-readable part stays as it was for scripts.
    assert refused["details"] == {"role": "requester", "allowed_roles": ["admin", "approver"]}

    viewer = problem(
        await stack.http.put("/v1/teams/payments/budget", json={"monthly_usd": 1}, headers=auth("viewer")),
        403,
    )
    assert viewer["error"] == "the viewer role cannot set team budgets; only admins can"

    classes = tmp_path / "classes.yaml"
    classes.write_text(
        yaml.safe_dump(
            {"name": "demo", "allowed_regions": ["us-east-1"], "max_ttl_hours": 4, "quota_profile": "small"}
        )
    )
    code, _, err = await cli(stack, "classes", "apply", "-f", str(classes), role="viewer")
    assert code == 4
    assert (
        err.strip()
        == "platformctl: the viewer role cannot change environment classes; only admins can (HTTP 403)"
    )


# -- validation ------------------------------------------------------------------------------------


async def test_an_unknown_class_is_named_once_with_the_known_ones(stack: Stack) -> None:
    # The catalog's classes as they are now: other tests of the module add classes of their own.
    listed = (await stack.http.get("/v1/environment-classes", headers=ALICE)).json()["items"]
    known_classes = ", ".join(sorted(item["name"] for item in listed))
    assert {item["name"] for item in listed} >= SEEDED_CLASSES
    body = problem(
        await stack.http.post("/v1/environment-requests", json={**PREVIEW, "class": "gold"}, headers=ALICE),
        422,
    )
    assert body["error"] == "invalid environment request: class"
    assert body["details"] == [
        {"field": "class", "message": f"unknown environment class 'gold' (known: {known_classes})"}
    ]

    code, _, err = await cli(
        stack,
        *("request", "create", "--app", "payments-api", "--team", "payments", "--class", "gold"),
        *("--region", "us-east-1", "--ttl", "24", "--owner", "alice@example.com"),
        *("--repo", "https://github.com/example/payments-api.git"),
        role="requester",
        teams=["payments"],
    )
    assert code == 3
    assert err.strip() == (
        "platformctl: invalid environment request: class: unknown environment class 'gold' "
        f"(known: {known_classes}) (HTTP 422)"
    )


async def test_several_failing_fields_read_as_one_sentence_each_in_platformctl(stack: Stack) -> None:
    code, _, err = await cli(
        stack,
        *("request", "create", "--app", "Payments", "--team", "payments", "--class", "preview"),
        *("--region", "mars-1", "--ttl", "24", "--owner", "alice@example.com"),
        *("--repo", "https://github.com/example/payments-api.git"),
        role="requester",
        teams=["payments"],
    )
    assert code == 3
    assert err.strip() == (
        "platformctl: invalid environment request: "
        "app: must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a "
        "letter or digit, at most 40 characters; "
        "region: not allowed for class preview (allowed: us-east-1, us-west-2) (HTTP 422)"
    )


async def test_query_parameters_are_refused_in_words(stack: Stack) -> None:
    limit = problem(
        await stack.http.get("/v1/environment-requests", params={"limit": "abc"}, headers=ALICE), 400
    )
    assert limit["error"] == "invalid request parameters: limit"
    assert limit["details"] == [{"field": "limit", "message": "must be a whole number", "source": "query"}]

    dry_run = problem(
        await stack.http.post(
            "/v1/environment-requests", params={"dry_run": "maybe"}, json=PREVIEW, headers=ALICE
        ),
        400,
    )
    assert dry_run["details"] == [{"field": "dry_run", "message": "must be true or false", "source": "query"}]

    status = problem(
        await stack.http.get("/v1/environment-requests", params={"status": "bogus"}, headers=ALICE), 422
    )
    assert status["error"] == "invalid request parameters: status"
    assert status["details"][0]["message"].startswith(
        "unknown status 'bogus' (known: submitted, pending_approval,"
    )

    code, _, err = await cli(
        stack, "request", "list", "--status", "bogus", role="requester", teams=["payments"]
    )
    assert code == 3
    assert err.startswith("platformctl: invalid request parameters: status: unknown status 'bogus' (known: ")
    assert err.count("status") == 2  # the parameter once, then its message: not "status; status: ..."


async def test_a_body_that_is_not_json_says_where(stack: Stack) -> None:
    body = problem(
        await stack.http.post(
            "/v1/environment-requests",
            content=b"nope",
            headers={**ALICE, "Content-Type": "application/json"},
        ),
        400,
    )
    assert re.fullmatch(r"the request body is not valid JSON: invalid character at byte \d+", body["error"])


async def test_an_unknown_rule_type_lists_the_known_ones_without_quotes(stack: Stack) -> None:
    body = problem(
        await stack.http.put("/v1/policy-packs/strict", json={"rules": [{"type": "nope"}]}, headers=ADMIN),
        422,
    )
    (detail,) = body["details"]
    assert detail["field"] == "rules[0].type"
    assert detail["message"].startswith("unknown type 'nope' (known: required_labels, allowed_regions, ")
    assert "'required_labels'" not in detail["message"]


# -- team scope ------------------------------------------------------------------------------------


async def test_a_team_the_caller_does_not_act_for_is_explained(stack: Stack) -> None:
    http = stack.http
    create = problem(
        await http.post("/v1/environment-requests", json={**PREVIEW, "team": "billing"}, headers=ALICE), 403
    )
    assert create["error"] == "you act for team payments; this request is for team billing"
    assert create["details"] == [{"field": "team", "message": create["error"]}]

    listed = problem(
        await http.get("/v1/environment-requests", params={"team": "billing"}, headers=ALICE), 403
    )
    assert listed["error"] == "you act for team payments; you asked for the requests of team billing"

    budget = problem(await http.get("/v1/teams/billing", headers=ALICE), 403)
    assert budget["error"] == (
        "you act for team payments; requesters read only the budgets of their own teams, not team billing's"
    )

    # Someone else's request by id: refused without naming the team it belongs to.
    created = await http.post("/v1/environment-requests", json=PREVIEW, headers=ALICE)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    other = problem(await http.get(f"/v1/environment-requests/{request_id}", headers=BILLING), 403)
    assert other["error"] == (
        f"environment request {request_id} belongs to a team you do not act for "
        "(you act for teams billing and search)"
    )
    assert "payments" not in json.dumps(other)

    code, _, err = await cli(
        stack,
        *("request", "create", "--app", "payments-api", "--team", "billing", "--class", "preview"),
        *("--region", "us-east-1", "--ttl", "24", "--owner", "alice@example.com"),
        *("--repo", "https://github.com/example/payments-api.git"),
        role="requester",
        teams=["payments"],
    )
    assert code == 4
    assert (
        err.strip() == "platformctl: you act for team payments; this request is for team billing (HTTP 403)"
    )


async def test_approving_a_request_that_is_not_waiting_says_its_status_in_words(stack: Stack) -> None:
    created = await stack.http.post("/v1/environment-requests", json=PREVIEW, headers=ALICE)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]

    async def decided() -> bool:
        view = (await stack.http.get(f"/v1/environment-requests/{request_id}", headers=ALICE)).json()
        return bool(view["status"] != "submitted")

    await wait_until(decided, what="the preview's policy decision")
    body = problem(
        await stack.http.post(
            f"/v1/environment-requests/{request_id}/approve",
            headers={
                **BOB,
                "X-Platform-Approval-Signature": signature(request_id, "bob@example.com", "preview"),
            },
        ),
        409,
    )
    status = body["details"]["status"]
    assert body["error"] == f"request {request_id} is {status.replace('_', ' ')}, not waiting for approval"
    no_reprs(body["error"])


# -- dry runs and budgets in platformctl -----------------------------------------------------------


async def test_a_team_without_a_budget_of_its_own_says_so(stack: Stack) -> None:
    code, out, err = await cli(
        stack,
        *("request", "create", "--app", "payments-api", "--team", "ledger", "--class", "preview"),
        *("--region", "us-east-1", "--ttl", "24", "--owner", "alice@example.com"),
        *("--repo", "https://github.com/example/payments-api.git", "--dry-run", "-o", "table"),
        role="requester",
        teams=["ledger"],
    )
    assert code == 0, err
    cost = next(line for line in out.splitlines() if line.startswith("cost:"))
    assert cost == "cost:      $150.00 / month; team ledger: $0.00 active -> $150.00 of $50,000.00"

    code, out, err = await cli(stack, "teams", "get", "--team", "ledger", "-o", "table")
    assert code == 0, err
    assert out.splitlines()[:3] == [
        "team:      ledger",
        "budget:    $50,000.00 / month (the default: the team has no budget of its own)",
        "spend:     $0.00 / month (active environments)",
    ]

    await stack.http.put("/v1/teams/ledger/budget", json={"monthly_usd": 100}, headers=ADMIN)
    code, out, _ = await cli(
        stack,
        *("request", "create", "--app", "payments-api", "--team", "ledger", "--class", "preview"),
        *("--region", "us-east-1", "--ttl", "24", "--owner", "alice@example.com"),
        *("--repo", "https://github.com/example/payments-api.git", "--dry-run", "-o", "table"),
        role="requester",
        teams=["ledger"],
    )
    assert code == 1  # rejected by the budget
    cost = next(line for line in out.splitlines() if line.startswith("cost:"))
    assert cost == "cost:      $150.00 / month; team ledger: $0.00 active -> $150.00 of $100.00, over budget"


# -- unchanged catalog documents ---------------------------------------------------------------------


async def test_putting_a_class_unchanged_keeps_its_revision_and_publishes_nothing(stack: Stack) -> None:
    http = stack.http
    body = {"allowed_regions": ["us-east-1"], "max_ttl_hours": 8, "quota_profile": "small"}
    created = await http.put("/v1/environment-classes/load-test", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert (created.headers["X-Class-Revision"], created.headers["X-Platform-Change"]) == ("1", "created")

    again = await http.put("/v1/environment-classes/load-test", json=body, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert (again.headers["X-Class-Revision"], again.headers["X-Platform-Change"]) == ("1", "unchanged")
    assert again.json() == created.json()
    assert await stack.class_revisions("load-test") == [1]

    changed = await http.put(
        "/v1/environment-classes/load-test", json={**body, "max_ttl_hours": 9}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    assert (changed.headers["X-Class-Revision"], changed.headers["X-Platform-Change"]) == ("2", "replaced")
    assert await stack.class_revisions("load-test") == [1, 2]


@pytest.mark.parametrize("collection", ["quota-profiles", "policy-packs"])
async def test_putting_a_profile_or_pack_unchanged_says_so(stack: Stack, collection: str) -> None:
    name = {"quota-profiles": "small", "policy-packs": "cost-guardrails"}[collection]
    stored = (await stack.http.get(f"/v1/{collection}/{name}", headers=ADMIN)).json()
    body = {key: value for key, value in stored.items() if key != "name"}
    again = await stack.http.put(f"/v1/{collection}/{name}", json=body, headers=ADMIN)
    assert again.status_code == 200, again.text
    assert again.headers["X-Platform-Change"] == "unchanged"
    assert again.json() == stored
    changed = await stack.http.put(
        f"/v1/{collection}/{name}", json={**body, "description": "changed"}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["X-Platform-Change"] == "replaced"


async def test_platformctl_says_unchanged_for_a_file_applied_twice(stack: Stack, tmp_path: Path) -> None:
    classes = tmp_path / "classes.yaml"
    document = {
        "name": "load-test-cli",
        "allowed_regions": ["us-east-1"],
        "max_ttl_hours": 8,
        "quota_profile": "small",
    }
    classes.write_text(yaml.safe_dump(document))
    for said in ("created", "unchanged", "unchanged"):
        code, _, err = await cli(stack, "classes", "apply", "-f", str(classes))
        assert code == 0, err
        assert err.splitlines() == [f"environment class load-test-cli {said}"]
    classes.write_text(yaml.safe_dump({**document, "max_ttl_hours": 9}))
    code, _, err = await cli(stack, "classes", "apply", "-f", str(classes))
    assert err.splitlines() == ["environment class load-test-cli configured"]
    assert await stack.class_revisions("load-test-cli") == [1, 2]  # the unchanged applies made none

    profiles = tmp_path / "profiles.yaml"
    code, out, err = await cli(stack, "quota-profiles", "get", "--name", "small", "-o", "yaml")
    assert code == 0, err
    profiles.write_text(out)
    code, _, err = await cli(stack, "quota-profiles", "apply", "-f", str(profiles))
    assert (code, err.splitlines()) == (0, ["quota profile small unchanged"])
