"""The gateway's health: its liveness, and the platform's dependency report (``GET /v1/status``).

The gateway checks in the background what it uses but does not own: the identity provider
(when OIDC is configured) and each backend service as ``service/<name>`` (answering
``ping`` and ready). Each backend's ``ping`` reply also carries the dependencies *it*
checks (the git remote, cluster regions); the report lists both. None of it is part of
the gateway's readiness, which is its NATS connection alone: a backend or a region down
must not take every gateway replica out of its Service.
"""

from __future__ import annotations

import asyncio
import contextlib

from contracts.rpc import DependencyReport, PingReply
from libs.health import (
    DependencyCheck,
    DependencyDown,
    DependencyMonitor,
    LoopHeartbeat,
    nats_client_problem,
    task_problem,
)
from services.gateway.adapters.oidc import OidcVerifier, ProviderUnavailable
from services.gateway.adapters.services import BACKEND_SERVICES, Services
from services.gateway.domain.resources import DependencyStatus, PlatformStatus

GATEWAY = "gateway"
# GET /v1/status checks afresh, but at most once per this many seconds however many ask.
STATUS_MAX_AGE_SECONDS = 1.0


class GatewayHealth:
    """Liveness parts and dependency checks of one gateway process, started with its NATS
    connection (app start-up) and stopped before it drains."""

    def __init__(self, oidc: OidcVerifier | None, reply_timeout: float) -> None:
        self.oidc = oidc
        self.reply_timeout = reply_timeout
        self.heartbeat = LoopHeartbeat()
        self.checks: dict[str, DependencyCheck] = {}
        # The ping's own reply timeout fires first, with the clearer "not answering".
        self.monitor = DependencyMonitor(self.checks, timeout=2 * reply_timeout)
        self._replies: dict[str, PingReply] = {}
        self._services: Services | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self, services: Services) -> None:
        self._services = services
        if self.oidc is not None:
            self.checks["oidc"] = _oidc_check(self.oidc)
        for name in BACKEND_SERVICES:
            self.checks[f"service/{name}"] = self._backend_check(services, name)
        self.heartbeat.start()
        self._monitor_task = asyncio.create_task(self.monitor.run(self._stopping), name="dependency-monitor")

    async def stop(self) -> None:
        self._stopping.set()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor_task
        await self.heartbeat.stop()

    def liveness_problems(self) -> dict[str, str]:
        """What is wedged in this process (empty: alive): its event loop, its NATS client
        (closed for good or with dead internal loops), its dependency checks. Nothing
        outside the process: a restart would fix none of that."""
        problems: dict[str, str | None] = {"event_loop": self.heartbeat.problem()}
        if self._services is not None and not self._stopping.is_set():
            problems["nats"] = nats_client_problem(self._services.nc)
            problems["dependency_checks"] = task_problem(self._monitor_task, "the dependency checks")
        return {part: problem for part, problem in problems.items() if problem}

    async def status(self) -> PlatformStatus:
        """Every dependency, checked at most ``STATUS_MAX_AGE_SECONDS`` ago: the gateway's own
        first, then each answering backend's, in the order of :data:`BACKEND_SERVICES`."""
        await self.monitor.refresh(max_age=STATUS_MAX_AGE_SECONDS)
        entries = [_entry(name, GATEWAY, report) for name, report in self.monitor.report().items()]
        for service in BACKEND_SERVICES:
            # A backend that did not answer reports nothing: service/<name> says why.
            reply = self._replies.get(service)
            if reply is not None:
                entries.extend(
                    _entry(name, service, reply.dependencies[name]) for name in sorted(reply.dependencies)
                )
        degraded = any(entry.state != "up" for entry in entries)
        return PlatformStatus(status="degraded" if degraded else "ok", dependencies=entries)

    def _backend_check(self, services: Services, name: str) -> DependencyCheck:
        async def check() -> None:
            self._replies.pop(name, None)
            reply = await services.ping(name, self.reply_timeout)
            self._replies[name] = reply
            if not reply.ready:
                failing = ", ".join(
                    f"{part}: {result}" for part, result in sorted(reply.checks.items()) if result != "ok"
                )
                raise DependencyDown(f"the {name} service is not ready ({failing})")

        return check


def _oidc_check(oidc: OidcVerifier) -> DependencyCheck:
    async def check() -> None:
        try:
            # Discovery and keys; cached ones count, so this does not hammer the provider.
            await oidc.check()
        except ProviderUnavailable as exc:
            raise DependencyDown(str(exc)) from None  # written for API clients already

    return check


def _entry(name: str, reported_by: str, report: DependencyReport) -> DependencyStatus:
    return DependencyStatus(
        name=name,
        reported_by=reported_by,
        state=report.state,
        since=report.since,
        last_error=report.last_error,
        last_success_at=report.last_success_at,
        checked_at=report.checked_at,
    )
