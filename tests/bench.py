"""``make bench``: throughput, latency and CPU per request of the platform, measured, not asserted.

The numbers depend on the machine; nothing here is a test. Three parts:

1. micro-benchmarks of the kit (``--skip-micro`` leaves them out), on a private Postgres
   and nats-server, each with its CPU per event (this process, Postgres, NATS): the outbox
   relay (events staged in Postgres → published to JetStream), the inbox consumer (events on
   the stream → handled in one transaction each and acked; this process also publishes
   them), and one whole pipeline hop (delivered, the next event staged in the inbox
   transaction, acked, relayed), with a transaction per event and per fetch: the least any
   stage of a request costs;
2. a burst of ``--requests`` preview requests over HTTP through every process of the
   system, into a GitOps remote that already holds ``--existing`` environment directories
   (seeded with one ``git fast-import`` commit), then the same burst into a remote of
   ``--compare-existing`` (10) directories, so the cost of the repository's size shows;
3. or, with ``--rate R --duration S``, a steady offered load of R requests/s for S seconds
   instead of the burst, reporting the submit→ready percentiles.

Each end-to-end run starts its own Postgres and nats-server (embedded, private to the
bench) unless ``--shared-servers`` points it at ``PLATFORM_TEST_POSTGRES_DSN`` /
``PLATFORM_TEST_NATS_URL``: with private servers the CPU of every process is the bench's
alone. CPU comes from ``/proc/<pid>/stat`` before and after (utime + stime): every service
process, its git children (``cutime``/``cstime`` of the service: reaped children), all the
Postgres processes (the postmaster, its live backends, and its reaped ones), and
nats-server. The load generator (this process) is shown apart and not in the total.

``--profile DIR`` also records each service with ``py-spy record --format raw`` during the
burst (py-spy must be on PATH or in the venv; it is not a dependency of the project) and
prints the top frames by self and total time.

Examples::

    make bench                                           # defaults: a few minutes
    make bench BENCH_ARGS="--skip-micro --requests 2000 --existing 10000"   # the issue's case
    make bench BENCH_ARGS="--skip-micro --rate 50 --duration 60 --existing 10000"
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from psycopg.rows import dict_row

from contracts.envelope import Envelope, cloudevents_headers, encode_envelope, new_event
from contracts.events import RequestFailed, RequestStageRetrying
from libs.bus import Subjects, ensure_stream
from libs.database import Pool, open_pool
from libs.embedded import EmbeddedNats, EmbeddedPostgres
from libs.inbox import EventConsumer, RetryPolicy, Tx
from libs.migrations import discover, migrate
from libs.outbox import Outbox, OutboxRelay
from libs.settings import PlatformSettings, load_settings
from services.tools.platformd.process_stack import git_init_bare
from tests.support.infrastructure import nats_server, postgres_server
from tests.support.isolation import Isolation, delete_stream, fresh_database, platform_environment
from tests.support.stack import RunningStack, mint_token, running_stack

SCHEMA = "bench"
# A load test is one client sending far more than any caller's fair share: the gateway's
# per-caller and per-team limits are off unless --setting turns them on again (each team's
# requests are also sent by an actor of its own).
BENCH_SETTINGS = {
    "PLATFORM_RATE_LIMIT_SUBJECT_PER_MINUTE": "0",
    "PLATFORM_RATE_LIMIT_SUBJECT_GENERATIONS_PER_MINUTE": "0",
    "PLATFORM_RATE_LIMIT_TEAM_PER_MINUTE": "0",
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TERMINAL = {"ready", "failed", "rejected", "deleted"}
# A run stops waiting when nothing changed for this long, and says where requests are.
STALL_SECONDS = 90.0


def percentiles(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.50):7.1f} ms  p95 {at(0.95):7.1f} ms  p99 {at(0.99):7.1f} ms  max {ordered[-1] * 1000:7.1f} ms"


def report(name: str, count: int, seconds: float, latencies: list[float]) -> None:
    print(f"{name:<36} {count:>6} in {seconds:6.2f} s = {count / seconds:8.1f}/s   {percentiles(latencies)}")


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- kit micro-benchmarks ---------------------------------------------------------------


def failure(n: int) -> RequestFailed:
    return RequestFailed(request_id=f"req-{n:016x}", generation=1, stage="bench", error="x", attempts=1)


@dataclass(frozen=True)
class MicroContext:
    """What a kit micro-benchmark runs against, and whose CPU it counts."""

    settings: PlatformSettings
    events: int
    cpu: CpuProbe

    def report_cpu(self, before: dict[str, int], count: int) -> None:
        """CPU per event since ``before``: this process (the kit's code), Postgres and NATS."""
        after = self.cpu.sample()
        names = {
            LOAD_GENERATOR: "kit (this process)",
            "postgres (all processes)": "postgres",
            "nats-server": "nats-server",
        }
        parts = {
            label: (after[name] - before[name]) * 1000 / CLOCK_TICKS / count for name, label in names.items()
        }
        shares = ", ".join(f"{label} {ms:.3f}" for label, ms in parts.items())
        print(f"  CPU ms per event: {sum(parts.values()):.3f} ({shares})")


async def _open(context: MicroContext, pool_size: int) -> tuple[str, Pool, NatsClient, JetStreamContext]:
    dsn = context.settings.require_dsn()
    await migrate(dsn, SCHEMA, discover(None))
    pool = await open_pool(dsn, SCHEMA, "bench", max_size=pool_size)
    nc = await nats.connect(context.settings.nats_url.reveal())
    js = nc.jetstream()
    await ensure_stream(js, context.settings)
    return dsn, pool, nc, js


async def _wait_relayed(pool: Pool) -> None:
    while True:
        async with pool.connection() as conn:
            row = await (
                await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            ).fetchone()
        if row is not None and row["n"] == 0:
            return
        await asyncio.sleep(0.02)


async def bench_outbox_relay(context: MicroContext) -> None:
    events = context.events
    dsn, pool, nc, js = await _open(context, pool_size=4)
    outbox = Outbox(SCHEMA, "bench", Subjects.from_settings(context.settings))
    # Staging cost: one transaction per 50 events, as a busy service would produce them, about
    # many requests (a request's own events are published one after another, in order, so
    # events all about one request would measure one PubAck round trip each).
    before = context.cpu.sample()
    started = time.perf_counter()
    for batch in range(0, events, 50):
        async with pool.connection() as conn, conn.transaction():
            for n in range(batch, min(events, batch + 50)):
                await outbox.add(conn, f"req-bench-{n % 500}", failure(n))
    staged = time.perf_counter() - started
    report("outbox: stage (50 per transaction)", events, staged, [])
    context.report_cpu(before, events)
    relay = OutboxRelay(
        pool, js, dsn=dsn, schema=SCHEMA, stream=context.settings.stream_name, poll_seconds=0.05
    )
    before = context.cpu.sample()
    started = time.perf_counter()
    await relay.start()
    await _wait_relayed(pool)
    elapsed = time.perf_counter() - started
    await relay.stop()
    report("outbox relay: publish + PubAck", events, elapsed, [])
    context.report_cpu(before, events)
    await nc.close()
    await pool.close()


async def _publish(js: JetStreamContext, subjects: Subjects, events: int) -> dict[str, float]:
    """``events`` request.failed events on the stream, about 500 requests; when each was sent."""
    published_at: dict[str, float] = {}
    acks = []
    for n in range(events):
        envelope = new_event("request.failed", "bench", f"req-{n % 500:016x}", failure(n))
        published_at[envelope.id] = time.perf_counter()
        acks.append(
            await js.publish_async(
                subjects.event("request.failed"),
                encode_envelope(envelope),
                headers=cloudevents_headers(envelope),
            )
        )
    await asyncio.gather(*acks)
    return published_at


async def bench_consumer(context: MicroContext) -> None:
    """Events published while the consumer runs: delivery, an empty handler's transaction, ack."""
    events = context.events
    _, pool, nc, js = await _open(context, pool_size=10)
    subjects = Subjects.from_settings(context.settings)
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
        stream=context.settings.stream_name,
        retry=RetryPolicy(),
        concurrency=8,
    )
    await consumer.start()
    before = context.cpu.sample()
    started = time.perf_counter()
    published_at.update(await _publish(js, subjects, events))
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    report("inbox consumer: tx + ack (8 workers)", events, elapsed, latencies)
    context.report_cpu(before, events)
    await nc.close()
    await pool.close()


async def bench_hop(context: MicroContext) -> None:
    """One pipeline hop, whole: an event delivered, its handler staging the next event in the
    inbox transaction, the ack, and the relay publishing what was staged. Every stage of a
    request costs at least this; the handler here does nothing else. The events are on the
    stream before the clock starts, so the stream's write is not counted, and the hop runs
    both ways the services' consumers do: a transaction per event, and per fetch."""
    dsn, pool, nc, js = await _open(context, pool_size=10)
    outbox = Outbox(SCHEMA, "bench", Subjects.from_settings(context.settings))
    relay = OutboxRelay(
        pool, js, dsn=dsn, schema=SCHEMA, stream=context.settings.stream_name, poll_seconds=0.05
    )
    await relay.start()
    for batched in (False, True):
        await _hop(context, pool, js, outbox, batched=batched)
        await js.purge_stream(context.settings.stream_name)
    await relay.stop()
    await nc.close()
    await pool.close()


async def _hop(
    context: MicroContext, pool: Pool, js: JetStreamContext, outbox: Outbox, *, batched: bool
) -> None:
    events = context.events
    await _publish(js, outbox.subjects, events)
    handled = 0
    done = asyncio.Event()
    now = datetime.now(UTC)

    async def handler(envelope: Envelope, data: RequestFailed, tx: Tx) -> None:
        nonlocal handled
        retrying = RequestStageRetrying(
            request_id=data.request_id, generation=1, stage="bench", error="x", attempt=2, next_attempt_at=now
        )
        await tx.emit(envelope.subject, retrying)
        handled += 1
        if handled >= events:
            done.set()

    consumer = EventConsumer(
        name=f"bench-hop-{'batched' if batched else 'single'}",
        event_filter="request.failed",
        handlers={"request.failed": handler},
        pool=pool,
        js=js,
        outbox=outbox,
        subjects=outbox.subjects,
        stream=context.settings.stream_name,
        retry=RetryPolicy(),
        concurrency=8,
        start_from="all",
        batched=batched,
    )
    before = context.cpu.sample()
    started = time.perf_counter()
    await consumer.start()
    await asyncio.wait_for(done.wait(), timeout=300)
    await _wait_relayed(pool)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    way = "a transaction per fetch" if batched else "a transaction per event"
    report(f"hop: deliver, stage, ack, relay ({way})", events, elapsed, [])
    context.report_cpu(before, events)


def run_micro(servers: Servers, events: int) -> None:
    print(f"kit micro-benchmarks ({load_average()}); private Postgres and nats-server")
    probe = CpuProbe(services={}, postmaster=servers.postmaster, nats=servers.nats)
    for bench in (bench_outbox_relay, bench_consumer, bench_hop):
        isolation = Isolation.new()
        with fresh_database(servers.admin_dsn) as dsn:
            settings = load_settings(PlatformSettings, platform_environment(dsn, servers.nats_url, isolation))
            asyncio.run(bench(MicroContext(settings, events, probe)))
        asyncio.run(delete_stream(servers.nats_url, isolation.stream))
    print()


# --- CPU accounting from /proc ----------------------------------------------------------


@dataclass(frozen=True)
class ProcTimes:
    """Clock ticks of one process: its own (utime + stime) and its reaped children's."""

    own: int
    children: int


def proc_times(pid: int) -> ProcTimes | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return ProcTimes(utime + stime, cutime + cstime)


def _comm_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1 : stat.rindex(")")], int(stat[stat.rindex(")") + 2 :].split()[1])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


GIT = "git (children of services)"
GIT_HOST = "git host (the remote's side)"
LOAD_GENERATOR = "load generator (bench)"


def log_remote_side(folder: Path) -> Path:
    """Have the publisher's clone (``folder/publisher-repo``) run the remote's side of each
    push and fetch through wrappers that log its CPU; the log's path is returned.

    The bench's remote is a local path, so ``git push`` and ``git fetch`` start the remote's
    ``receive-pack`` (with the connectivity check under it) and ``upload-pack`` as their own
    children: without the wrappers, the git host's work would count as the platform's. A
    hosted remote does it on its own servers. Each wrapper is a bash (its ``times`` reports
    children's CPU to the millisecond; dash's rounds each part down to 10 ms ticks); the
    wrapper's own few milliseconds stay in the platform's git.
    """
    log = folder / "remote-side-times.log"
    clone = folder / "publisher-repo"
    git_init_bare(clone)
    for side in ("receive-pack", "upload-pack"):
        wrapper = folder / side
        wrapper.write_text(
            f'#!/usr/bin/env bash\ngit {side} "$@"\nstatus=$?\ntimes >> "{log}"\nexit $status\n'
        )
        wrapper.chmod(0o755)
        subprocess.run(
            [
                "git",
                "--git-dir",
                str(clone),
                "config",
                f"remote.origin.{side.replace('-', '')}",
                str(wrapper),
            ],
            check=True,
        )
    return log


def remote_side_ticks(log: Path) -> int:
    """Clock ticks of every receive-pack and upload-pack the wrappers ran (the children's line of ``times``)."""
    lines = log.read_text().splitlines() if log.exists() else []
    seconds = 0.0
    # Each ``times`` prints the shell's own user and system time, then its children's.
    for line in lines[1::2]:
        for value in line.split():
            minutes, _, rest = value.rstrip("s").partition("m")
            seconds += int(minutes) * 60 + float(rest)
    return round(seconds * CLOCK_TICKS)


@dataclass
class CpuProbe:
    """What to sum: service processes by name, and how to find Postgres and NATS."""

    services: Mapping[str, int]
    postmaster: int | None  # None: every process named postgres on the machine
    nats: int | None  # None: every process named nats-server
    remote_log: Path | None = None  # see log_remote_side

    def sample(self) -> dict[str, int]:
        ticks: dict[str, int] = {}
        git = 0
        for name, pid in self.services.items():
            times = proc_times(pid)
            if times is not None:
                ticks[name] = times.own
                git += times.children
        host = remote_side_ticks(self.remote_log) if self.remote_log else 0
        ticks[GIT] = git - host
        ticks[GIT_HOST] = host
        ticks["postgres (all processes)"] = self._postgres()
        ticks["nats-server"] = self._nats()
        bench = proc_times(os.getpid())
        ticks[LOAD_GENERATOR] = bench.own if bench else 0
        return ticks

    def _postgres(self) -> int:
        processes = {pid: info for pid in _all_pids() if (info := _comm_and_parent(pid)) is not None}
        total = 0
        for pid, (comm, parent) in processes.items():
            if self.postmaster is None:
                mine = comm == "postgres"
                postmaster = mine and processes.get(parent, ("", 0))[0] != "postgres"
            else:
                postmaster = pid == self.postmaster
                mine = postmaster or parent == self.postmaster
            times = proc_times(pid) if mine else None
            if times is None:
                continue
            # A postmaster's reaped children are the backends of connections that closed.
            total += times.own + (times.children if postmaster else 0)
        return total

    def _nats(self) -> int:
        pids = (
            [self.nats]
            if self.nats is not None
            else [pid for pid in _all_pids() if (_comm_and_parent(pid) or ("", 0))[0] == "nats-server"]
        )
        return sum(times.own for pid in pids if (times := proc_times(pid)) is not None)


def cpu_table(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per request by process, printed; the system's total is returned too.

    The system is every process of the platform, Postgres and NATS; the git host's
    side and the load generator are shown apart.
    """
    per_request: dict[str, float] = {}
    for name, ticks in after.items():
        delta = ticks - before.get(name, 0)
        per_request[name] = delta * 1000 / CLOCK_TICKS / requests
    system = {name: ms for name, ms in per_request.items() if name not in (LOAD_GENERATOR, GIT_HOST)}
    total = sum(system.values())
    host = per_request.get(GIT_HOST, 0.0)
    print(f"  CPU ms per request (/proc utime+stime, {1000 // CLOCK_TICKS} ms ticks):")
    for name, ms in sorted(system.items(), key=lambda item: -item[1]):
        print(f"    {name:<36} {ms:7.2f}  {ms / total * 100 if total else 0:5.1f} %")
    print(f"    {'total (system)':<36} {total:7.2f}")
    print(f"    {GIT_HOST:<36} {host:7.2f}  (not in the total)")
    print(f"    {'total with the git host':<36} {total + host:7.2f}  (as rounds one to four counted)")
    print(f"    {'load generator (not in total)':<36} {per_request.get(LOAD_GENERATOR, 0):7.2f}")
    per_request["total"] = total
    return per_request


# --- the GitOps remote's seed -----------------------------------------------------------


SEED_FILES = (
    "namespace.yaml",
    "resourcequota.yaml",
    "limitrange.yaml",
    "networkpolicy.yaml",
    "argocd-application.yaml",
    "argocd-appproject.yaml",
)


def seed_remote(remote: Path, environments: int, region: str) -> None:
    """``environments`` directories laid out as the publisher writes them, with their generation
    markers, in one commit on ``main`` made by one ``git fast-import`` run."""
    git_init_bare(remote)
    if environments <= 0:
        return
    rng = random.Random(environments)
    stream = bytearray()

    def data(content: bytes) -> None:
        stream.extend(b"data %d\n" % len(content))
        stream.extend(content)
        stream.extend(b"\n")

    stream.extend(b"commit refs/heads/main\nmark :1\n")
    stream.extend(b"committer seed <seed@example.com> 1700000000 +0000\n")
    data(b"bench: seed environments\n")
    for n in range(environments):
        request_id = f"req-{rng.getrandbits(64):016x}"
        team, app = f"seed-{n % 100:03d}", f"app-{n}"
        directory = f"clusters/{region}/teams/{team}/{app}/{request_id}"
        namespace = f"{team}-{app}-{request_id[-8:]}"
        for name in SEED_FILES:
            content = (
                f"# {name}\napiVersion: v1\nkind: Seeded\nmetadata:\n  name: {namespace}\n"
                f"  namespace: {namespace}\n  labels:\n    platform.example.com/request-id: {request_id}\n"
                f"    platform.example.com/team: {team}\nspec:\n  owner: seed@example.com\n"
                f"  repository: https://github.com/example/{app}.git\n  revision: main\n"
            ).encode()
            stream.extend(f"M 100644 inline {directory}/{name}\n".encode())
            data(content)
        stream.extend(f"M 100644 inline .platform/generations/{request_id[4:6]}/{request_id}\n".encode())
        data(b"generation: 1\nstate: published\n")
    stream.extend(b"\n")
    subprocess.run(
        ["git", "--git-dir", str(remote), "fast-import", "--quiet"], input=bytes(stream), check=True
    )
    subprocess.run(["git", "--git-dir", str(remote), "gc", "--quiet"], check=True)


def database_counters(dsn: str, statements: bool) -> dict[str, int]:
    """Transactions of the bench's database, and with ``--statements`` the calls of each statement."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        counters = {"transactions": int(row[0]) if row else 0}
        if statements:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for role, query, calls, exec_ms in conn.execute(
                "SELECT r.rolname, s.query, s.calls, s.total_exec_time FROM pg_stat_statements s"
                " JOIN pg_roles r ON r.oid = s.userid WHERE s.dbid ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())"
            ):
                service = role.removeprefix("svc_").rsplit("_", 1)[0]
                key = f"{service}\t{' '.join(query.split())[:110]}"
                counters[key] = counters.get(key, 0) + int(calls)
                # Microseconds the server spent executing it (planning and the protocol aside).
                counters[EXEC_TIME + key] = counters.get(EXEC_TIME + key, 0) + round(exec_ms * 1000)
    return counters


EXEC_TIME = "exec µs\t"


def work_table(
    before: dict[str, int], after: dict[str, int], requests: int, running: RunningStack, statements: bool
) -> None:
    # The database's own statistics lag a little behind the commits (sent at the end of a
    # transaction's backend idle time); the figure is close, not exact.
    transactions = (after["transactions"] - before.get("transactions", 0)) / requests
    print(f"  Postgres transactions per request: {transactions:.1f}")
    if not statements:
        return
    delta = {key: after[key] - before.get(key, 0) for key in after if key != "transactions"}
    calls = {key: count for key, count in delta.items() if not key.startswith(EXEC_TIME)}
    by_service: collections.Counter[str] = collections.Counter()
    exec_by_service: collections.Counter[str] = collections.Counter()
    for key, count in calls.items():
        by_service[key.split("\t")[0]] += count
        exec_by_service[key.split("\t")[0]] += delta.get(EXEC_TIME + key, 0)
    print(
        "  SQL statements per request by service: "
        + ", ".join(f"{service} {count / requests:.1f}" for service, count in by_service.most_common())
    )
    print(
        "  Postgres execution ms per request by service (pg_stat_statements; planning, parsing and"
        " the protocol aside): "
        + ", ".join(f"{service} {us / 1000 / requests:.2f}" for service, us in exec_by_service.most_common())
    )
    print("    calls   exec ms  per request")
    for key, count in sorted(calls.items(), key=lambda item: -delta.get(EXEC_TIME + item[0], 0))[:45]:
        service, query = key.split("\t")
        exec_ms = delta.get(EXEC_TIME + key, 0) / 1000 / requests
        print(f"    {count / requests:5.1f}  {exec_ms:7.3f}  {service:<20} {query}")


def stream_messages(running: RunningStack) -> int:
    async def count() -> int:
        nc = await nats.connect(running.environment["PLATFORM_NATS_URL"])
        try:
            info = await nc.jetstream().stream_info(running.environment["PLATFORM_EVENTS_STREAM"])
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def directory_size(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


# --- the end-to-end run -----------------------------------------------------------------


@dataclass
class Servers:
    admin_dsn: str
    nats_url: str
    postmaster: int | None
    nats: int | None


@contextlib.contextmanager
def private_servers(folder: Path, statements: bool) -> Iterator[Servers]:
    postgres = EmbeddedPostgres(folder / "postgres")
    broker = EmbeddedNats(folder / "nats")
    try:
        postgres.start()
        if statements:
            # pg_stat_statements loads only at server start: configure it, then restart.
            with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            postgres.stop()
            postgres.start()
        broker.start()
        assert postgres.process is not None
        assert broker.process is not None
        yield Servers(postgres.dsn(), broker.url, postgres.process.pid, broker.process.pid)
    finally:
        broker.stop()
        postgres.remove_data()


@contextlib.contextmanager
def shared_servers() -> Iterator[Servers]:
    with postgres_server() as admin_dsn, nats_server() as nats_url:
        yield Servers(admin_dsn, nats_url, None, None)


@dataclass
class Load:
    """What the load generator saw: when each request was accepted, or why not."""

    ids: list[str] = field(default_factory=list)
    create_latencies: list[float] = field(default_factory=list)
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, api: httpx.Client, body: dict[str, Any], token: str | None = None) -> None:
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            response = api.post("/v1/environment-requests", json=body, headers=headers)
        except httpx.HTTPError as exc:
            with self.lock:
                self.refusals[f"{type(exc).__name__}: {exc}"] += 1
            return
        elapsed = time.perf_counter() - started
        with self.lock:
            if response.status_code in (200, 201, 202):
                self.ids.append(str(response.json()["id"]))
                self.create_latencies.append(elapsed)
            else:
                self.refusals[f"HTTP {response.status_code}: {response.text[:300]}"] += 1


def request_body(n: int, team: str, prefix: str) -> dict[str, Any]:
    return {
        "app": f"{prefix}-{n}",
        "team": team,
        "class": "preview",
        "region": "us-east-1",
        "ttl_hours": 1,
        "owner": "bench@example.com",
        "repository": "https://github.com/example/bench.git",
    }


def raise_budgets(admin: httpx.Client, teams: list[str], running: RunningStack) -> None:
    """A budget no burst can exhaust, so a default budget or a spend cap refuses no bench request."""
    for team in teams:
        for attempt in range(10):
            response = admin.put(f"/v1/teams/{team}/budget", json={"monthly_usd": 1_000_000_000})
            if response.status_code < 500:
                break
            time.sleep(0.5 * (attempt + 1))
        if response.status_code != 200:
            print(f"  note: budget of {team} not raised: HTTP {response.status_code} {response.text[:200]}")
            print("  policy's log ends:\n" + running.processes.log_tail("policy"))


def wait_terminal(dsn: str, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Poll intake's table (one query, not one API call per request) until every request is
    ready, failed or rejected; stops early when nothing moves for STALL_SECONDS."""
    deadline = time.monotonic() + timeout
    last_change, last_counts = time.monotonic(), None
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        while True:
            rows = conn.execute(
                "SELECT status, count(*) AS n FROM intake.requests WHERE id = ANY(%s) GROUP BY status",
                [ids],
            ).fetchall()
            counts = {row["status"]: row["n"] for row in rows}
            if counts != last_counts:
                last_counts, last_change = counts, time.monotonic()
            finished = sum(n for status, n in counts.items() if status in TERMINAL)
            now = time.monotonic()
            if finished >= len(ids) or now > deadline or now - last_change > STALL_SECONDS:
                break
            time.sleep(0.1)
        if finished < len(ids):
            print(f"  stopped waiting: {len(ids) - finished} requests not finished; by status {counts}")
        return conn.execute(
            "SELECT id, status, created_at, last_reconciled_at, last_error, gitops_path"
            " FROM intake.requests WHERE id = ANY(%s)",
            [ids],
        ).fetchall()


def summarise(rows: list[dict[str, Any]], running: RunningStack) -> list[float]:
    """Prints failures (with their reasons) and whether every ready request is on the remote head;
    returns the submit→ready seconds of the ready ones (server-side timestamps)."""
    by_status = collections.Counter(row["status"] for row in rows)
    if set(by_status) - {"ready"}:
        print(f"  by status: {dict(by_status)}")
        reasons = collections.Counter(
            f"{row['status']}: {row['last_error']}" for row in rows if row["status"] != "ready"
        )
        for reason, count in reasons.most_common(5):
            print(f"    {count} × {reason}")
    ready = [row for row in rows if row["status"] == "ready"]
    head = set(running.git("ls-tree", "-d", "-r", "--name-only", "main").split())
    missing = [row["id"] for row in ready if row["gitops_path"] not in head]
    print(f"  on the remote head: {len(ready) - len(missing)} of {len(ready)} ready requests' directories")
    return [(row["last_reconciled_at"] - row["created_at"]).total_seconds() for row in ready]


@dataclass
class Profiler:
    """py-spy record on every service process while the burst runs (``--profile DIR``)."""

    folder: Path
    pids: Mapping[str, int]
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @staticmethod
    def binary() -> str:
        found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(found).exists():
            raise SystemExit(
                "--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)"
            )
        return found

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            output = self.folder / f"{name}.txt"
            process = subprocess.Popen(
                [
                    self.binary(),
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.processes.append((name, process))

    def stop(self) -> None:
        for _, process in self.processes:
            process.send_signal(signal.SIGINT)
        for _, process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for name, _ in self.processes:
            summarise_profile(self.folder / f"{name}.txt", name)


def summarise_profile(path: Path, name: str, top: int = 12) -> None:
    """Top frames of a py-spy raw (collapsed stacks) file, by self time and by total time."""
    if not path.exists():
        print(f"  profile of {name}: none recorded")
        return
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame]
        if not frames or _short(frames[-1]) in IDLE_FRAMES:
            continue
        samples += count
        own[_short(frames[-1])] += count
        packages[_package(frames[-1])] += count
        for frame in {_short(frame) for frame in frames}:
            total[frame] += count
    print(f"  profile of {name}: {samples} busy samples, idle waits left out ({path})")
    if not samples:
        return
    print(
        "    self time by package: "
        + ", ".join(f"{package} {count / samples * 100:.0f} %" for package, count in packages.most_common(10))
    )
    print("    self:")
    for frame, count in own.most_common(top):
        print(f"      {count / samples * 100:5.1f} %  {frame}")
    print("    total (inclusive):")
    for frame, count in total.most_common(top + 8)[: top + 8]:
        print(f"      {count / samples * 100:5.1f} %  {frame}")


# Leaf frames of a thread that waits (py-spy samples some of them as running): not CPU.
IDLE_FRAMES = frozenset(
    {"EpollSelector.select (selectors.py)", "_worker (futures/thread.py)", "wait (threading.py)"}
)


def _package(frame: str) -> str:
    """What a frame's file belongs to, as py-spy names it: ``psycopg``, ``asyncio``,
    ``libs/inbox``, ``services/intake``, or a bare module (``selectors``)."""
    where = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    if parts[0] in ("libs", "services", "contracts") and len(parts) > 1:
        return f"{parts[0]}/{parts[1].removesuffix('.py')}"
    return parts[0].removesuffix(".py")


def _short(frame: str) -> str:
    """``function (path/to/module.py:line)`` → ``function (module.py)``: one entry per function."""
    function, _, where = frame.partition(" (")
    location = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(location).parts
    short = "/".join(parts[-2:]) if parts else location
    return f"{function} ({short})"


def end_to_end(args: argparse.Namespace, existing: int, *, steady: bool, idle: int) -> dict[str, float]:
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcp-bench-")))
        servers = stack.enter_context(
            shared_servers() if args.shared_servers else private_servers(folder / "servers", args.statements)
        )
        isolation = Isolation.new()
        dsn = stack.enter_context(fresh_database(servers.admin_dsn))
        env = platform_environment(dsn, servers.nats_url, isolation)
        started = time.perf_counter()
        seed_remote(folder / "gitops-remote.git", existing, "us-east-1")
        seeded = time.perf_counter() - started
        remote_log = log_remote_side(folder)
        running = stack.enter_context(
            running_stack(env, servers.admin_dsn, folder, extra={**BENCH_SETTINGS, **args.setting})
        )
        stack.callback(lambda: asyncio.run(delete_stream(servers.nats_url, isolation.stream)))
        print(
            f"remote with {existing} environments (seeded in {seeded:.1f} s,"
            f" {directory_size(running.remote) / 1e6:.1f} MB); {load_average()}"
        )
        pids = {
            name: process.process.pid
            for name, process in running.processes.services.items()
            if process.process is not None
        }
        probe = CpuProbe(pids, servers.postmaster, servers.nats, remote_log)
        count = args.rate * args.duration if steady else args.requests
        teams = [f"bench-{n:03d}" for n in range((count + args.per_team - 1) // args.per_team)]
        tokens = {team: mint_token(f"{team}@example.com", "requester") for team in teams}
        with running.client() as api, running.client("root@example.com", "admin") as admin:
            raise_budgets(admin, [*teams, "idle"], running)
            if idle:
                idle_load = Load()
                for n in range(idle):
                    idle_load.create(api, request_body(n, "idle", "idle"))
                    if idle_load.ids:
                        wait_terminal(dsn, idle_load.ids[-1:], timeout=60)
                for refusal, times in idle_load.refusals.items():
                    print(f"  refused {times} ×: {refusal}")
                rows = wait_terminal(dsn, idle_load.ids, timeout=60)
                latencies = [
                    (row["last_reconciled_at"] - row["created_at"]).total_seconds()
                    for row in rows
                    if row["status"] == "ready"
                ]
                print(f"  one at a time, idle system: create → ready  {percentiles(latencies)}")
            profiler = Profiler(args.profile / f"existing-{existing}", pids) if args.profile else None
            load = Load()
            counters_before = database_counters(dsn, args.statements)
            messages_before = stream_messages(running)
            before = probe.sample()
            if profiler:
                profiler.start()
            started = time.perf_counter()
            if steady:
                submit_at_rate(api, load, args.rate, args.duration, teams, tokens, args.per_team)
            else:
                with ThreadPoolExecutor(args.clients) as pool:
                    list(
                        pool.map(
                            lambda n: load.create(
                                api,
                                request_body(n, teams[n // args.per_team], "bench"),
                                tokens[teams[n // args.per_team]],
                            ),
                            range(count),
                        )
                    )
            submitted = time.perf_counter() - started
            rows = wait_terminal(running.dsn, load.ids, timeout=args.timeout)
            elapsed = time.perf_counter() - started
            after = probe.sample()
            counters_after = database_counters(dsn, args.statements)
            if profiler:
                profiler.stop()
        for refusal, times in load.refusals.most_common(5):
            print(f"  refused {times} ×: {refusal}")
        mode = f"steady {args.rate}/s for {args.duration} s" if steady else f"burst of {count}"
        print(f"  {mode}: {len(load.ids)} accepted; {load_average()}")
        report("  HTTP create", len(load.ids), submitted, load.create_latencies)
        to_ready = summarise(rows, running)
        ready_rows = [row for row in rows if row["status"] == "ready"]
        if ready_rows:
            first = min(row["created_at"] for row in ready_rows)
            last = max(row["last_reconciled_at"] for row in ready_rows)
            span = max((last - first).total_seconds(), 1e-3)
            print(
                f"  {'end to end: submit → ready':<34} {len(ready_rows):>6} in {span:6.2f} s ="
                f" {len(ready_rows) / span:8.1f}/s   {percentiles(to_ready)}"
            )
        print(f"  (bench wall clock {elapsed:.1f} s)")
        cpu = cpu_table(before, after, max(1, len(load.ids)))
        work_table(counters_before, counters_after, max(1, len(load.ids)), running, args.statements)
        events = stream_messages(running) - messages_before
        print(f"  events on the stream per request: {events / max(1, len(load.ids)):.1f}")
        size = directory_size(running.remote)
        commits = len(running.git("rev-list", "main").split())
        print(f"  git remote: {size / 1e6:.1f} MB, {commits} commits on main\n")
        cpu["throughput"] = len(ready_rows) / span if ready_rows else 0.0
        cpu["p50"] = sorted(to_ready)[len(to_ready) // 2] if to_ready else 0.0
        return cpu


def submit_at_rate(
    api: httpx.Client,
    load: Load,
    rate: int,
    duration: int,
    teams: list[str],
    tokens: Mapping[str, str],
    per_team: int,
) -> None:
    """Open loop: request n is sent at n / rate seconds, whether or not earlier ones answered."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max(8, rate // 2)) as pool:
        for n in range(rate * duration):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            team = teams[n // per_team]
            pool.submit(load.create, api, request_body(n, team, "steady"), tokens[team])


def setting_pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.startswith("PLATFORM_"):
        raise argparse.ArgumentTypeError("expected PLATFORM_NAME=value")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000, help="events for the outbox and consumer runs")
    parser.add_argument("--skip-micro", action="store_true", help="leave out the outbox and consumer runs")
    parser.add_argument("--requests", type=int, default=300, help="requests in the burst (default 300)")
    parser.add_argument("--existing", type=int, default=10000, help="environments already in the remote")
    parser.add_argument(
        "--compare-existing", type=int, default=10, help="the same run into a remote this size (-1: none)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients of the burst")
    parser.add_argument(
        "--per-team", type=int, default=20, help="requests per team (each team gets a budget)"
    )
    parser.add_argument("--idle", type=int, default=10, help="requests one at a time first (idle latency)")
    parser.add_argument(
        "--rate", type=int, default=0, help="steady load: requests per second (with --duration)"
    )
    parser.add_argument("--duration", type=int, default=60, help="steady load: seconds")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the run to finish")
    parser.add_argument(
        "--shared-servers",
        action="store_true",
        help="use PLATFORM_TEST_POSTGRES_DSN / PLATFORM_TEST_NATS_URL (CPU of Postgres and NATS then includes others')",
    )
    parser.add_argument(
        "--statements", action="store_true", help="count SQL statements per service (pg_stat_statements)"
    )
    parser.add_argument("--profile", type=Path, help="record each service with py-spy into this folder")
    parser.add_argument(
        "--setting",
        type=setting_pair,
        action="append",
        default=[],
        help="PLATFORM_NAME=value for every service of the stack (repeatable)",
    )
    args = parser.parse_args()
    args.setting = dict(args.setting)
    print(f"platform-control-plane benchmarks: {os.cpu_count()} CPUs, {cpu_model()}\n")
    if not args.skip_micro:
        with (
            tempfile.TemporaryDirectory(prefix="pcp-bench-micro-") as folder,
            private_servers(Path(folder), statements=False) as servers,
        ):
            run_micro(servers, args.events)
    steady = args.rate > 0
    sizes = [args.existing]
    if args.compare_existing >= 0 and args.compare_existing != args.existing:
        sizes.append(args.compare_existing)
    results = {
        size: end_to_end(args, size, steady=steady, idle=args.idle if n == 0 else 0)
        for n, size in enumerate(sizes)
    }
    if len(results) == 2:
        large, small = (results[size] for size in sizes)

        def git_side(result: dict[str, float]) -> float:
            return result.get("git_publisher", 0) + result[GIT]

        print(
            f"{sizes[0]} vs {sizes[1]} environments: CPU per request {large['total']:.1f} vs"
            f" {small['total']:.1f} ms ({large['total'] / max(small['total'], 1e-9):.2f}×), git-publisher"
            f" + git {git_side(large):.1f} vs {git_side(small):.1f} ms, the git host's side"
            f" {large[GIT_HOST]:.1f} vs {small[GIT_HOST]:.1f} ms, throughput"
            f" {large['throughput']:.1f} vs {small['throughput']:.1f}/s"
        )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
