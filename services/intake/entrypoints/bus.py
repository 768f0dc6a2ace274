"""Intake's bus entrypoints: RPC verbs for the gateway and event consumers."""

from __future__ import annotations

from contracts.rpc import (
    CreateRequest,
    DeleteRequest,
    ExtendRequest,
    GetRequest,
    ListAllEvents,
    ListRequests,
    ReconcileRequest,
)
from libs.inbox import record_only
from libs.service_kit import ServiceKit
from services.intake.service_layer.handlers import IntakeService


def register(kit: ServiceKit, service: IntakeService) -> None:
    kit.route("create_request", CreateRequest, service.create_request)
    kit.route("get_request", GetRequest, service.get_request)
    kit.route("list_requests", ListRequests, service.list_requests)
    kit.route("list_events", GetRequest, service.list_events)
    kit.route("list_all_events", ListAllEvents, service.list_all_events)
    kit.route("reconcile", ReconcileRequest, service.reconcile)
    kit.route("extend", ExtendRequest, service.extend)
    kit.route("delete", DeleteRequest, service.delete)
    kit.consume("classes", "class.upserted", {"class.upserted": service.on_class_upserted})
    # Every request event: intake projects the lifecycle status from all of them. Events
    # of one request are applied in stream order (ordered by subject). A projection that
    # keeps failing is dead-lettered and reported nowhere else: reporting it as
    # request.failed (or request.stage_retrying) would feed intake an event about the same
    # request, whose projection would fail again, in a loop.
    kit.consume(
        "requests",
        "request.>",
        dict.fromkeys(REQUEST_EVENTS, service.on_request_event),
        ordered_by_subject=True,
        on_give_up=record_only,
        on_retry=None,
    )


REQUEST_EVENTS = (
    "request.submitted",
    "request.policy_evaluated",
    "request.approval_recorded",
    "request.approved",
    "request.rejected",
    "request.reconcile_requested",
    "request.rendered",
    "request.promotion_opened",
    "request.published",
    "request.bootstrapped",
    "request.drift_detected",
    "request.failed",
    "request.stage_retrying",
    "request.extended",
    "request.teardown_requested",
    "request.unpublished",
    "request.torn_down",
)
