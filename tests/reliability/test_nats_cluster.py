"""A clustered broker: three JetStream nodes, the stream replicated on all three, and one
node SIGKILLed under load and restarted.

The stack starts about two seconds after the nodes came up, while the cluster may still be
electing its leaders: a service whose JetStream calls fail then is retried (the kit) or
started again (the launcher), never left down. Every service is given all three nodes
(``PLATFORM_NATS_URL`` as a comma-separated list). The node killed is the stream's leader,
the one whose loss makes the cluster elect a new leader while events are being published.

``PLATFORM_CHAOS_SCALE``: ``small`` (default) or ``full`` (``make chaos``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.chaos import chaos_scale
from tests.support.fault_load import SteadyLoad, assert_each_ready_exactly_once, without_team_limits
from tests.support.isolation import Isolation, fresh_database, platform_environment
from tests.support.nats_cluster import nats_cluster
from tests.support.stack import running_stack


@dataclass(frozen=True)
class ClusterSize:
    requests: int
    interval: float  # seconds between two creates
    node_down_seconds: float
    settle_seconds: float
    test_seconds: float


SIZES = {
    "small": ClusterSize(
        requests=30, interval=0.5, node_down_seconds=3, settle_seconds=120, test_seconds=300
    ),
    "full": ClusterSize(
        requests=300, interval=0.3, node_down_seconds=15, settle_seconds=600, test_seconds=1800
    ),
}
SIZE = SIZES[chaos_scale()]
# How long after the nodes came up the stack starts: before the cluster has settled.
STACK_STARTS_AFTER = 2.0

pytestmark = pytest.mark.timeout(SIZE.test_seconds)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f}s"
        time.sleep(0.2)


def test_a_node_killed_under_load_loses_and_duplicates_nothing(tmp_path: Path, pg_admin_dsn: str) -> None:
    with nats_cluster(tmp_path / "nats") as cluster, fresh_database(pg_admin_dsn) as dsn:
        came_up = time.monotonic()
        isolation = Isolation.new()
        environment = {**platform_environment(dsn, cluster.url, isolation), "PLATFORM_EVENTS_REPLICAS": "3"}
        time.sleep(max(0.0, came_up + STACK_STARTS_AFTER - time.monotonic()))
        with running_stack(environment, pg_admin_dsn, tmp_path / "stack") as stack, stack.client() as api:
            print(f"stack ready {time.monotonic() - came_up:.1f}s after the cluster came up", flush=True)
            assert cluster.stream_replicas(isolation.stream) == 3

            without_team_limits(stack)
            load = SteadyLoad(api, "cluster", SIZE.requests, SIZE.interval, give_up_after=SIZE.settle_seconds)
            load.start()
            wait_for(
                "a third of the creates", lambda: load.accepted >= SIZE.requests // 3, SIZE.settle_seconds
            )
            victim = cluster.stream_leader(isolation.stream)
            cluster.kill(victim)
            print(f"killed {victim}, the stream's leader, after {load.accepted} creates", flush=True)
            time.sleep(SIZE.node_down_seconds)  # the load goes on against the other two
            cluster.start_node(victim)
            print(f"restarted {victim} after {load.accepted} creates", flush=True)
            ids = load.ids()

            assert_each_ready_exactly_once(stack, api, ids, "cluster", SIZE.settle_seconds)
            wait_for(f"{victim} healthy again (caught up)", lambda: cluster.healthy(victim), 60)
            assert cluster.stream_leader(isolation.stream)  # the stream has a leader
            assert stack.processes.dead_services() == []
