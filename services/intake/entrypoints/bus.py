"""Intake's bus entrypoints: RPC verbs for the gateway and event consumers."""

from __future__ import annotations

from contracts.events import ClassUpserted
from contracts.rpc import (
    CREATE_REQUEST,
    DELETE,
    EXTEND,
    GET_REQUEST,
    LIST_ALL_EVENTS,
    LIST_EVENTS,
    LIST_REQUESTS,
    RECONCILE,
    VALIDATE_REQUEST,
)
from libs.inbox import record_only
from libs.service_kit import ServiceKit
from libs.topology import Consumer, ServiceTopology, events_under, skipped_on_replay
from services.intake.domain.model import OWN_EVENTS
from services.intake.service_layer.handlers import IntakeService


def register(kit: ServiceKit, service: IntakeService) -> None:
    kit.route(CREATE_REQUEST, service.create_request, more_problems=service.catalog_problems_of)
    kit.route(VALIDATE_REQUEST, service.validate_request, more_problems=service.catalog_problems_of)
    kit.route(GET_REQUEST, service.get_request)
    kit.route(LIST_REQUESTS, service.list_requests)
    kit.route(LIST_EVENTS, service.list_events)
    kit.route(LIST_ALL_EVENTS, service.list_all_events)
    kit.route(RECONCILE, service.reconcile)
    kit.route(EXTEND, service.extend)
    kit.route(DELETE, service.delete)
    kit.subscribe(TOPOLOGY, service)


TOPOLOGY = ServiceTopology(
    name="intake",
    consumers=(
        # A class event is about no request: a failure has nothing to be reported on.
        Consumer(
            "classes",
            {
                ClassUpserted: skipped_on_replay(
                    IntakeService.on_class_upserted,
                    "an older class event would roll the replica of the class back",
                )
            },
            on_give_up=record_only,
            on_retry=None,
        ),
        # Every request event but its own (OWN_EVENTS: recorded as they are staged, two
        # deliveries fewer per request): intake projects the lifecycle status from all of
        # them, those added later included. Events of one request are applied in stream order (ordered
        # by subject). A projection that keeps failing is dead-lettered and reported nowhere
        # else: reporting it as request.failed (or request.stage_retrying) would feed intake
        # an event about the same request, whose projection would fail again, in a loop.
        Consumer(
            "requests",
            dict.fromkeys(
                (event for event in events_under("request") if event not in OWN_EVENTS),
                skipped_on_replay(
                    IntakeService.on_request_event,
                    "the request's status and timeline: a replayed event would be recorded again",
                ),
            ),
            ordered_by_subject=True,
            # Five events per request: one transaction per fetch, not per event, and one
            # statement locking the fetch's requests, not one per event.
            batched=True,
            preload=IntakeService.lock_requests,
            on_give_up=record_only,
            on_retry=None,
        ),
    ),
    publishes=OWN_EVENTS,
)
