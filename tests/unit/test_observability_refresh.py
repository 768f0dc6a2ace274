"""The loop that recomputes database gauges: a failing database is logged once per change of
state, and the last-success timestamp the stale-metrics alert watches stops moving."""

from __future__ import annotations

import asyncio
import logging

import pytest

from libs import telemetry
from libs.telemetry import REGISTRY, refresh_every
from tests.support.alerts import Sample, alert_expr, evaluate, registry_samples


def last_success() -> float:
    """0 until a loop of this process's service (configure_logging names it) first refreshed."""
    labels = {"service": telemetry._service_name}
    value = REGISTRY.get_sample_value("platform_metrics_refresh_last_success_timestamp_seconds", labels)
    return value or 0.0


async def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = iter([None, *[ConnectionError("database down")] * 5, None])
    timestamps: list[float] = []
    stopping = asyncio.Event()
    before = last_success()  # another test in this process may have refreshed already

    during_outage: list[Sample] = []

    async def refresh() -> None:
        timestamps.append(last_success())
        if len(timestamps) == 6:  # the fifth failing refresh in a row
            during_outage.extend(registry_samples(REGISTRY))
        outcome = next(outcomes, None)
        if outcome is not None:
            raise outcome
        if len(timestamps) == 7:
            stopping.set()

    with caplog.at_level(logging.INFO, logger="libs.telemetry"):
        await asyncio.wait_for(refresh_every(refresh, interval=0.01)(stopping), 5)

    messages = [record.getMessage() for record in caplog.records if record.name == "libs.telemetry"]
    assert messages == [
        "metrics refresh failing; the database gauges keep their last values",
        "metrics refresh recovered",
    ]
    assert timestamps[0] == before  # no success of this loop yet
    first_success = timestamps[1]
    assert first_success > before
    assert set(timestamps[1:7]) == {first_success}  # frozen while every refresh failed
    assert last_success() > first_success

    # The stale-metrics alert fires once the frozen timestamp is five minutes old, and not after
    # the recovery.
    stale = alert_expr("PlatformMetricsStale")
    service = (telemetry._service_name,)
    assert not evaluate(stale, during_outage, now=first_success + 60)
    assert evaluate(stale, during_outage, now=first_success + 301) == {service: pytest.approx(301)}
    assert not evaluate(stale, registry_samples(REGISTRY), now=last_success() + 1)
