"""``make bench-reads``: the gateway's ``GET /v1/environment-requests/{id}`` at a fixed offered rate.

Measured, not asserted. The whole stack runs as processes on private embedded servers (as
``make bench`` does); one request is created, then read over and over with a bearer token
the gateway verifies every time (HS256, as ``make run`` issues them), open loop: read
``n`` is due at ``n / rate`` seconds whether or not earlier ones answered, and its latency
counts from when it was due, so a gateway that falls behind shows it in the percentiles.
Prints the rate achieved, latency percentiles, errors and the CPU milliseconds per read of
every process (the load generator's own included: on two cores it competes with the gateway).

``make bench-reads BENCH_ARGS="--rate 1000 --duration 10 --connections 32"``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from tests.bench import (
    BENCH_SETTINGS,
    CpuProbe,
    cpu_table,
    load_average,
    percentiles,
    private_servers,
    request_body,
)
from tests.support.isolation import Isolation, delete_stream, fresh_database, platform_environment
from tests.support.stack import mint_token, running_stack


async def read_at_rate(
    base_url: str, path: str, token: str, rate: int, duration: float, connections: int
) -> tuple[list[float], collections.Counter[str], float]:
    """Latencies from each read's due time, failures by kind, and the seconds the run took.

    A lean client (keep-alive connections on bare asyncio streams, one request's bytes built
    once): a general-purpose HTTP client costs more CPU per read than the gateway does, and on
    two cores it would measure itself. A scheduler queues each read at its due time; each
    connection takes the next due read as soon as it is free.
    """
    url = httpx.URL(base_url)
    host, port = url.host, url.port or 80
    wire = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    due_reads: asyncio.Queue[float | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (due := await due_reads.get()) is not None:
                writer.write(wire)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                if status == 200:
                    latencies.append(time.perf_counter() - due)
                else:
                    failures[f"HTTP {status}"] += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures[type(exc).__name__] += 1
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    started = time.perf_counter()
    for n in range(int(rate * duration)):
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due_reads.put_nowait(due)
    for _ in workers:
        due_reads.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, failures, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000, help="reads offered per second (default 1000)")
    parser.add_argument("--duration", type=float, default=10, help="seconds of load (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections of the client")
    args = parser.parse_args()
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcp-bench-reads-")))
        servers = stack.enter_context(private_servers(folder / "servers", statements=False))
        isolation = Isolation.new()
        dsn = stack.enter_context(fresh_database(servers.admin_dsn))
        env = platform_environment(dsn, servers.nats_url, isolation)
        running = stack.enter_context(running_stack(env, servers.admin_dsn, folder, extra=BENCH_SETTINGS))
        stack.callback(lambda: asyncio.run(delete_stream(servers.nats_url, isolation.stream)))
        token = mint_token("reader@example.com", "requester", ["bench"])
        with running.client("reader@example.com", "requester", ["bench"]) as api:
            created = api.post("/v1/environment-requests", json=request_body(0, "bench", "reads"))
            created.raise_for_status()
        path = f"/v1/environment-requests/{created.json()['id']}"
        pids = {
            name: process.process.pid
            for name, process in running.processes.services.items()
            if process.process is not None
        }
        probe = CpuProbe(pids, servers.postmaster, servers.nats)
        # A short warm-up (connections opened, code paths loaded), not counted.
        asyncio.run(read_at_rate(running.api_url, path, token, 100, 1, args.connections))
        print(
            f"GET {path.rsplit('/', 1)[0]}/<id>: {args.rate}/s offered for {args.duration:g} s; {load_average()}"
        )
        before = probe.sample()
        latencies, failures, seconds = asyncio.run(
            read_at_rate(running.api_url, path, token, args.rate, args.duration, args.connections)
        )
        after = probe.sample()
    print(
        f"  {len(latencies)} answered in {seconds:.1f} s = {len(latencies) / seconds:.0f}/s   {percentiles(latencies)}"
    )
    for failure, times in failures.most_common():
        print(f"  failed {times} ×: {failure}")
    cpu_table(before, after, max(1, len(latencies)))


if __name__ == "__main__":
    main()
