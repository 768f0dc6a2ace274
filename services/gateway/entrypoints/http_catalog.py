"""Catalog, budget and team routes (SPEC.md "HTTP API"; docs/policy.md).

- ``PUT /v1/environment-classes/{name}`` (admin): create or replace a class;
- ``GET|PUT /v1/quota-profiles[/{name}]`` and ``GET|PUT /v1/policy-packs[/{name}]``: the
  catalog's data, readable by everyone, changed by admins;
- ``GET /v1/teams/{team}`` (everyone; requesters only their own teams) and
  ``PUT /v1/teams/{team}/budget`` (admin).

The policy service validates every body and names each failing field (422); the gateway
only checks that the body is one JSON object (400 otherwise). The dry run of a request is
``POST /v1/environment-requests?dry_run=true`` (:mod:`services.gateway.adapters.plans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath

from contracts.models import EnvironmentClass, PolicyPack, QuotaProfile, TeamBudgetView
from contracts.rpc import GetTeam, SetTeamBudget, UpsertClass, UpsertPolicyPack, UpsertQuotaProfile
from services.gateway.adapters.services import Services
from services.gateway.domain.catalog import PolicyPackList, QuotaProfileList
from services.gateway.domain.claims import Principal
from services.gateway.domain.roles import Action
from services.gateway.entrypoints.http import (
    SECURITY,
    EnvironmentClassesController,
    error_responses,
    read_json_object,
    requires,
    runtime_of,
)

UPSERT_ERRORS = error_responses(400, 401, 403, 422, 503)

CLASS_EXAMPLE: dict[str, Any] = {
    "description": "Short-lived preview environment for a branch or pull request.",
    "allowed_regions": ["us-east-1", "us-west-2", "eu-west-1"],
    "requires_approval": False,
    "auto_reconcile": True,
    "max_ttl_hours": 72,
    "default_namespaces": 1,
    "quota_profile": "small",
    "policy_packs": ["baseline-security", "preview-networking", "cost-guardrails"],
    "estimated_monthly_cost_usd": 150,
}
PROFILE_EXAMPLE: dict[str, Any] = {
    "description": "For load tests: medium limits, many pods.",
    "resource_quota": {
        "pods": {"min": 50, "per_namespace": 25},
        "requests.cpu": {"per_namespace": 6},
        "requests.memory": {"per_namespace": 12, "unit": "Gi"},
    },
    "limit_range": {
        "default": {"cpu": "1", "memory": "1Gi"},
        "default_request": {"cpu": "500m", "memory": "512Mi"},
        "max": {"cpu": "4", "memory": "8Gi"},
    },
}
PACK_EXAMPLE: dict[str, Any] = {
    "description": "Every environment carries a cost center and lives at most a week.",
    "rules": [
        {"type": "required_labels", "labels": ["cost-center"]},
        {"type": "max_ttl_hours", "hours": 168, "effect": "warn"},
    ],
    "manifests": [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "name": "keep-one",
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        }
    ],
    "metadata": {"owner-team": "finops"},
}


def json_body(description: str, example: dict[str, Any]) -> type[Operation]:
    """An operation class documenting the JSON object a handler reads itself.

    Handlers parse the body by hand (to answer 400 naming the exact problem of a malformed
    one, and to let the owning service name every invalid field), so Litestar cannot infer it.
    """

    @dataclass
    class JsonBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={
                    "application/json": OpenAPIMediaType(
                        schema=Schema(type=OpenAPIType.OBJECT, examples=[example])
                    )
                },
                required=True,
                description=description,
            )

    return JsonBodyOperation


def upserted(item: Any, created: bool) -> Response[Any]:
    """201 for a new item, 200 for a replaced one (PUT semantics)."""
    return Response(item, status_code=201 if created else 200)


def upsert_responses(model: type[Any]) -> dict[int, ResponseSpec]:
    return {
        200: ResponseSpec(data_container=model, description="Replaced", generate_examples=False),
        201: ResponseSpec(data_container=model, description="Created", generate_examples=False),
        **UPSERT_ERRORS,
    }


class EnvironmentClassesAdminController(EnvironmentClassesController):
    """The class routes with the admin's PUT. One controller per path: Litestar cannot merge
    handlers for one path from two controllers. The inherited read guard runs first, so a PUT
    authenticates twice; the second guard is the one that decides (admins only)."""

    @put(
        "/{name:str}",
        summary="Create or replace an environment class (full replace)",
        guards=[requires(Action.UPSERT_CLASS)],
        operation_class=json_body(
            "The whole class; the name comes from the URL. A full replace, not a merge: the class "
            "becomes exactly this body, and a field left out gets its default (description '', "
            "requires_approval false, approvals_required 1 with approval and 0 without, "
            "auto_reconcile true, default_namespaces 1, policy_packs [], "
            "estimated_monthly_cost_usd 0), not its current value. allowed_regions, max_ttl_hours "
            "and quota_profile are required. Unknown fields are refused; quota_profile and "
            "policy_packs must exist.",
            CLASS_EXAMPLE,
        ),
        responses=upsert_responses(EnvironmentClass),
    )
    async def upsert_class(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        name: FromPath[str],
    ) -> Response[Any]:
        """Answers with the class as stored (every field, defaults filled in). Intake's copy
        follows through ``class.upserted`` (within a second); requests already decided keep
        the plan they got. The seed never overwrites an edited class."""
        body = await read_json_object(request, runtime_of(request).settings)
        outcome = await services.upsert_class(UpsertClass(name=name, body=body, actor=principal.to_actor()))
        response = upserted(outcome.environment_class, outcome.created)
        response.headers["X-Class-Revision"] = str(outcome.revision)
        return response


class QuotaProfilesController(Controller):
    path = "/v1/quota-profiles"
    tags = ["policy catalog"]
    security = SECURITY

    @get(
        "/",
        summary="List quota profiles",
        guards=[requires(Action.READ)],
        responses=error_responses(401, 403, 503),
    )
    async def list_profiles(self, services: NamedDependency[Services]) -> QuotaProfileList:
        """Every profile, sorted by name."""
        return await services.list_quota_profiles()

    @get(
        "/{name:str}",
        summary="Get a quota profile",
        guards=[requires(Action.READ)],
        responses=error_responses(401, 403, 404, 503),
    )
    async def get_profile(self, services: NamedDependency[Services], name: FromPath[str]) -> QuotaProfile:
        return await services.get_quota_profile(name)

    @put(
        "/{name:str}",
        summary="Create or replace a quota profile",
        guards=[requires(Action.MANAGE_POLICY)],
        operation_class=json_body(
            "ResourceQuota formulas max(min, per_namespace * N) with a unit, and LimitRange values "
            "(per container) as Kubernetes quantities.",
            PROFILE_EXAMPLE,
        ),
        responses=upsert_responses(QuotaProfile),
    )
    async def upsert_profile(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        name: FromPath[str],
    ) -> Response[Any]:
        """Takes effect for the next request of every class using the profile."""
        body = await read_json_object(request, runtime_of(request).settings)
        outcome = await services.upsert_quota_profile(
            UpsertQuotaProfile(name=name, body=body, actor=principal.to_actor())
        )
        return upserted(outcome.profile, outcome.created)


class PolicyPacksController(Controller):
    path = "/v1/policy-packs"
    tags = ["policy catalog"]
    security = SECURITY

    @get(
        "/",
        summary="List policy packs",
        guards=[requires(Action.READ)],
        responses=error_responses(401, 403, 503),
    )
    async def list_packs(self, services: NamedDependency[Services]) -> PolicyPackList:
        """Every pack, sorted by name."""
        return await services.list_policy_packs()

    @get(
        "/{name:str}",
        summary="Get a policy pack",
        guards=[requires(Action.READ)],
        responses=error_responses(401, 403, 404, 503),
    )
    async def get_pack(self, services: NamedDependency[Services], name: FromPath[str]) -> PolicyPack:
        return await services.get_policy_pack(name)

    @put(
        "/{name:str}",
        summary="Create or replace a policy pack",
        guards=[requires(Action.MANAGE_POLICY)],
        operation_class=json_body(
            "Rules (a closed set of types), manifests (NetworkPolicy, ConfigMap, LimitRange, "
            "ResourceQuota, PodDisruptionBudget; checked against the Kubernetes schemas), namespace "
            "labels and ConfigMap metadata. See docs/policy.md.",
            PACK_EXAMPLE,
        ),
        responses=upsert_responses(PolicyPack),
    )
    async def upsert_pack(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        name: FromPath[str],
    ) -> Response[Any]:
        """Takes effect for the next request of every class using the pack; refused when it
        would clash with another pack of such a class."""
        body = await read_json_object(request, runtime_of(request).settings)
        outcome = await services.upsert_policy_pack(
            UpsertPolicyPack(name=name, body=body, actor=principal.to_actor())
        )
        return upserted(outcome.pack, outcome.created)


class TeamsController(Controller):
    path = "/v1/teams"
    tags = ["teams"]
    security = SECURITY

    @get(
        "/{team:str}",
        summary="A team's budget and current spend",
        guards=[requires(Action.READ, team_scoped=True)],
        responses=error_responses(401, 403, 422, 503),
    )
    async def get_team(
        self, principal: NamedDependency[Principal], services: NamedDependency[Services], team: FromPath[str]
    ) -> TeamBudgetView:
        """The monthly budget (null: none) and the estimated monthly cost of the team's active
        environments (allowed by policy, not rejected, not torn down). Requesters see only
        their own teams."""
        return await services.get_team(GetTeam(team=team, actor=principal.to_actor()))

    @put(
        "/{team:str}/budget",
        summary="Set a team's monthly budget",
        guards=[requires(Action.SET_TEAM_BUDGET)],
        operation_class=json_body(
            'The monthly budget in US dollars; `{"monthly_usd": null}` removes it.', {"monthly_usd": 5000}
        ),
        responses={
            200: ResponseSpec(data_container=TeamBudgetView, description="The team", generate_examples=False),
            **UPSERT_ERRORS,
        },
    )
    async def set_budget(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        services: NamedDependency[Services],
        team: FromPath[str],
    ) -> TeamBudgetView:
        """Applies to the next request evaluated; environments already allowed keep running."""
        body = await read_json_object(request, runtime_of(request).settings)
        return await services.set_team_budget(SetTeamBudget(team=team, body=body, actor=principal.to_actor()))


# EnvironmentClassesAdminController replaces EnvironmentClassesController in the app.
CATALOG_ROUTES = [
    EnvironmentClassesAdminController,
    QuotaProfilesController,
    PolicyPacksController,
    TeamsController,
]
