"""Chaos: a steady stream of requests while replicas, the broker and the database crash.

Two processes of every backend service, with a NATS (``sync_interval: always``) and a
Postgres of this test's own, so it may kill them. While preview requests stream in through
the HTTP API (each retried with its Idempotency-Key, as a careful client does):

- every few seconds one replica of a random backend service is SIGKILLed, and the supervisor
  of ``platformd dev`` starts it again;
- once, NATS is SIGKILLed and restarted on the same storage;
- once, Postgres crashes (postmaster and backends SIGKILLed) and restarts with crash recovery.

Afterwards every request is listed once and ``ready``, became ready once, has exactly one
commit per generation in the GitOps remote; every outbox is published and nothing is
dead-lettered.

``PLATFORM_CHAOS_SCALE``: ``small`` (default; in ``make test``) or ``full`` (``make chaos``).
``PLATFORM_CHAOS_SEED`` replays a run's random choices (the seed is printed).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.chaos import Chaos, chaos_scale, chaos_seed
from tests.support.fault_load import SteadyLoad, assert_each_ready_exactly_once, without_team_limits
from tests.support.isolation import Isolation, platform_environment
from tests.support.private_servers import private_nats, private_postgres
from tests.support.stack import running_stack


@dataclass(frozen=True)
class ChaosSize:
    requests: int
    interval: float  # seconds between two creates
    kill_every: float  # seconds between two replica kills
    outage_seconds: float  # how long NATS and Postgres stay down
    settle_seconds: float  # after the last create, until every request must be final
    test_seconds: float  # the whole test, start-up included


SIZES = {
    "small": ChaosSize(
        requests=40, interval=1.0, kill_every=4.0, outage_seconds=2.0, settle_seconds=150, test_seconds=300
    ),
    "full": ChaosSize(
        requests=400, interval=0.5, kill_every=3.0, outage_seconds=5.0, settle_seconds=600, test_seconds=1800
    ),
}
SCALE = chaos_scale()
SIZE = SIZES[SCALE]
SEED = chaos_seed()

pytestmark = pytest.mark.timeout(SIZE.test_seconds)


def test_requests_survive_replica_broker_and_database_crashes(tmp_path: Path) -> None:
    print(f"chaos: scale {SCALE} {SIZE}, seed {SEED} (PLATFORM_CHAOS_SEED={SEED} replays it)", flush=True)
    rng = random.Random(SEED)
    stream_seconds = SIZE.requests * SIZE.interval
    with private_nats(sync_always=True) as broker, private_postgres() as database:
        environment = platform_environment(database.dsn("platform"), broker.url, Isolation.new())
        with running_stack(environment, database.dsn(), tmp_path, replicas=2) as stack, stack.client() as api:
            without_team_limits(stack)
            chaos = Chaos.with_servers(
                stack.processes,
                rng,
                SIZE.kill_every,
                nats=(broker, 0.3 * stream_seconds),
                postgres=(database, 0.6 * stream_seconds),
                outage_seconds=SIZE.outage_seconds,
            )
            load = SteadyLoad(api, "chaos", SIZE.requests, SIZE.interval, give_up_after=SIZE.settle_seconds)
            started = time.monotonic()
            load.start()
            chaos.start()
            try:
                ids = load.ids()
                chaos.calm()
                chaos.note(f"all {len(ids)} creates accepted")
                assert chaos.outages_done == ["NATS", "Postgres"], chaos.journal
                assert_each_ready_exactly_once(stack, api, ids, "chaos", SIZE.settle_seconds)
                chaos.note(
                    f"every request ready exactly once, {time.monotonic() - started:.0f}s after the first"
                )
            finally:
                chaos.stop()
                print(
                    f"chaos: seed {SEED}, {chaos.kills} replica kills, outages {chaos.outages_done}, "
                    f"{len(chaos.unexpected_exits)} processes died by themselves",
                    flush=True,
                )
                for report in chaos.unexpected_exits:
                    print(report, flush=True)
