"""The whole system as separate processes for end-to-end and fault-injection tests."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from contracts.envelope import Envelope
from libs.embedded import free_port
from libs.settings import child_environment
from services.tools.platformd.process_stack import ProcessStack, git_init_bare
from services.tools.platformd.registry import BACKEND_SERVICES
from tests.support.bus import stream_messages
from tests.support.gateway import mint
from tests.support.isolation import TEST_JWT_SECRET


def mint_token(actor: str, role: str, teams: list[str] | None = None, secret: str = TEST_JWT_SECRET) -> str:
    """A token for ``actor`` (subject: the address's local part) that the stack accepts."""
    claims: dict[str, Any] = {"sub": actor.split("@", maxsplit=1)[0], "email": actor}
    if teams is not None:
        claims["teams"] = teams
    return mint(role, secret=secret, **claims)


@dataclass
class RunningStack:
    processes: ProcessStack
    remote: Path
    dsn: str
    environment: Mapping[str, str]

    @property
    def api_url(self) -> str:
        return self.processes.api_url

    def client(
        self, actor: str = "alice@example.com", role: str = "requester", teams: list[str] | None = None
    ) -> httpx.Client:
        token = mint_token(actor, role, teams)
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def events(self, request_id: str) -> list[tuple[Envelope, dict[str, str]]]:
        """Every event about ``request_id`` on the stack's stream, with its NATS headers."""

        async def read() -> list[tuple[Envelope, dict[str, str]]]:
            nc = await nats.connect(self.environment["PLATFORM_NATS_URL"])
            try:
                messages = await stream_messages(
                    nc.jetstream(),
                    self.environment["PLATFORM_EVENTS_STREAM"],
                    self.environment["PLATFORM_EVENTS_SUBJECT_PREFIX"],
                    "request.>",
                )
            finally:
                await nc.close()
            return [(envelope, headers) for envelope, headers in messages if envelope.subject == request_id]

        return asyncio.run(read())

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.remote), *args], check=True, capture_output=True, text=True
        ).stdout

    def commits_for(self, request_id: str, branch: str = "main") -> list[str]:
        out = self.git("log", "--format=%H", f"--grep=Platform-Request: {request_id}$", branch)
        return out.split()

    def wait_for_status(
        self, client: httpx.Client, request_id: str, statuses: set[str], timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = client.get(f"/v1/environment-requests/{request_id}")
            if response.status_code == 200:
                last = response.json()
                if last["status"] in statuses:
                    return last
            time.sleep(0.2)
        raise AssertionError(
            f"{request_id} did not reach {statuses}; last: {last.get('status')} {last.get('last_error')}"
        )


def _service_roles(
    admin_dsn: str, database_dsn: str, token: str
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """One login role per service that can create only its own schema.

    A service that touched another service's schema would get "permission denied", so an
    end-to-end run with these roles proves the ownership boundary at the database.
    """
    database = conninfo_to_dict(database_dsn)["dbname"]
    service_environment: dict[str, dict[str, str]] = {}
    roles = []
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for service in BACKEND_SERVICES:
            role = f"svc_{service}_{token}"
            password = uuid.uuid4().hex
            conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
            conn.execute(f'GRANT CREATE, CONNECT ON DATABASE "{database}" TO "{role}"')
            params = conninfo_to_dict(database_dsn)
            params.update(user=role, password=password)
            service_environment[service] = {"PLATFORM_POSTGRES_DSN": make_conninfo(**params)}  # type: ignore[arg-type]
            roles.append(role)
    return service_environment, roles


def _drop_roles(admin_dsn: str, database_dsn: str, roles: list[str]) -> None:
    database = conninfo_to_dict(database_dsn)["dbname"]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in roles:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


@contextlib.contextmanager
def running_stack(
    platform_env: Mapping[str, str],
    admin_dsn: str,
    folder: Path,
    extra: Mapping[str, str] | None = None,
    replicas: int = 1,
) -> Iterator[RunningStack]:
    """Start all seven services as processes, each with its own database role; ``replicas``
    processes of every backend service (see :class:`ProcessStack`). A process that exits
    while the stack starts is started again (up to three starts), as ``platformd dev`` does."""
    remote = folder / "gitops-remote.git"
    git_init_bare(remote)
    subprocess.run(["git", "--git-dir", str(remote), "config", "core.logAllRefUpdates", "true"], check=True)
    environment = {
        **platform_env,
        "PLATFORM_GITOPS_REPO_URL": str(remote),
        "PLATFORM_GITOPS_REPO_PATH": str(folder / "publisher-repo"),
        "PLATFORM_GIT_PUSH_ENABLED": "true",
        # Short leases so work held by a killed process is redelivered quickly.
        "PLATFORM_RECONCILE_TIMEOUT_SECONDS": "3",
        **(extra or {}),
    }
    token = uuid.uuid4().hex[:8]
    service_environment, roles = _service_roles(admin_dsn, platform_env["PLATFORM_POSTGRES_DSN"], token)
    processes = ProcessStack(
        environment,
        folder / "logs",
        gateway_address=f"127.0.0.1:{free_port()}",
        service_environment=service_environment,
        replicas=replicas,
    )
    try:
        processes.start_all()
        try:
            processes.wait_ready(timeout=60 + 30 * replicas, start_attempts=3, report=print)
        except (TimeoutError, RuntimeError) as exc:
            logs = "\n".join(f"--- {name}\n{processes.log_tail(name)}" for name in processes.services)
            raise AssertionError(f"stack did not start: {exc}\n{logs}") from exc
        yield RunningStack(processes, remote, platform_env["PLATFORM_POSTGRES_DSN"], environment)
    finally:
        processes.stop_all()
        _drop_roles(admin_dsn, platform_env["PLATFORM_POSTGRES_DSN"], roles)


@contextlib.contextmanager
def extra_gateway(
    platform_env: Mapping[str, str], folder: Path, overrides: Mapping[str, str]
) -> Iterator[str]:
    """A second gateway process in front of a running stack, configured differently
    (e.g. with team scoping enforced); yields its base URL."""
    address = f"127.0.0.1:{free_port()}"
    log_path = folder / "extra-gateway.log"
    environment = child_environment(
        {**platform_env, **overrides, "PLATFORM_ADDRESS": address, "PYTHONUNBUFFERED": "1"}
    )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.tools.platformd.main", "gateway"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"extra gateway exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{address}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"extra gateway not ready: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://{address}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
