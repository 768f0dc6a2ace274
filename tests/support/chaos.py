"""Faults on a running stack, on a schedule: SIGKILL one replica of a random backend service
every few seconds, crash the broker once and the database once; meanwhile the supervisor
of ``platformd dev`` (:meth:`ProcessStack.supervise_once`) restarts what died.

All random choices come from one seeded generator, so a run's choices can be replayed.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from libs.embedded import EmbeddedNats, EmbeddedPostgres
from services.tools.platformd.process_stack import ProcessStack
from services.tools.platformd.registry import BACKEND_SERVICES
from tests.support.private_servers import crash_nats, crash_postgres

SCALES = ("small", "full")
DEFAULT_SEED = 20261207


def chaos_scale() -> str:
    """``PLATFORM_CHAOS_SCALE``: ``small`` (the default, what ``make test`` runs) or ``full``
    (``make chaos``)."""
    scale = os.environ.get("PLATFORM_CHAOS_SCALE", "small")
    if scale not in SCALES:
        raise ValueError(f"PLATFORM_CHAOS_SCALE must be one of {', '.join(SCALES)}, not {scale!r}")
    return scale


def chaos_seed() -> int:
    """``PLATFORM_CHAOS_SEED``: the seed of every random choice; a fixed one unless set."""
    return int(os.environ.get("PLATFORM_CHAOS_SEED", str(DEFAULT_SEED)))


@dataclass(frozen=True)
class Outage:
    """A server that goes down at ``at`` seconds into the run for ``seconds``."""

    name: str
    at: float
    seconds: float
    crash: Callable[[], None]
    start: Callable[[], None]


@dataclass
class Chaos:
    processes: ProcessStack
    rng: random.Random
    kill_every: float
    outages: list[Outage] = field(default_factory=list)
    # What happened, as "+12.3s what" lines, for the test's output.
    journal: list[str] = field(default_factory=list)
    # Reports of processes that died without being killed here.
    unexpected_exits: list[str] = field(default_factory=list)
    error: BaseException | None = None
    # The outages that happened (crash and restart), by server name.
    outages_done: list[str] = field(default_factory=list)
    kills: int = 0

    def __post_init__(self) -> None:
        self._calm = threading.Event()
        self._stop = threading.Event()
        self._killed: set[str] = set()
        self._begin = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    @classmethod
    def with_servers(
        cls,
        processes: ProcessStack,
        rng: random.Random,
        kill_every: float,
        nats: tuple[EmbeddedNats, float] | None = None,
        postgres: tuple[EmbeddedPostgres, float] | None = None,
        outage_seconds: float = 2.0,
    ) -> Chaos:
        """Kills every ``kill_every`` s, plus a crash of ``nats`` / ``postgres`` at the given second."""
        outages = []
        if nats is not None:
            broker, at = nats
            outages.append(Outage("NATS", at, outage_seconds, lambda: crash_nats(broker), broker.start))
        if postgres is not None:
            database, at = postgres
            outages.append(
                Outage("Postgres", at, outage_seconds, lambda: crash_postgres(database), database.start)
            )
        return cls(processes, rng, kill_every, outages)

    def start(self) -> Chaos:
        self._begin = time.monotonic()
        self._thread.start()
        return self

    def calm(self) -> None:
        """No more faults; the supervisor keeps restarting what is down."""
        self._calm.set()

    def stop(self) -> None:
        self._calm.set()
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise AssertionError(f"the chaos thread failed: {self.error!r}") from self.error

    def note(self, what: str) -> None:
        line = f"+{time.monotonic() - self._begin:6.1f}s {what}"
        self.journal.append(line)
        print(line, flush=True)

    def _run(self) -> None:
        try:
            next_kill = self._begin + self.kill_every
            pending = sorted(self.outages, key=lambda outage: outage.at)
            while not self._stop.is_set():
                self.processes.supervise_once(self._reported)
                now = time.monotonic()
                if not self._calm.is_set():
                    if pending and now >= self._begin + pending[0].at:
                        self._outage(pending.pop(0))
                    elif now >= next_kill:
                        self._kill_one_replica()
                        next_kill = now + self.kill_every
                time.sleep(0.25)
        except BaseException as exc:
            self.error = exc

    def _outage(self, outage: Outage) -> None:
        outage.crash()
        self.note(f"{outage.name} crashed (SIGKILL)")
        time.sleep(outage.seconds)
        outage.start()
        self.note(f"{outage.name} restarted")
        self.outages_done.append(outage.name)

    def _kill_one_replica(self) -> None:
        """SIGKILL one replica of a random service whose replicas all run (so the service
        itself stays up: this is a replica's crash, not a service's outage)."""
        whole = [
            service
            for service in BACKEND_SERVICES
            if all(self.processes.services[name].running for name in self.processes.replicas_of(service))
        ]
        if not whole:
            return
        victim = self.rng.choice(self.processes.replicas_of(self.rng.choice(whole)))
        self._killed.add(victim)
        self.processes.kill(victim)
        self.kills += 1
        self.note(f"{victim} killed (SIGKILL)")

    def _reported(self, report: str) -> None:
        name = report.split(" ", 1)[0]
        if name in self._killed and "was killed by SIGKILL" in report.splitlines()[0]:
            self._killed.discard(name)
            return
        self.unexpected_exits.append(report)
        self.note(f"{name} died by itself:\n{report}")
