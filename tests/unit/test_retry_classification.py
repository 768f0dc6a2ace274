"""What the consumers retry through an outage, and for how long (libs.errors, libs.inbox)."""

from __future__ import annotations

import psycopg
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts.envelope import ContractError
from libs.errors import Conflict, TransientError, Unavailable, ValidationFailed, is_transient
from libs.inbox import HandlerTimedOut, RetryPolicy
from libs.settings import PlatformSettings, load_settings
from services.cluster_bootstrapper.service_layer.ports import ClusterUnavailable, ObjectRejected


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("refused"),
        OSError("network is unreachable"),
        TimeoutError(),
        NatsTimeout(),
        NoRespondersError(),
        psycopg.OperationalError("connection failed"),
        TransientError("the remote is down"),
        ClusterUnavailable("apply failed in the cluster of region us-east-1 (HTTP 503)"),
        HandlerTimedOut("handler ran past its 300s deadline"),
    ],
    ids=type,
)
def test_unreachable_dependencies_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        RuntimeError("bug"),
        ValidationFailed("invalid"),
        Conflict("conflict"),
        Unavailable("shutting down"),
        ObjectRejected("ResourceQuota x was rejected by the cluster (HTTP 422)"),
        ContractError("unknown event type"),
        psycopg.errors.UniqueViolation("duplicate key"),
    ],
    ids=type,
)
def test_errors_retrying_cannot_fix_are_not_transient(error: Exception) -> None:
    assert not is_transient(error)


def test_an_explicit_transient_attribute_wins() -> None:
    error = OSError("local disk full")
    error.transient = False  # type: ignore[attr-defined]
    assert not is_transient(error)


def test_the_default_settings_retry_an_outage_for_an_hour_with_backoff_capped_at_a_minute() -> None:
    policy = RetryPolicy.from_settings(load_settings(PlatformSettings, {}))
    delays = [policy.delay(attempt) for attempt in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    # Errors retrying cannot fix: dead-lettered at the 5th attempt, as before.
    assert policy.retries(4, transient=False)
    assert not policy.retries(5, transient=False)
    # Transient ones: as long as the backoff adds up to at most an hour.
    last = policy.last_attempt
    assert policy.retries(last - 1, transient=True)
    assert not policy.retries(last, transient=True)
    assert 3600 - 60 < policy.backoff_through(last - 1) <= 3600
    # The server's own limit lies beyond the consumer's last attempt.
    assert policy.server_max_deliver > last
    assert policy.handler_timeout == 300


def test_no_retry_window_means_max_attempts_for_every_error() -> None:
    policy = RetryPolicy(max_attempts=2, retry_for_seconds=0)
    assert not policy.retries(2, transient=True)
    assert policy.last_attempt == 2
    assert policy.server_max_deliver == 5
