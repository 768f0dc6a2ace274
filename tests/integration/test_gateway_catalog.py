"""Catalog, budget and dry-run routes through the real gateway in front of the real services
(policy, intake, approval, renderer) on real NATS and Postgres, and the platformctl commands."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from libs.service_kit import ServiceKit
from tests.support.api_flows import PREVIEW
from tests.support.bus import outbox_drained, stream_events, wait_until
from tests.support.gateway import auth, gateway_with_services, mint
from tests.support.isolation import row_counts
from tests.support.platformctl import clean_env, platformctl
from tests.support.rendered_bundles import CORE_FILES
from tests.support.seed_plans import QUOTAS

SCHEMAS = ("intake", "policy", "approval", "renderer")
# Minted at import: valid for the longest a test session may take.
TOKEN_TTL = 4 * 3600
ADMIN = auth("admin", email="root@example.com", sub="root", ttl=TOKEN_TTL)
ALICE = auth("requester", teams=["payments"], ttl=TOKEN_TTL)
VIEWER = auth("viewer", email="vic@example.com", sub="vic", teams=["billing"], ttl=TOKEN_TTL)
PREVIEW_FILES = [
    *CORE_FILES,
    "pack-preview-networking-networkpolicy-allow-from-ingress-controller.yaml",
    "pack-cost-guardrails-resourcequota-cost-guardrails.yaml",
]


@dataclass
class Stack:
    http: httpx.AsyncClient
    base_url: str
    env: dict[str, str]
    kits: dict[str, ServiceKit]

    async def events(self, event_type: str = ">") -> list[Any]:
        return await stream_events(
            self.kits["policy"].js,
            self.env["PLATFORM_EVENTS_STREAM"],
            self.env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
            event_type,
        )

    async def last_sequence(self) -> int:
        info = await self.kits["policy"].js.stream_info(self.env["PLATFORM_EVENTS_STREAM"])
        return int(info.state.last_seq)


@pytest.fixture
async def stack(platform_env: dict[str, str]) -> AsyncIterator[Stack]:
    async with (
        gateway_with_services(platform_env, ["policy", "intake", "approval", "renderer"]) as (base_url, kits),
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        yield Stack(http, base_url, platform_env, kits)


def error_fields(response: httpx.Response, status: int) -> set[str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "details", "type", "title", "status", "detail", "instance"}
    return {detail["field"] for detail in body["details"]}


# -- classes -----------------------------------------------------------------------------------------------


async def test_admins_upsert_classes_and_everyone_reads_them(stack: Stack) -> None:
    http = stack.http
    current = (await http.get("/v1/environment-classes/preview", headers=VIEWER)).json()
    body = {key: value for key, value in current.items() if key != "name"}

    refused = await http.put("/v1/environment-classes/preview", json=body, headers=ALICE)
    assert refused.status_code == 403
    assert "cannot change environment classes" in refused.json()["error"]

    invalid = await http.put(
        "/v1/environment-classes/preview",
        json={**body, "max_ttl_hours": 0, "quota_profile": "huge", "policy_packs": ["nope"], "extra": 1},
        headers=ADMIN,
    )
    assert error_fields(invalid, 422) == {"max_ttl_hours", "quota_profile", "policy_packs[0]", "extra"}
    assert (
        await http.put("/v1/environment-classes/preview", content=b"[1]", headers=ADMIN)
    ).status_code == 400

    replaced = await http.put(
        "/v1/environment-classes/preview", json={**body, "max_ttl_hours": 48}, headers=ADMIN
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.headers["X-Class-Revision"] == "2"
    assert replaced.json()["max_ttl_hours"] == 48

    created = await http.put(
        "/v1/environment-classes/load-test",
        json={"allowed_regions": ["us-east-1"], "max_ttl_hours": 8, "quota_profile": "medium"},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    assert created.json()["policy_packs"] == []
    listed = (await http.get("/v1/environment-classes", headers=VIEWER)).json()["items"]
    assert [item["name"] for item in listed] == ["load-test", "preview", "production", "shared-staging"]


async def test_a_class_put_is_a_full_replace_and_omitted_fields_take_their_defaults(stack: Stack) -> None:
    """PUT replaces the whole class, as an admin reading "PUT" expects: a field the body
    leaves out gets its default, not the value it had; the response is the class as stored."""
    http = stack.http
    before = (await http.get("/v1/environment-classes/shared-staging", headers=VIEWER)).json()
    assert before["description"]
    assert before["default_namespaces"] == 2
    assert before["estimated_monthly_cost_usd"] > 0
    body = {
        key: value
        for key, value in before.items()
        if key not in ("name", "description", "default_namespaces", "estimated_monthly_cost_usd")
    }
    replaced = await http.put("/v1/environment-classes/shared-staging", json=body, headers=ADMIN)
    assert replaced.status_code == 200, replaced.text
    stored = replaced.json()
    assert stored == {
        **before,
        "description": "",
        "default_namespaces": 1,
        "estimated_monthly_cost_usd": 0.0,
    }
    assert (await http.get("/v1/environment-classes/shared-staging", headers=VIEWER)).json() == stored

    # Fields without a default cannot be left out: named in one 422, nothing stored.
    missing = await http.put(
        "/v1/environment-classes/shared-staging", json={"description": "x"}, headers=ADMIN
    )
    assert error_fields(missing, 422) == {"allowed_regions", "max_ttl_hours", "quota_profile"}
    assert (await http.get("/v1/environment-classes/shared-staging", headers=VIEWER)).json() == stored


# -- quota profiles and policy packs ------------------------------------------------------------------


async def test_admins_add_quota_profiles_and_policy_packs_without_code_changes(stack: Stack) -> None:
    http = stack.http
    profiles = (await http.get("/v1/quota-profiles", headers=VIEWER)).json()["items"]
    assert [p["name"] for p in profiles] == ["large", "medium", "small"]
    packs = (await http.get("/v1/policy-packs", headers=VIEWER)).json()["items"]
    assert [p["name"] for p in packs] == [
        "audit-retention",
        "baseline-security",
        "cost-guardrails",
        "preview-networking",
        "shared-services",
        "sox-controls",
        "zero-trust-networking",
    ]

    profile = {
        "resource_quota": {"pods": {"min": 50, "per_namespace": 25}, "requests.cpu": {"per_namespace": 6}},
        "limit_range": {"default": {"cpu": "1"}, "default_request": {"cpu": "500m"}, "max": {"cpu": "4"}},
    }
    assert (await http.put("/v1/quota-profiles/xl", json=profile, headers=ALICE)).status_code == 403
    # A body failing its model still hears that its name is not the URL's, in the same answer.
    misnamed = await http.put(
        "/v1/quota-profiles/xl", json={**profile, "name": "xxl", "resource_quota": {}}, headers=ADMIN
    )
    assert error_fields(misnamed, 422) == {"name", "resource_quota"}
    assert (await http.put("/v1/quota-profiles/xl", json=profile, headers=ADMIN)).status_code == 201

    broken_pack = {
        "manifests": [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "name": "oops",
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingres": []},
            }
        ],
        "rules": [{"type": "max_ttl_hours", "hours": -1}],
    }
    invalid = await http.put("/v1/policy-packs/load-testing", json=broken_pack, headers=ADMIN)
    assert error_fields(invalid, 422) == {"rules[0].hours"}
    broken_pack["rules"] = []
    invalid = await http.put("/v1/policy-packs/load-testing", json=broken_pack, headers=ADMIN)
    assert error_fields(invalid, 422) == {"manifests[0]"}
    assert "'ingres' was unexpected" in invalid.text

    pack = {
        "description": "Load tests are short and never in us-west-2.",
        "rules": [
            {"type": "max_ttl_hours", "hours": 4},
            {"type": "forbidden_regions", "regions": ["us-west-2"]},
        ],
        "manifests": [
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "name": "keep-one",
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            }
        ],
        "metadata": {"purpose": "load-test"},
    }
    assert (await http.put("/v1/policy-packs/load-testing", json=pack, headers=ADMIN)).status_code == 201
    created = await http.put(
        "/v1/environment-classes/load-test",
        json={
            "allowed_regions": ["us-east-1", "us-west-2"],
            "max_ttl_hours": 8,
            "quota_profile": "xl",
            "policy_packs": ["baseline-security", "load-testing"],
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text

    # A pack may not clash with another pack of a class that uses it.
    clash = {
        "manifests": [{**pack["manifests"][0]}],
        "namespace_labels": {"pod-security.kubernetes.io/enforce": "baseline"},
    }
    refused = await http.put("/v1/policy-packs/load-testing", json=clash, headers=ADMIN)
    assert error_fields(refused, 422) == {"namespace_labels"}
    assert "baseline-security" in refused.text

    # The new profile, pack and class decide the next request at once (here: a dry run).
    plan = await http.post(
        "/v1/environment-requests",
        params={"dry_run": "true"},
        json={**PREVIEW, "class": "load-test", "region": "us-west-2", "ttl_hours": 6},
        headers=ALICE,
    )
    assert plan.status_code == 200, plan.text
    decision = plan.json()["decision"]
    assert decision["outcome"] == "rejected"
    assert [(r["code"], r["pack"]) for r in decision["reasons"]] == [
        ("ttl_exceeds_pack_maximum", "load-testing"),
        ("region_forbidden", "load-testing"),
    ]
    assert plan.json()["plan"]["resource_quota"] == {"pods": "50", "requests.cpu": "6"}
    assert plan.json()["manifests"] is None


# -- teams and budgets ------------------------------------------------------------------------------------


async def test_team_budgets_and_spend(stack: Stack) -> None:
    http = stack.http
    assert (
        await http.put("/v1/teams/payments/budget", json={"monthly_usd": 500}, headers=ALICE)
    ).status_code == 403
    assert error_fields(
        await http.put("/v1/teams/payments/budget", json={"monthly_usd": -1, "eur": 3}, headers=ADMIN), 422
    ) == {"monthly_usd", "eur"}
    assert error_fields(
        await http.put("/v1/teams/Pay_ments/budget", json={"monthly_usd": 1}, headers=ADMIN), 422
    ) == {"team"}
    updated = await http.put("/v1/teams/payments/budget", json={"monthly_usd": 500}, headers=ADMIN)
    assert updated.status_code == 200, updated.text
    assert updated.json()["budget_updated_by"] == "root@example.com"

    created = await http.post("/v1/environment-requests", json=PREVIEW, headers=ALICE)
    assert created.status_code == 201

    async def counted() -> Any:
        team = (await http.get("/v1/teams/payments", headers=ALICE)).json()
        return team if team["spend_usd"] else None

    team = await wait_until(counted, what="the request counted in the team's spend")
    assert (team["monthly_budget_usd"], team["spend_usd"], team["remaining_usd"]) == (500.0, 150.0, 350.0)
    assert team["active_environments"][0]["request_id"] == created.json()["id"]
    assert team["active_environments"][0]["class"] == "preview"

    other = await http.get("/v1/teams/billing", headers=ALICE)
    assert other.status_code == 403
    assert (await http.get("/v1/teams/payments", headers=VIEWER)).status_code == 200

    # The decision stored on the request shows the budget check.
    request_id = created.json()["id"]

    async def decided() -> Any:
        current = (await http.get(f"/v1/environment-requests/{request_id}", headers=ALICE)).json()
        return current if current["policy_decision"] else None

    decision = (await wait_until(decided, what="policy decision stored"))["policy_decision"]
    assert decision["budget"]["monthly_budget_usd"] == 500.0
    assert decision["outcome"] == "allowed"


# -- dry run -------------------------------------------------------------------------------------------


async def outboxes_drained(stack: Stack) -> bool:
    return all([await outbox_drained(stack.env["PLATFORM_POSTGRES_DSN"], schema) for schema in SCHEMAS])


async def test_a_dry_run_shows_the_plan_stores_nothing_and_matches_the_real_render(stack: Stack) -> None:
    http = stack.http
    await http.put("/v1/teams/payments/budget", json={"monthly_usd": 1000}, headers=ADMIN)
    await wait_until(lambda: outboxes_drained(stack), what="every staged event published")
    rows_before, sequence_before = (
        row_counts(stack.env["PLATFORM_POSTGRES_DSN"], SCHEMAS),
        await stack.last_sequence(),
    )

    key = {"Idempotency-Key": "payments-pr-42"}
    response = await http.post(
        "/v1/environment-requests", params={"dry_run": "true"}, json=PREVIEW, headers={**ALICE, **key}
    )
    assert response.status_code == 200, response.text
    plan = response.json()
    # Anything the dry run staged would be a row still, or, once relayed, a stream message.
    await wait_until(lambda: outboxes_drained(stack), what="every staged event published")
    assert row_counts(stack.env["PLATFORM_POSTGRES_DSN"], SCHEMAS) == rows_before
    assert await stack.last_sequence() == sequence_before
    listed = (await http.get("/v1/environment-requests", headers=ALICE)).json()["items"]
    assert listed == []

    assert plan["dry_run"] is True
    assert plan["placeholder_id"] is False
    assert plan["request"]["revision"] == "pr-42"
    assert plan["decision"] == {
        "outcome": "allowed",
        "reasons": [],
        "requires_approval": False,
        "approvals_required": 0,
        "auto_reconcile": True,
    }
    assert plan["plan"]["resource_quota"] == QUOTAS["preview"]
    assert plan["plan"]["policy_packs"] == ["baseline-security", "preview-networking", "cost-guardrails"]
    assert plan["budget"] == {
        "team": "payments",
        "monthly_budget_usd": 1000.0,
        "active_spend_usd": 0.0,
        "request_cost_usd": 150.0,
        "projected_spend_usd": 150.0,
        "exceeded": False,
    }
    manifests = plan["manifests"]
    assert [file["name"] for file in manifests["files"]] == PREVIEW_FILES
    assert manifests["gitops_path"] == f"clusters/us-east-1/teams/payments/payments-api/{plan['request_id']}"
    for file in manifests["files"]:
        assert len(list(yaml.safe_load_all(file["content"]))) == 1

    # The real create with the same key gets the same id, and the renderer then produces
    # exactly those bytes for its first generation.
    created = await http.post("/v1/environment-requests", json=PREVIEW, headers={**ALICE, **key})
    assert created.status_code == 201, created.text
    assert created.json()["id"] == plan["request_id"]

    async def rendered() -> Any:
        events = [e for e in await stack.events("request.rendered") if e.subject == plan["request_id"]]
        return events[0].decode_data() if events else None

    bundle = await wait_until(rendered, what="the real request rendered")
    assert bundle.digest == manifests["digest"]
    assert [(f.name, f.content) for f in bundle.files] == [
        (f["name"], f["content"]) for f in manifests["files"]
    ]


async def test_dry_runs_of_refused_invalid_and_keyless_requests(stack: Stack) -> None:
    http = stack.http
    await http.put("/v1/teams/payments/budget", json={"monthly_usd": 100}, headers=ADMIN)
    over = await http.post(
        "/v1/environment-requests", params={"dry_run": "true"}, json=PREVIEW, headers=ALICE
    )
    assert over.status_code == 200, over.text
    plan = over.json()
    assert plan["placeholder_id"] is True
    assert plan["request_id"] == "req-0000000000000000"
    assert plan["decision"]["outcome"] == "rejected"
    assert [r["code"] for r in plan["decision"]["reasons"]] == ["team_budget_exceeded"]
    assert plan["budget"]["exceeded"] is True
    assert plan["manifests"] is None

    invalid = await http.post(
        "/v1/environment-requests",
        params={"dry_run": "true"},
        json={**PREVIEW, "team": "../etc", "ttl_hours": 500},
        headers=ALICE,
    )
    assert error_fields(invalid, 422) == {"team", "ttl_hours"}
    other_team = await http.post(
        "/v1/environment-requests",
        params={"dry_run": "true"},
        json={**PREVIEW, "team": "billing"},
        headers=ALICE,
    )
    assert other_team.status_code == 403

    production = await http.post(
        "/v1/environment-requests",
        params={"dry_run": "true"},
        json={**PREVIEW, "class": "production", "ttl_hours": 12, "revision": "v1.2.3"},
        headers=ALICE,
    )
    assert production.status_code == 200, production.text
    decision = production.json()["decision"]
    assert (decision["outcome"], decision["requires_approval"], decision["approvals_required"]) == (
        "allowed",
        True,
        1,
    )
    names = [file["name"] for file in production.json()["manifests"]["files"]]
    assert "pack-zero-trust-networking-networkpolicy-default-deny-egress.yaml" in names
    assert (await http.get("/v1/environment-requests", headers=ALICE)).json()["items"] == []


# -- platformctl ---------------------------------------------------------------------------------------


async def platformctl_as(
    stack: Stack, *args: str, role: str = "admin", **claims: Any
) -> tuple[int, str, str]:
    """platformctl against this stack's gateway with a token for ``role``: (exit code, stdout, stderr)."""
    env = clean_env(PLATFORM_API=stack.base_url, PLATFORM_TOKEN=mint(role, **claims))
    result = await platformctl(*args, env=env)
    return result.code, result.stdout, result.stderr


async def test_platformctl_applies_classes_sets_budgets_and_shows_plans(stack: Stack, tmp_path: Path) -> None:
    classes = tmp_path / "classes.yaml"
    classes.write_text(
        yaml.safe_dump_all(
            [
                {
                    "name": "demo",
                    "allowed_regions": ["us-east-1"],
                    "max_ttl_hours": 4,
                    "quota_profile": "small",
                },
                {
                    "name": "preview",
                    **{
                        k: v
                        for k, v in (await stack.http.get("/v1/environment-classes/preview", headers=VIEWER))
                        .json()
                        .items()
                        if k != "name"
                    },
                    "max_ttl_hours": 36,
                },
            ]
        )
    )
    code, out, err = await platformctl_as(
        stack, "classes", "apply", "-f", str(classes), email="root@example.com"
    )
    assert code == 0, err
    assert err.splitlines() == ["environment class demo created", "environment class preview configured"]
    assert [item["name"] for item in json.loads(out)["items"]] == ["demo", "preview"]
    code, out, _ = await platformctl_as(stack, "classes", "get", "--name", "preview", role="viewer")
    assert json.loads(out)["max_ttl_hours"] == 36

    code, _, err = await platformctl_as(stack, "classes", "apply", "-f", str(classes), role="requester")
    assert code == 4  # authorization: the exit code scripts branch on
    assert "requester role cannot change environment classes" in err

    # A file that leaves fields out replaces them with their defaults, and says so.
    partial = tmp_path / "partial.yaml"
    partial.write_text(
        yaml.safe_dump(
            {"name": "demo", "allowed_regions": ["us-east-1"], "max_ttl_hours": 8, "quota_profile": "small"}
        )
    )
    demo = (await stack.http.get("/v1/environment-classes/demo", headers=VIEWER)).json()
    put = await stack.http.put(
        "/v1/environment-classes/demo",
        json={
            **{k: v for k, v in demo.items() if k != "name"},
            "description": "demo env",
            "default_namespaces": 2,
        },
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text
    code, out, err = await platformctl_as(
        stack, "classes", "apply", "-f", str(partial), email="root@example.com"
    )
    assert code == 0, err
    first, second = err.splitlines()
    assert first == "environment class demo configured"
    assert "a PUT replaces the whole environment class" in second
    assert 'description "demo env" -> ""' in second
    assert "default_namespaces 2 -> 1" in second
    assert "max_ttl_hours" not in second  # in the file: changed on purpose, not by omission
    assert json.loads(out)["items"][0]["description"] == ""

    code, out, err = await platformctl_as(
        stack, "teams", "set-budget", "--team", "payments", "--monthly-usd", "120", email="root@example.com"
    )
    assert code == 0, err
    assert json.loads(out)["monthly_budget_usd"] == 120.0
    code, out, _ = await platformctl_as(
        stack, "teams", "get", "--team", "payments", role="requester", teams=["payments"]
    )
    assert json.loads(out)["spend_usd"] == 0.0
    code, out, _ = await platformctl_as(
        stack, "teams", "get", "--team", "payments", "-o", "table", role="viewer"
    )
    assert "budget:    $120.00 / month" in out

    create = (
        "request", "create", "--app", "payments-api", "--team", "payments", "--class", "preview",
        "--region", "us-east-1", "--ttl", "24", "--owner", "alice@example.com",
        "--repo", "https://github.com/example/payments-api.git", "--dry-run",
    )  # fmt: skip
    code, out, err = await platformctl_as(stack, *create, role="requester", teams=["payments"])
    assert code == 1  # a pipeline can gate on the dry run; the plan is printed anyway
    plan = json.loads(out)
    assert plan["decision"]["outcome"] == "rejected"
    assert plan["decision"]["reasons"][0]["code"] == "team_budget_exceeded"
    assert err.startswith(
        "platformctl: the request would be rejected: team payments would spend $150.00/month"
    )

    await platformctl_as(
        stack, "teams", "set-budget", "--team", "payments", "--clear", email="root@example.com"
    )
    code, out, err = await platformctl_as(stack, *create, "-o", "table", role="requester", teams=["payments"])
    assert code == 0, err
    assert "decision:  allowed" in out
    assert "quota:     small (limits.cpu=4, limits.memory=8Gi" in out
    assert "# namespace.yaml\napiVersion: v1\nkind: Namespace\n" in out
    assert "# pack-cost-guardrails-resourcequota-cost-guardrails.yaml" in out
    assert (await stack.http.get("/v1/environment-requests", headers=ALICE)).json()["items"] == []
