"""``make bench``: throughput and latency percentiles of the platform's hot paths.

Measured, not asserted: these numbers depend on the machine. Each benchmark uses the
same real servers as the tests (``PLATFORM_TEST_POSTGRES_DSN`` / ``PLATFORM_TEST_NATS_URL``,
else embedded ones) in its own database and stream.

1. outbox relay: events staged in Postgres → published to JetStream (commit → PubAck);
2. inbox consumer: events on the stream → handled in one transaction each and acked;
3. end to end: preview requests over HTTP through all seven processes to ``ready``.

Sizes: ``--events`` (default 5000) and ``--requests`` (default 200); ``make bench
BENCH_ARGS="--requests 50"`` passes them through.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import nats

from contracts.envelope import Envelope, cloudevents_headers, encode_envelope, new_event
from contracts.events import RequestFailed
from libs.bus import Subjects, ensure_stream
from libs.database import open_pool
from libs.inbox import EventConsumer, RetryPolicy, Tx
from libs.migrations import discover, migrate
from libs.outbox import Outbox, OutboxRelay
from libs.settings import PlatformSettings, load_settings
from tests.support.infrastructure import nats_server, postgres_server
from tests.support.isolation import Isolation, delete_stream, fresh_database, platform_environment
from tests.support.stack import running_stack

SCHEMA = "bench"


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.50):7.1f} ms  p95 {at(0.95):7.1f} ms  p99 {at(0.99):7.1f} ms  max {ordered[-1] * 1000:7.1f} ms"


def report(name: str, count: int, seconds: float, latencies: list[float]) -> None:
    print(f"{name:<34} {count:>6} in {seconds:6.2f} s = {count / seconds:8.0f}/s   {percentiles(latencies)}")


def failure(n: int) -> RequestFailed:
    return RequestFailed(request_id=f"req-{n:016x}", generation=1, stage="bench", error="x", attempts=1)


async def bench_outbox_relay(settings: PlatformSettings, events: int) -> None:
    dsn = settings.require_dsn()
    await migrate(dsn, SCHEMA, discover(None))
    pool = await open_pool(dsn, SCHEMA, "bench", max_size=4)
    nc = await nats.connect(settings.nats_url.reveal())
    js = nc.jetstream()
    await ensure_stream(js, settings)
    outbox = Outbox(SCHEMA, "bench", Subjects.from_settings(settings))
    # Staging cost: one transaction per 50 events, as a busy service would produce them, about
    # many requests (a request's own events are published one after another, in order, so
    # events all about one request would measure one PubAck round trip each).
    started = time.perf_counter()
    for batch in range(0, events, 50):
        async with pool.connection() as conn, conn.transaction():
            for n in range(batch, min(events, batch + 50)):
                await outbox.add(conn, f"req-bench-{n % 500}", failure(n))
    staged = time.perf_counter() - started
    report("outbox: stage (50 per transaction)", events, staged, [])
    relay = OutboxRelay(pool, js, dsn=dsn, schema=SCHEMA, stream=settings.stream_name, poll_seconds=0.05)
    started = time.perf_counter()
    await relay.start()
    while True:
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            ).fetchone()
        if row is not None and row["n"] == 0:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    await relay.stop()
    report("outbox relay: publish + PubAck", events, elapsed, [])
    await nc.close()
    await pool.close()


async def bench_consumer(settings: PlatformSettings, events: int) -> None:
    dsn = settings.require_dsn()
    await migrate(dsn, SCHEMA, discover(None))
    pool = await open_pool(dsn, SCHEMA, "bench-consumer", max_size=10)
    nc = await nats.connect(settings.nats_url.reveal())
    js = nc.jetstream()
    await ensure_stream(js, settings)
    subjects = Subjects.from_settings(settings)
    published_at: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def handler(envelope: Envelope, data: Any, tx: Tx) -> None:
        # Publish → handler running inside its inbox transaction.
        latencies.append(time.perf_counter() - published_at[envelope.id])
        if len(latencies) >= events:
            done.set()

    consumer = EventConsumer(
        name="bench-consumer",
        event_filter="request.failed",
        handlers={"request.failed": handler},
        pool=pool,
        js=js,
        outbox=Outbox(SCHEMA, "bench", subjects),
        subjects=subjects,
        stream=settings.stream_name,
        retry=RetryPolicy(),
        concurrency=8,
    )
    await consumer.start()
    started = time.perf_counter()
    acks = []
    for n in range(events):
        envelope = new_event("request.failed", "bench", f"req-{n:016x}", failure(n))
        published_at[envelope.id] = time.perf_counter()
        acks.append(
            await js.publish_async(
                subjects.event("request.failed"),
                encode_envelope(envelope),
                headers=cloudevents_headers(envelope),
            )
        )
    await asyncio.gather(*acks)
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    report("inbox consumer: tx + ack (8 workers)", events, elapsed, latencies)
    await nc.close()
    await pool.close()


def bench_end_to_end(admin_dsn: str, nats_url: str, requests: int) -> None:
    with ExitStack() as stack:
        isolation = Isolation.new()
        dsn = stack.enter_context(fresh_database(admin_dsn))
        env = platform_environment(dsn, nats_url, isolation)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcp-bench-")))
        running = stack.enter_context(running_stack(env, admin_dsn, folder))
        stack.callback(lambda: asyncio.run(delete_stream(nats_url, isolation.stream)))
        create_latencies: list[float] = []
        with running.client() as api:
            # Latency of one request on an idle system: the path itself, no queueing.
            idle: list[float] = []
            started = time.perf_counter()
            for n in range(20):
                body = {
                    "app": f"idle-{n}",
                    "team": "idle",
                    "class": "preview",
                    "region": "us-east-1",
                    "ttl_hours": 1,
                    "owner": "bench@example.com",
                    "repository": "https://github.com/example/bench.git",
                }
                request_id = api.post("/v1/environment-requests", json=body).json()["id"]
                ready = running.wait_for_status(api, request_id, {"ready"}, timeout=60)
                # Server-side timestamps: the client's polling interval must not count.
                idle.append(
                    (
                        datetime.fromisoformat(ready["last_reconciled_at"])
                        - datetime.fromisoformat(ready["created_at"])
                    ).total_seconds()
                )
            report("one at a time: create → ready", 20, time.perf_counter() - started, idle)

            def create(n: int) -> str:
                body = {
                    "app": f"bench-{n}",
                    "team": "bench",
                    "class": "preview",
                    "region": "us-east-1",
                    "ttl_hours": 1,
                    "owner": "bench@example.com",
                    "repository": "https://github.com/example/bench.git",
                }
                started = time.perf_counter()
                response = api.post("/v1/environment-requests", json=body)
                create_latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                return str(response.json()["id"])

            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(create, range(requests)))
            created = time.perf_counter() - started
            report("HTTP create (8 clients)", requests, created, create_latencies)
            ready = [running.wait_for_status(api, request_id, {"ready"}, timeout=300) for request_id in ids]
            elapsed = time.perf_counter() - started
        to_ready = [
            (
                datetime.fromisoformat(r["last_reconciled_at"]) - datetime.fromisoformat(r["created_at"])
            ).total_seconds()
            for r in ready
        ]
        report("end to end: create → ready", requests, elapsed, to_ready)
        print(f"{'':<34} git commits in the remote: {len(running.git('rev-list', 'main').split())}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000, help="events for the outbox and consumer runs")
    parser.add_argument("--requests", type=int, default=200, help="requests for the end-to-end run")
    args = parser.parse_args()
    with postgres_server() as admin_dsn, nats_server() as nats_url:
        print("platform-control-plane benchmarks (wall clock; latency percentiles per item)\n")
        for bench in (bench_outbox_relay, bench_consumer):
            isolation = Isolation.new()
            with fresh_database(admin_dsn) as dsn:
                settings = load_settings(PlatformSettings, platform_environment(dsn, nats_url, isolation))
                asyncio.run(bench(settings, args.events))
            asyncio.run(delete_stream(nats_url, isolation.stream))
        bench_end_to_end(admin_dsn, nats_url, args.requests)


if __name__ == "__main__":
    main()
