"""Liveness and dependency reports, shared by the services' kit and the gateway.

Three questions, three answers (docs/operations.md, "Health and readiness"):

- *Is this process wedged?* (``/healthz``, liveness) An event loop that stopped turning, a
  consumer or background loop that died, a NATS client that gave up: a restart fixes
  those. Nothing outside the process is checked, since a restart fixes no dependency.
- *Can this process do its own job now?* (``/readyz``, readiness) Its own connections;
  the checks live with their owner (the kit, the gateway).
- *How is everything it depends on?* (dependencies) A git remote, a cluster region, the
  identity provider, the services behind the gateway: checked in the background by a
  :class:`DependencyMonitor`, reported with their state, last error and since when, and
  exported as ``platform_dependency_*`` metrics, but never part of readiness. One failing
  region or remote must not take every pod out of its Service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from contracts.rpc import DependencyReport, DependencyState
from libs.errors import PlatformError
from libs.telemetry import REGISTRY

log = logging.getLogger(__name__)

DependencyCheck = Callable[[], Awaitable[None]]

# How often dependencies are checked in the background, and how long one check may take.
CHECK_INTERVAL_SECONDS = 15.0
CHECK_TIMEOUT_SECONDS = 10.0
# The loop heartbeat ticks every second; a tick this much overdue means the loop is stuck.
LOOP_STALE_SECONDS = 10.0

DEPENDENCY_UP = Gauge(
    "platform_dependency_up",
    "1 when the dependency's last check succeeded, 0 when it failed (absent before the first check).",
    ["dependency"],
    registry=REGISTRY,
)
DEPENDENCY_LAST_SUCCESS = Gauge(
    "platform_dependency_last_success_timestamp_seconds",
    "Unix time of the dependency's last successful check.",
    ["dependency"],
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Gauge(
    "platform_event_loop_lag_seconds",
    "How late the event loop's last one-second heartbeat tick ran.",
    registry=REGISTRY,
)


class DependencyDown(Exception):
    """A failed dependency check whose message is written for people: it is shown as is in
    reports, so it must never name a host, URL, DSN or secret."""


def safe_reason(exc: BaseException) -> str:
    """Why a check failed, in words safe to show anyone.

    :class:`DependencyDown` and :class:`libs.errors.PlatformError` messages are written to
    be shown (they reach API clients already); anything else is named by its type only,
    because arbitrary exception text may quote hosts or DSNs.
    """
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, DependencyDown):
        return str(exc)
    if isinstance(exc, PlatformError):
        return exc.message
    return f"failing ({type(exc).__name__})"


def task_problem(task: asyncio.Task[Any] | None, what: str) -> str | None:
    """Why ``task`` is no longer running (cancelled, crashed, returned), or None while it runs."""
    if task is None or not task.done():
        return None
    if task.cancelled():
        return f"{what} was cancelled"
    error = task.exception()
    if error is not None:
        return f"{what} crashed ({type(error).__name__})"
    return f"{what} ended"


def nats_client_problem(nc: Any) -> str | None:
    """Why the NATS client can no longer recover by itself, or None.

    Being disconnected is not a problem here (the client reconnects forever; readiness
    reports it). A client that closed for good, or whose internal loops died while it
    believes it is connected, never recovers: only a restart does. The loop attributes are
    nats-py internals, read defensively.
    """
    if nc.is_closed:
        return "the NATS client is closed and will not reconnect"
    if nc.is_connected and not nc.is_draining:
        for attribute, what in (("_reading_task", "read loop"), ("_flusher_task", "flusher")):
            task = getattr(nc, attribute, None)
            if isinstance(task, asyncio.Task) and task.done():
                return f"the NATS client's {what} stopped"
    if nc.is_reconnecting:
        task = getattr(nc, "_reconnection_task", None)
        if isinstance(task, asyncio.Task) and task.done():
            return "the NATS client stopped reconnecting"
    return None


class LoopHeartbeat:
    """A task ticking every ``period`` seconds; how long ago it last ran says whether the
    event loop still turns.

    A fully blocked loop cannot answer a probe at all (the probe times out, which is a
    failure too). This catches what is left: a probe answered just after the loop was
    stuck for longer than ``stale_after`` (the last tick came that late), a heartbeat that
    stopped ticking although the loop answers, or a heartbeat task that died. One stuck
    moment fails one probe; the probe's failure threshold decides when to restart.
    """

    def __init__(self, period: float = 1.0, stale_after: float = LOOP_STALE_SECONDS) -> None:
        self.period = period
        self.stale_after = stale_after
        self.last_tick: float | None = None
        self.last_lag = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        self.last_tick = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="loop-heartbeat")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.last_lag = max(0.0, now - before - self.period)
            EVENT_LOOP_LAG.set(self.last_lag)
            self.last_tick = now

    def problem(self, now: float | None = None) -> str | None:
        """Why the loop looks stuck, or None (also before start and after stop)."""
        if self._stopped or self._task is None or self.last_tick is None:
            return None
        ended = task_problem(self._task, "the event loop heartbeat")
        if ended is not None:
            return ended
        age = (time.monotonic() if now is None else now) - self.last_tick
        if age > self.stale_after:
            return f"the event loop heartbeat is {age:.1f}s old (limit {self.stale_after:g}s)"
        if self.last_lag > self.stale_after:
            return f"the event loop was stuck for {self.last_lag:.1f}s (limit {self.stale_after:g}s)"
        return None


@dataclass
class _Seen:
    state: DependencyState = "unknown"
    since: datetime | None = None
    last_error: str | None = None
    last_success_at: datetime | None = None
    checked_at: datetime | None = None

    def report(self) -> DependencyReport:
        return DependencyReport(
            state=self.state,
            since=self.since,
            last_error=self.last_error,
            last_success_at=self.last_success_at,
            checked_at=self.checked_at,
        )


class DependencyMonitor:
    """Checks named dependencies (concurrently, each bounded by ``timeout``) and remembers
    what it saw: state, since when, last error, last success.

    ``checks`` is read at every refresh, so dependencies registered after construction
    count. Checks run in the background (:meth:`run`), never from a probe, so a slow remote
    cannot slow ``/readyz`` or ``ping`` down; state changes are logged once each.
    """

    def __init__(
        self,
        checks: Mapping[str, DependencyCheck],
        *,
        timeout: float = CHECK_TIMEOUT_SECONDS,
        interval: float = CHECK_INTERVAL_SECONDS,
    ) -> None:
        self.checks = checks
        self.timeout = timeout
        self.interval = interval
        self._seen: dict[str, _Seen] = {}
        self._lock = asyncio.Lock()
        self._refreshed_at: float | None = None

    async def refresh(self, max_age: float = 0.0) -> None:
        """Check every dependency now. Callers arriving while a refresh runs share it, and a
        refresh younger than ``max_age`` seconds is reused instead of repeated."""
        async with self._lock:
            if self._refreshed_at is not None and time.monotonic() - self._refreshed_at < max_age:
                return
            names = list(self.checks)
            outcomes = await asyncio.gather(*(self._check(self.checks[name]) for name in names))
            now = datetime.now(UTC)
            for name, error in zip(names, outcomes, strict=True):
                self._record(name, error, now)
            self._refreshed_at = time.monotonic()

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every ``interval`` seconds until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # a report must never take the process down
                log.warning("dependency checks failed", extra={"fields": {"error_type": type(exc).__name__}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    def report(self) -> dict[str, DependencyReport]:
        """Every registered dependency as last seen (``unknown`` before its first check)."""
        return {name: self._seen.get(name, _Seen()).report() for name in sorted(self.checks)}

    async def _check(self, check: DependencyCheck) -> str | None:
        try:
            await asyncio.wait_for(check(), self.timeout)
        except Exception as exc:
            return safe_reason(exc)
        return None

    def _record(self, name: str, error: str | None, now: datetime) -> None:
        seen = self._seen.setdefault(name, _Seen())
        state: DependencyState = "up" if error is None else "down"
        if state != seen.state:
            if state == "down":
                log.warning("dependency down", extra={"fields": {"dependency": name, "reason": error}})
            elif seen.state == "down":
                log.info("dependency recovered", extra={"fields": {"dependency": name}})
            seen.state, seen.since = state, now
        seen.checked_at = now
        seen.last_error = error if error is not None else seen.last_error
        DEPENDENCY_UP.labels(name).set(1 if error is None else 0)
        if error is None:
            seen.last_success_at = now
            DEPENDENCY_LAST_SUCCESS.labels(name).set(now.timestamp())
