"""What the consumers retry through an outage, and for how long (libs.errors, libs.inbox)."""

from __future__ import annotations

import psycopg
import psycopg_pool
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts.envelope import ContractError
from libs.errors import (
    Conflict,
    TransientError,
    Unavailable,
    ValidationFailed,
    is_database_unavailable,
    is_transient,
)
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


# -- Postgres errors by SQLSTATE ---------------------------------------------------------------
# psycopg files several errors retrying cannot fix under OperationalError, like a lost
# connection; they were retried for an hour. The SQLSTATE decides.


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.ProgramLimitExceeded("row is too big"),  # 54000
        psycopg.errors.TooManyArguments("cannot pass more than 100 arguments"),  # 54023
        psycopg.errors.InvalidPassword("password authentication failed"),  # 28P01
        psycopg.errors.InvalidAuthorizationSpecification("no pg_hba.conf entry"),  # 28000
        psycopg.errors.ExternalRoutineException("external routine"),  # 38000
        psycopg.errors.ExternalRoutineInvocationException("invocation"),  # 39000
        psycopg.errors.SqlRoutineException("function ended without RETURN"),  # 2F000
        psycopg.errors.DataError("invalid input syntax"),  # 22000
        psycopg.errors.NumericValueOutOfRange("integer out of range"),  # 22003
        psycopg.errors.IntegrityError("violates a constraint"),  # 23000
        psycopg.errors.ForeignKeyViolation("violates foreign key constraint"),  # 23503
        psycopg.errors.SyntaxError("syntax error at or near"),  # 42601
        psycopg.errors.UndefinedTable("relation does not exist"),  # 42P01
        psycopg.errors.UndefinedColumn("column does not exist"),  # 42703
    ],
    ids=type,
)
def test_postgres_errors_retrying_cannot_fix_are_permanent(error: Exception) -> None:
    assert not is_transient(error)
    assert not is_database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.ConnectionException("connection exception"),  # 08000
        psycopg.errors.ConnectionFailure("connection failure"),  # 08006
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),  # 57P01
        psycopg.errors.CrashShutdown("terminating connection due to crash of another process"),  # 57P02
        psycopg.errors.CannotConnectNow("the database system is starting up"),  # 57P03
        psycopg.errors.SerializationFailure("could not serialize access"),  # 40001
        psycopg.errors.DeadlockDetected("deadlock detected"),  # 40P01
        psycopg.errors.InsufficientResources("insufficient resources"),  # 53000
        psycopg.errors.DiskFull("could not extend file"),  # 53100
        psycopg.errors.TooManyConnections("too many clients already"),  # 53300
        psycopg.OperationalError("connection failed"),  # no SQLSTATE: the client could not connect
    ],
    ids=type,
)
def test_postgres_errors_a_later_attempt_can_get_past_are_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    ("error", "away"),
    [
        (psycopg.OperationalError("connection failed"), True),
        (psycopg_pool.PoolTimeout("couldn't get a connection after 3.00 sec"), True),
        (psycopg.errors.ConnectionFailure("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.SerializationFailure("could not serialize access"), False),
        (psycopg.errors.DeadlockDetected("deadlock detected"), False),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (TransientError("the git remote is unreachable"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_only_errors_saying_the_database_is_away_pause_a_consumer(error: Exception, away: bool) -> None:
    assert is_database_unavailable(error) is away


def test_a_database_error_wrapped_by_a_handler_still_pauses_a_consumer() -> None:
    wrapped = RuntimeError("could not load the request")
    wrapped.__cause__ = psycopg_pool.PoolTimeout("couldn't get a connection")
    assert is_database_unavailable(wrapped)


def test_a_concurrent_change_is_retried_like_an_outage_and_answered_as_a_conflict() -> None:
    """Two replicas projecting one request's events collide on its version now and then: the
    next attempt reads the new version, so it must not use up the attempts for real failures."""
    from libs.errors import ConcurrentChange, Conflict

    error = ConcurrentChange("request req-1 was changed concurrently; retry")
    assert is_transient(error)
    assert isinstance(error, Conflict)
    assert error.code == "conflict"
    assert not is_transient(Conflict("request req-1 is deleted"))


def test_an_event_that_arrived_before_the_one_it_depends_on_is_retried_like_an_outage() -> None:
    """An approval projected before its policy decision (two intake replicas, a crash in
    between) waits for it as long as an outage would, instead of being dead-lettered after a
    few quick attempts and leaving the request stuck in `submitted`."""
    from services.intake.domain.model import OutOfOrder

    assert is_transient(OutOfOrder("req-1: approval arrived before the policy decision"))
