"""The gateway's token buckets, on a clock the test moves."""

from __future__ import annotations

import pytest

from services.gateway.domain import rate_limits
from services.gateway.domain.rate_limits import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_a_burst_then_one_per_interval() -> None:
    clock = Clock()
    buckets = TokenBuckets(60, clock)  # one a second
    assert [buckets.take("a") for _ in range(60)] == [0.0] * 60
    assert buckets.take("a") == pytest.approx(1.0)
    clock.now += 0.5
    assert buckets.take("a") == pytest.approx(0.5)  # a refusal takes nothing
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(1.0)
    assert buckets.take("b") == 0.0  # a key of its own


def test_an_idle_bucket_refills_no_higher_than_its_size() -> None:
    clock = Clock()
    buckets = TokenBuckets(3, clock)
    assert [buckets.take("a") for _ in range(4)][-1] == pytest.approx(20.0)
    clock.now += 3600
    assert [buckets.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(20.0)]


def test_zero_turns_the_limit_off() -> None:
    buckets = TokenBuckets(0, Clock())
    assert all(buckets.take("a") == 0.0 for _ in range(10_000))
    assert len(buckets) == 0


def test_refilled_buckets_are_dropped_when_the_table_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rate_limits, "PRUNE_AT", 100)
    clock = Clock()
    buckets = TokenBuckets(60, clock, _prune_at=100)
    for n in range(100):
        buckets.take(f"old-{n}")
    clock.now += 60  # every old bucket is full again: it holds nothing worth keeping
    buckets.take("busy")
    buckets.take("busy")
    buckets.take("new")
    assert len(buckets) <= 2
    # The dropped keys start again from a full bucket, as they would have anyway.
    assert [buckets.take("old-1") for _ in range(60)] == [0.0] * 60
    assert buckets.take("busy") == 0.0


def test_a_token_given_back_is_there_again_but_never_beyond_the_size() -> None:
    clock = Clock()
    buckets = TokenBuckets(2, clock)
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") > 0
    buckets.give_back("a")
    assert buckets.take("a") == 0.0
    buckets.give_back("a")
    buckets.give_back("a")
    buckets.give_back("a")
    assert [buckets.take("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take("a") > 0
