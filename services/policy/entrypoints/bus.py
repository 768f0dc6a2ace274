"""Policy's bus entrypoints: catalog and budget RPCs for the gateway, request evaluation, the
budget ledger's release events."""

from __future__ import annotations

from libs.topology import Consumer, ServiceTopology

from contracts.events import (
    ClassUpserted,
    RequestFailed,
    RequestPolicyEvaluated,
    RequestRejected,
    RequestStageRetrying,
    RequestSubmitted,
    RequestTeardownRequested,
)
from contracts.rpc import (
    GetClass,
    GetPolicyPack,
    GetQuotaProfile,
    GetTeam,
    ListClasses,
    ListPolicyPacks,
    ListQuotaProfiles,
    PlanRequest,
    SetTeamBudget,
    UpsertClass,
    UpsertPolicyPack,
    UpsertQuotaProfile,
)
from libs.service_kit import ServiceKit
from services.policy.service_layer.catalog import CatalogService
from services.policy.service_layer.handlers import PolicyService


def register(kit: ServiceKit, service: PolicyService, catalog: CatalogService) -> None:
    kit.route("list_classes", ListClasses, service.list_classes)
    kit.route("get_class", GetClass, service.get_class)
    kit.route("plan", PlanRequest, service.plan)
    kit.route("upsert_class", UpsertClass, catalog.upsert_class)
    kit.route("list_quota_profiles", ListQuotaProfiles, catalog.list_quota_profiles)
    kit.route("get_quota_profile", GetQuotaProfile, catalog.get_quota_profile)
    kit.route("upsert_quota_profile", UpsertQuotaProfile, catalog.upsert_quota_profile)
    kit.route("list_policy_packs", ListPolicyPacks, catalog.list_policy_packs)
    kit.route("get_policy_pack", GetPolicyPack, catalog.get_policy_pack)
    kit.route("upsert_policy_pack", UpsertPolicyPack, catalog.upsert_policy_pack)
    kit.route("get_team", GetTeam, catalog.get_team)
    kit.route("set_team_budget", SetTeamBudget, catalog.set_team_budget)
    kit.subscribe(TOPOLOGY, service)


TOPOLOGY = ServiceTopology(
    name="policy",
    consumers=(
        Consumer("evaluate", {RequestSubmitted: PolicyService.on_request_submitted}),
        # An environment stops counting against its team's budget when an approver rejects it
        # or its teardown is requested (docs/policy.md "Budgets").
        Consumer("rejections", {RequestRejected: PolicyService.on_request_rejected}),
        Consumer("teardowns", {RequestTeardownRequested: PolicyService.on_teardown_requested}),
    ),
    publishes=(RequestPolicyEvaluated, ClassUpserted, RequestFailed, RequestStageRetrying),
)
