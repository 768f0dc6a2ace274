"""Policy's bus entrypoints: catalog and budget RPCs for the gateway, request evaluation, the
budget ledger's release events."""

from __future__ import annotations

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
    GET_CLASS,
    GET_POLICY_PACK,
    GET_QUOTA_PROFILE,
    GET_TEAM,
    LIST_CLASSES,
    LIST_POLICY_PACKS,
    LIST_QUOTA_PROFILES,
    PLAN,
    SET_TEAM_BUDGET,
    UPSERT_CLASS,
    UPSERT_POLICY_PACK,
    UPSERT_QUOTA_PROFILE,
)
from libs.service_kit import ServiceKit
from libs.topology import Consumer, ServiceTopology, skipped_on_replay
from services.policy.service_layer.catalog import CatalogService, name_problems_of
from services.policy.service_layer.handlers import PolicyService


def register(kit: ServiceKit, service: PolicyService, catalog: CatalogService) -> None:
    kit.route(LIST_CLASSES, service.list_classes)
    kit.route(GET_CLASS, service.get_class)
    kit.route(PLAN, service.plan)
    kit.route(UPSERT_CLASS, catalog.upsert_class, more_problems=catalog.class_problems_of)
    kit.route(LIST_QUOTA_PROFILES, catalog.list_quota_profiles)
    kit.route(GET_QUOTA_PROFILE, catalog.get_quota_profile)
    kit.route(
        UPSERT_QUOTA_PROFILE, catalog.upsert_quota_profile, more_problems=name_problems_of("quota profile")
    )
    kit.route(LIST_POLICY_PACKS, catalog.list_policy_packs)
    kit.route(GET_POLICY_PACK, catalog.get_policy_pack)
    kit.route(UPSERT_POLICY_PACK, catalog.upsert_policy_pack, more_problems=name_problems_of("policy pack"))
    kit.route(GET_TEAM, catalog.get_team)
    kit.route(SET_TEAM_BUDGET, catalog.set_team_budget)
    kit.subscribe(TOPOLOGY, service)


TOPOLOGY = ServiceTopology(
    name="policy",
    consumers=(
        Consumer(
            "evaluate",
            {
                RequestSubmitted: skipped_on_replay(
                    PolicyService.on_request_submitted,
                    "it decides the request against today's catalog and budget: moves the request's state",
                )
            },
            # One transaction per fetch: evaluations of one team in a batch see each other's
            # reservations (one transaction holds the team's lock). Two replicas' batches that
            # lock two teams in opposite orders deadlock; Postgres aborts one, and the kit
            # handles that batch again one event at a time.
            batched=True,
        ),
        # An environment stops counting against its team's budget when an approver rejects it
        # or its teardown is requested (docs/policy.md "Budgets").
        Consumer(
            "rejections",
            {
                RequestRejected: skipped_on_replay(
                    PolicyService.on_request_rejected, "it releases the request's share of its team's budget"
                )
            },
        ),
        Consumer(
            "teardowns",
            {
                RequestTeardownRequested: skipped_on_replay(
                    PolicyService.on_teardown_requested,
                    "it releases the request's share of its team's budget",
                )
            },
        ),
    ),
    publishes=(RequestPolicyEvaluated, ClassUpserted, RequestFailed, RequestStageRetrying),
)
