"""What ``platformctl events replay --consumer`` does with each handler is declared beside it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from libs.topology import Registration
from services.tools.platformctl.client import UsageError
from services.tools.platformctl.event_commands import parse_start
from services.tools.topology import bus_services, topology


def registrations() -> list[tuple[str, str, type, object]]:
    return [
        (service, consumer.name, model, entry)
        for service in bus_services()
        for consumer in topology(service).consumers
        for model, entry in consumer.handlers.items()
    ]


def test_every_handler_declares_what_a_replay_does_with_it_and_why() -> None:
    found = registrations()
    assert found
    undeclared = [(s, c, m.__name__) for s, c, m, entry in found if not isinstance(entry, Registration)]
    assert not undeclared, f"register these with reexecuted_on_replay or skipped_on_replay: {undeclared}"
    assert all(entry.replay.reason for *_, entry in found if isinstance(entry, Registration))


def test_only_the_idempotent_pipeline_stages_are_re_executed() -> None:
    reexecuted = {
        (service, consumer)
        for service, consumer, _, entry in registrations()
        if isinstance(entry, Registration) and entry.replay.reexecute
    }
    assert reexecuted == {
        ("renderer", "reconcile"),
        ("git_publisher", "requests"),
        ("cluster_bootstrapper", "published"),
        ("cluster_bootstrapper", "unpublished"),
    }


def test_from_takes_a_sequence_a_time_or_a_duration_ago() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_start("42") == {"from_sequence": 42}
    assert parse_start("2026-03-01T10:00:00Z") == {"from_time": "2026-03-01T10:00:00+00:00"}
    assert parse_start("2026-03-01T10:00:00") == {"from_time": "2026-03-01T10:00:00+00:00"}
    assert parse_start("2h", now) == {"from_time": "2026-03-01T10:00:00+00:00"}
    for bad in ("0", "yesterday", "-5", ""):
        with pytest.raises(UsageError):
            parse_start(bad)
