"""The role x route matrix of SPEC.md, every cell asserted against the real stack.

Each cell is one test: a route, a role (or no token), the token's team scope (no teams
claim, the request's team, another team) and whether the gateway enforces team scoping
(a second gateway process with ``PLATFORM_ENFORCE_TEAM_SCOPE=true`` in front of the same
services). Allowed cells must answer the route's 2xx (and really act: each acting cell
gets a request of its own in the right state), denied ones 403 (including requests of other
teams), and no token 401.

The table is data: routes added later (class and budget administration) are new rows, and
every operation of the served OpenAPI document must have one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest

from contracts.attestation import sign_approval
from tests.support.api_flows import SIGNATURE_HEADER, create, example
from tests.support.isolation import TEST_APPROVAL_SECRET
from tests.support.stack import RunningStack, extra_gateway, mint_token

ROLES = ("viewer", "requester", "approver", "admin")
EVERYONE = frozenset(ROLES)
ACTORS = {
    "viewer": "vic@example.com",
    "requester": "rita@example.com",
    "approver": "bob@example.com",
    "admin": "root@example.com",
}
# Token team scope: no teams claim, the team of every target request, another team.
SCOPES = {"unscoped": None, "own": ["payments"], "other": ["search"]}


@dataclass(frozen=True)
class Route:
    """One row of the matrix.

    ``target``: the kind of request (or dead letter) an acting cell needs, fresh per cell
    when ``fresh``; ``other_team``: the answer for a scoped non-admin token of another team.
    """

    name: str
    method: str
    path: str
    roles: frozenset[str] | None  # None: no authentication at all
    success: int
    target: str | None = None
    fresh: bool = False
    team_scoped: bool = True
    other_team: int = 403
    body: Callable[[str], Any] | None = None
    params: dict[str, str] = field(default_factory=dict)
    # A PUT that writes back what this GET returns (minus ``name``): a real, harmless upsert.
    body_from: str | None = None
    # Roles limited to their own teams on this route (SPEC.md: teams are readable by all,
    # requesters only their own).
    scoped_roles: frozenset[str] = frozenset({"viewer", "requester", "approver"})


ROUTES = [
    Route("healthz", "GET", "/healthz", None, 200, team_scoped=False),
    Route("readyz", "GET", "/readyz", None, 200, team_scoped=False),
    Route("metrics", "GET", "/metrics", None, 200, team_scoped=False),
    Route("whoami", "GET", "/v1/whoami", EVERYONE, 200, team_scoped=False),
    Route("sign-in settings", "GET", "/v1/auth/config", None, 200, team_scoped=False),
    Route("platform status", "GET", "/v1/status", EVERYONE, 200, team_scoped=False),
    Route("list classes", "GET", "/v1/environment-classes", EVERYONE, 200, team_scoped=False),
    Route("get class", "GET", "/v1/environment-classes/preview", EVERYONE, 200, team_scoped=False),
    Route(
        "list requests",
        "GET",
        "/v1/environment-requests",
        EVERYONE,
        200,
        other_team=403,
        params={"team": "payments"},
    ),
    Route(
        "create request",
        "POST",
        "/v1/environment-requests",
        frozenset({"requester", "admin"}),
        201,
        other_team=403,
        body=lambda _: example("preview", app=f"m-{uuid.uuid4().hex[:8]}"),
    ),
    Route(
        "plan request (dry run)",
        "POST",
        "/v1/environment-requests",
        frozenset({"requester", "admin"}),
        200,
        other_team=403,
        body=lambda _: example("preview", app=f"d-{uuid.uuid4().hex[:8]}"),
        params={"dry_run": "true"},
    ),
    Route("get request", "GET", "/v1/environment-requests/{id}", EVERYONE, 200, target="shared"),
    Route("request timeline", "GET", "/v1/environment-requests/{id}/events", EVERYONE, 200, target="shared"),
    Route(
        "approve",
        "POST",
        "/v1/environment-requests/{id}/approve",
        frozenset({"approver", "admin"}),
        200,
        target="pending",
        fresh=True,
    ),
    Route(
        "reject",
        "POST",
        "/v1/environment-requests/{id}/reject",
        frozenset({"approver", "admin"}),
        200,
        target="pending",
        fresh=True,
        body=lambda _: {"reason": "not this quarter"},
    ),
    Route(
        "reconcile",
        "POST",
        "/v1/environment-requests/{id}/reconcile",
        frozenset({"requester", "approver", "admin"}),
        202,
        target="ready",
        fresh=True,
    ),
    Route(
        "extend",
        "PATCH",
        "/v1/environment-requests/{id}",
        frozenset({"requester", "admin"}),
        200,
        target="shared",
        body=lambda _: {"ttl_hours": 48},
    ),
    Route(
        "delete",
        "DELETE",
        "/v1/environment-requests/{id}",
        frozenset({"requester", "admin"}),
        202,
        target="any",
        fresh=True,
    ),
    Route("event feed", "GET", "/v1/events", EVERYONE, 200, other_team=200),
    Route("dead letters", "GET", "/v1/dead-letters", frozenset({"admin"}), 200, team_scoped=False),
    Route(
        "replay dead letter",
        "POST",
        "/v1/dead-letters/intake/{id}/replay",
        frozenset({"admin"}),
        202,
        target="dead_letter",
        fresh=True,
        team_scoped=False,
    ),
    Route(
        "replay a consumer (dry run)",
        "POST",
        "/v1/consumers/intake/replay",
        frozenset({"admin"}),
        200,
        team_scoped=False,
        body=lambda _: {"from_sequence": 1, "dry_run": True},
    ),
    # Catalog administration and budgets (docs/policy.md).
    Route(
        "upsert class",
        "PUT",
        "/v1/environment-classes/preview",
        frozenset({"admin"}),
        200,
        team_scoped=False,
        body_from="/v1/environment-classes/preview",
    ),
    Route("list quota profiles", "GET", "/v1/quota-profiles", EVERYONE, 200, team_scoped=False),
    Route("get quota profile", "GET", "/v1/quota-profiles/small", EVERYONE, 200, team_scoped=False),
    Route(
        "upsert quota profile",
        "PUT",
        "/v1/quota-profiles/small",
        frozenset({"admin"}),
        200,
        team_scoped=False,
        body_from="/v1/quota-profiles/small",
    ),
    Route("list policy packs", "GET", "/v1/policy-packs", EVERYONE, 200, team_scoped=False),
    Route("get policy pack", "GET", "/v1/policy-packs/baseline-security", EVERYONE, 200, team_scoped=False),
    Route(
        "upsert policy pack",
        "PUT",
        "/v1/policy-packs/baseline-security",
        frozenset({"admin"}),
        200,
        team_scoped=False,
        body_from="/v1/policy-packs/baseline-security",
    ),
    Route(
        "get team",
        "GET",
        "/v1/teams/payments",
        EVERYONE,
        200,
        other_team=403,
        scoped_roles=frozenset({"requester"}),
    ),
    Route(
        "set team budget",
        "PUT",
        "/v1/teams/payments/budget",
        frozenset({"admin"}),
        200,
        team_scoped=False,
        body=lambda _: {"monthly_usd": None},
    ),
]


def expected(route: Route, role: str | None, scope: str, enforced: bool) -> int:
    if route.roles is None:
        return route.success
    if role is None:
        return 401
    if role not in route.roles:
        return 403
    if route.team_scoped and role != "admin":
        if enforced and scope == "unscoped":
            return 403
        if scope == "other" and role in route.scoped_roles:
            return route.other_team
    return route.success


@dataclass(frozen=True)
class Cell:
    route: Route
    role: str | None
    scope: str
    enforced: bool

    @property
    def status(self) -> int:
        return expected(self.route, self.role, self.scope, self.enforced)

    @property
    def acts(self) -> bool:
        """The cell changes its target, so it needs one of its own."""
        return self.route.fresh and 200 <= self.status < 300

    @property
    def id(self) -> str:
        who = self.role or "no-token"
        return f"{self.route.name}|{who}|{self.scope}|{'enforced' if self.enforced else 'open'}"


def cells() -> list[Cell]:
    found = []
    for route in ROUTES:
        found.append(Cell(route, None, "unscoped", False))
        if route.roles is None:
            continue
        for enforced in (False, True):
            for role in ROLES:
                for scope in SCOPES:
                    found.append(Cell(route, role, scope, enforced))
    return found


CELLS = cells()


# -- the stack and the targets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateways(
    stack: RunningStack, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[bool, str]]:
    with extra_gateway(
        stack_env, tmp_path_factory.mktemp("enforced"), {"PLATFORM_ENFORCE_TEAM_SCOPE": "true"}
    ) as url:
        yield {False: stack.api_url, True: url}


@pytest.fixture(scope="module")
def clients(gateways: dict[bool, str]) -> Iterator[dict[bool, httpx.Client]]:
    """One client per gateway for the whole matrix: making a client per cell cost more than
    the cell's request. Each cell still gets a connection of its own (none is kept alive, so
    none is reused as the gateway closes it) and sends its own credentials and no cookies."""
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    with (
        httpx.Client(base_url=gateways[False], timeout=15, limits=fresh_connections) as open_gateway,
        httpx.Client(base_url=gateways[True], timeout=15, limits=fresh_connections) as enforcing_gateway,
    ):
        yield {False: open_gateway, True: enforcing_gateway}


class Targets:
    """Requests (and dead letters) for the cells, made up front in bulk: one per acting cell,
    plus one shared per kind for the cells that only read or are refused."""

    def __init__(self, stack: RunningStack, env: dict[str, str]) -> None:
        self.stack = stack
        self.pool: dict[str, list[str]] = {}
        self.shared: dict[str, str] = {}
        needed: dict[str, int] = {}
        for cell in CELLS:
            if cell.route.target and cell.acts:
                needed[cell.route.target] = needed.get(cell.route.target, 0) + 1
        kinds = {cell.route.target for cell in CELLS if cell.route.target}
        with stack.client("alice@example.com", "requester", ["payments"]) as alice:
            made: dict[str, list[str]] = {}
            for kind in kinds - {"dead_letter"}:
                made[kind] = [self._create(alice, kind) for _ in range(needed.get(kind, 0) + 1)]
            for kind, ids in made.items():
                settled = {"pending": {"pending_approval"}, "ready": {"ready"}}.get(kind)
                for request_id in ids:
                    if settled:
                        stack.wait_for_status(alice, request_id, settled)
                self.shared[kind] = ids[0]
                self.pool[kind] = ids[1:]
        if "dead_letter" in kinds:
            self.pool["dead_letter"] = self._dead_letters(env, needed.get("dead_letter", 0))
            self.shared["dead_letter"] = "999999"  # refused before any lookup

    @staticmethod
    def _create(alice: httpx.Client, kind: str) -> str:
        name = "production" if kind == "pending" else "preview"
        return str(create(alice, example(name, app=f"t-{uuid.uuid4().hex[:10]}"))["id"])

    def _dead_letters(self, env: dict[str, str], count: int) -> list[str]:
        """Events intake cannot decode become dead letters at once (no retries for those)."""

        async def publish() -> None:
            nc = await nats.connect(env["PLATFORM_NATS_URL"])
            js = nc.jetstream()
            for _ in range(count):
                # On a type intake handles: durables only receive the types they have handlers for.
                await js.publish(
                    f"{env['PLATFORM_EVENTS_SUBJECT_PREFIX']}.request.approved",
                    b"this is not an event envelope",
                    headers={"Nats-Msg-Id": str(uuid.uuid4())},
                )
            await nc.close()

        asyncio.run(publish())
        with self.stack.client("root@example.com", "admin") as admin:
            for _ in range(100):
                items = admin.get("/v1/dead-letters", params={"service": "intake"}).json()["items"]
                if len(items) >= count:
                    return [str(item["id"]) for item in items[:count]]
                time.sleep(0.1)
        raise AssertionError("intake did not dead-letter the undecodable events")

    def for_cell(self, cell: Cell) -> str:
        kind = cell.route.target
        assert kind is not None
        return self.pool[kind].pop() if cell.acts else self.shared[kind]


@pytest.fixture(scope="module")
def targets(stack: RunningStack, stack_env: dict[str, str]) -> Targets:
    return Targets(stack, stack_env)


# -- the cells ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS, ids=[cell.id for cell in CELLS])
def test_cell(cell: Cell, clients: dict[bool, httpx.Client], targets: Targets) -> None:
    route = cell.route
    target = targets.for_cell(cell) if route.target else ""
    path = route.path.replace("{id}", target)
    headers: dict[str, str] = {}
    if cell.role is not None:
        actor = ACTORS[cell.role]
        headers["Authorization"] = f"Bearer {mint_token(actor, cell.role, SCOPES[cell.scope])}"
        if route.name == "approve":
            headers[SIGNATURE_HEADER] = sign_approval(
                TEST_APPROVAL_SECRET, request_id=target, actor=actor, class_name="production"
            )
    body = route.body(target) if route.body else None
    if route.body_from is not None:
        admin = {"Authorization": f"Bearer {mint_token(ACTORS['admin'], 'admin')}"}
        current = clients[False].get(route.body_from, headers=admin).json()
        body = {key: value for key, value in current.items() if key != "name"}
    client = clients[cell.enforced]
    client.cookies.clear()
    response = client.request(
        route.method,
        path,
        headers=headers,
        params=route.params,
        content=json.dumps(body).encode() if body is not None else None,
    )
    assert response.status_code == cell.status, f"{cell.id}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"error", "code", "details", "type", "title", "status", "detail", "instance"}
        assert (
            error["code"] == {401: "unauthorized", 403: "forbidden", 404: "not_found"}[response.status_code]
        )
    if cell.acts and route.name in {"approve", "reject", "reconcile", "delete"}:
        # The allowed cell really acted on its own target.
        after = {"approve": "approved", "reject": "rejected", "reconcile": "queued", "delete": "deleting"}
        assert response.json()["status"] == after[route.name]


def documented_operation(route: Route, templates: list[str]) -> tuple[str, str]:
    """The document's (method, path template) that ``route`` calls."""
    concrete = route.path.replace("{id}", "x")
    matching = [
        template
        for template in templates
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), concrete)
    ]
    assert len(matching) == 1, f"{route.name}: {route.path} matches {matching} in the document"
    return route.method, matching[0]


def test_the_matrix_has_a_row_for_every_documented_operation(stack: RunningStack) -> None:
    """Derived from the served document, so a route added without a row fails here."""
    document = httpx.get(f"{stack.api_url}/schema/openapi.json", timeout=15).json()
    templates = list(document["paths"])
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert len(documented) > 20
    assert {documented_operation(route, templates) for route in ROUTES} == documented


def test_the_matrix_covers_every_role() -> None:
    assert len(CELLS) == sum(1 if r.roles is None else 1 + 2 * len(ROLES) * len(SCOPES) for r in ROUTES)
    acting = [cell for cell in CELLS if cell.acts]
    assert {cell.route.name for cell in acting} == {
        "approve",
        "reject",
        "reconcile",
        "delete",
        "replay dead letter",
    }
