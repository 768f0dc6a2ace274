"""The stage-latency histograms intake observes as it projects events, from the times the
record keeps (no query): each stage from the event that began it, the end-to-end latency only
the first time an environment is ready."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

from contracts.envelope import Envelope, new_event
from contracts.events import (
    EVENT_TYPE_OF,
    RequestApproved,
    RequestBootstrapped,
    RequestPublished,
    RequestRendered,
)
from libs.telemetry import REGISTRY
from services.intake.adapters.metrics import observe_progress
from services.intake.domain.model import EnvironmentRequest, Status
from tests.unit.test_intake_lifecycle import NOW, SPEC, evaluated

# A class of its own, so other tests' observations do not show in these series.
CLASS = "stage-metrics-unit"


def project(request: EnvironmentRequest, data: Any, seconds: float) -> Envelope:
    """What intake's projection does with one event that happened ``seconds`` after NOW."""
    envelope = msgspec.structs.replace(
        new_event(EVENT_TYPE_OF[type(data)], "test", request.id, data), time=NOW + timedelta(seconds=seconds)
    )
    before = request.status
    was_ready_before = request.last_reconciled_at is not None
    if request.apply(data, envelope.time):
        observe_progress(request, envelope, before, was_ready_before=was_ready_before)
    return envelope


def observed(metric: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of one histogram series."""
    labels = {"class": CLASS, **labels}
    count = REGISTRY.get_sample_value(f"{metric}_count", labels) or 0.0
    total = REGISTRY.get_sample_value(f"{metric}_sum", labels) or 0.0
    return count, total


def stages() -> dict[str, tuple[float, float]]:
    return {
        stage: observed("platform_request_stage_seconds", stage=stage)
        for stage in ("approved", "rendered", "published", "ready")
    }


def published(request: EnvironmentRequest) -> RequestPublished:
    """The publication of the request's current generation."""
    return RequestPublished(
        request_id=request.id,
        generation=request.generation,
        gitops_path="envs/x",
        namespace="ns",
        region="us-east-1",
        commit_sha="abc",
        branch="main",
    )


def run_pipeline(request: EnvironmentRequest, start: float) -> None:
    generation = request.generation
    files: list[Any] = []
    project(
        request,
        RequestRendered(
            request_id=request.id,
            generation=generation,
            gitops_path="envs/x",
            namespace="ns",
            digest="d",
            files=files,
            spec=request.spec,
        ),
        start + 2,
    )
    project(
        request,
        published(request),
        start + 5,
    )
    project(
        request,
        RequestBootstrapped(
            request_id=request.id, generation=generation, cluster_status="applied", drift_status="in_sync"
        ),
        start + 9,
    )


def test_each_stage_is_measured_from_the_event_that_began_it_and_ready_only_the_first_time() -> None:
    spec = msgspec.structs.replace(SPEC, class_name=CLASS)
    request = EnvironmentRequest.submit(spec, "alice", NOW, request_id="req-stagemetrics01")
    request.outgoing.clear()
    before = stages()
    ready_before = observed("platform_request_ready_seconds")

    project(request, evaluated(), 0.5)
    project(request, RequestApproved(request_id=request.id, automatic=True, approved_by=["system"]), 1)
    assert request.status is Status.QUEUED
    # The reconcile request is intake's own event: it began at queued_at.
    request.queued_at = NOW + timedelta(seconds=1)
    run_pipeline(request, start=1)
    assert request.status is Status.READY
    after = stages()
    delta = {
        stage: (after[stage][0] - before[stage][0], after[stage][1] - before[stage][1]) for stage in after
    }
    assert delta == {"approved": (1, 1.0), "rendered": (1, 2.0), "published": (1, 3.0), "ready": (1, 4.0)}
    count, total = observed("platform_request_ready_seconds")
    assert (count - ready_before[0], total - ready_before[1]) == (1, 10.0)

    # A second generation: its stages are measured from its own events, and being ready again
    # is not the first time.
    request.reconcile(actor="alice", role="requester", now=NOW + timedelta(seconds=100))
    assert request.generation == 2
    run_pipeline(request, start=100)
    again = stages()
    assert again["rendered"][0] - after["rendered"][0] == 1
    assert again["rendered"][1] - after["rendered"][1] == 2.0
    assert again["published"][1] - after["published"][1] == 3.0
    assert again["ready"][1] - after["ready"][1] == 4.0
    assert observed("platform_request_ready_seconds")[0] - ready_before[0] == 1
    assert request.stage_marks["generation"] == 2


def test_a_stage_whose_start_was_not_seen_in_this_generation_is_not_observed() -> None:
    spec = msgspec.structs.replace(SPEC, class_name=CLASS)
    request = EnvironmentRequest.submit(spec, "alice", NOW, request_id="req-stagemetrics02")
    request.outgoing.clear()
    project(request, evaluated(), 0.5)
    project(request, RequestApproved(request_id=request.id, automatic=True, approved_by=["system"]), 1)
    # Marks of an older generation (a run in flight across an upgrade, a retried generation)
    # are not this generation's start.
    request.stage_marks = {"generation": request.generation - 1, "request.rendered": NOW.isoformat()}
    published_before = observed("platform_request_stage_seconds", stage="published")
    project(
        request,
        published(request),
        7,
    )
    assert observed("platform_request_stage_seconds", stage="published") == published_before
    assert request.stage_marks == {
        "generation": request.generation,
        "request.published": (NOW + timedelta(seconds=7)).isoformat(),
    }


def test_an_environment_ready_before_the_upgrade_is_not_ready_for_the_first_time_again() -> None:
    """A record written before the stage marks existed (or by an older replica during a rolling
    upgrade) has none; that it was ready once is on the record all the same."""
    spec = msgspec.structs.replace(SPEC, class_name=CLASS)
    request = EnvironmentRequest.submit(spec, "alice", NOW, request_id="req-stagemetrics03")
    request.outgoing.clear()
    project(request, evaluated(), 0.5)
    project(request, RequestApproved(request_id=request.id, automatic=True, approved_by=["system"]), 1)
    run_pipeline(request, start=1)
    assert request.status is Status.READY
    request.stage_marks = {}  # as an older release left it
    ready_before = observed("platform_request_ready_seconds")
    request.reconcile(actor="alice", role="requester", now=NOW + timedelta(days=3))
    run_pipeline(request, start=3 * 86400)
    assert request.status is Status.READY
    assert observed("platform_request_ready_seconds") == ready_before
