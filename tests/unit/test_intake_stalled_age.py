"""How long a request has been stuck: the anti-entropy's retries are not progress.

The stuck-request alert reads this age; a retry re-queues the request and re-runs stages it
had already passed, which must not restart the clock, while real progress and new work do.
"""

from __future__ import annotations

from datetime import timedelta

from contracts.events import RequestBootstrapped, RequestRendered
from services.intake.domain.model import EnvironmentRequest, Status
from tests.unit.test_intake_lifecycle import NOW, SPEC, queued

DEADLINE = timedelta(minutes=15)


def rendered(generation: int) -> RequestRendered:
    return RequestRendered(
        request_id="req-1",
        generation=generation,
        gitops_path="p",
        namespace="ns",
        digest="d",
        files=[],
        spec=SPEC,
    )


def stuck_in_reconciling() -> EnvironmentRequest:
    """Rendered at NOW, then nothing: the publisher never answers."""
    request = queued()
    request.apply(rendered(1), NOW)
    assert (request.status, request.stalled_since) == (Status.RECONCILING, None)
    return request


def test_retries_and_re_rendered_stages_keep_the_time_the_request_got_stuck() -> None:
    request = stuck_in_reconciling()
    for retry in range(1, 4):
        request.retry_stalled(NOW + retry * DEADLINE)
        assert request.status is Status.QUEUED
        request.apply(rendered(request.generation), NOW + retry * DEADLINE + timedelta(seconds=5))
        assert request.status is Status.RECONCILING
        assert request.updated_at > NOW + retry * DEADLINE
        assert request.stalled_since == NOW
    assert request.generation == 4


def test_progress_beyond_the_stalled_statuses_ends_the_stall() -> None:
    request = stuck_in_reconciling()
    request.retry_stalled(NOW + DEADLINE)
    request.apply(rendered(2), NOW + DEADLINE)
    request.apply(
        RequestBootstrapped(
            request_id="req-1", generation=2, cluster_status="not_applied", drift_status="not_checked"
        ),
        NOW + DEADLINE,
    )
    assert (request.status, request.stalled_since) == (Status.READY, None)


def test_a_delete_of_a_stuck_request_is_new_work_with_its_own_clock() -> None:
    request = stuck_in_reconciling()
    request.retry_stalled(NOW + DEADLINE)
    request.delete(actor="alice", now=NOW + 2 * DEADLINE)
    assert (request.status, request.stalled_since) == (Status.DELETING, None)
    request.retry_stalled(NOW + 3 * DEADLINE)
    assert request.stalled_since == NOW + 2 * DEADLINE
