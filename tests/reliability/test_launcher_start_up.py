"""The launcher (``platformd dev``, :class:`ProcessStack`) starts a service again when it
exits during start-up, instead of giving up on the whole stack, and says why; a refused
configuration is reported at once, as starting it again cannot help."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from libs.embedded import free_port
from services.tools.platformd.process_stack import ProcessStack
from tests.support.isolation import Isolation, delete_stream, platform_environment
from tests.support.private_servers import private_postgres


def test_a_service_failing_at_start_up_is_started_again_until_it_is_ready(
    tmp_path: Path, nats_url: str
) -> None:
    isolation = Isolation.new()
    with private_postgres() as database:
        database.stop()  # down while policy starts: its first start fails
        stack = ProcessStack(
            platform_environment(database.dsn("platform"), nats_url, isolation),
            tmp_path / "logs",
            gateway_address=f"127.0.0.1:{free_port()}",
        )
        reports: list[str] = []

        def report(message: str) -> None:
            reports.append(message)
            if len(reports) == 1:
                database.start()  # back before the next start

        stack.start("policy")
        try:
            stack.wait_ready(timeout=60, names=("policy",), start_attempts=3, report=report)
        finally:
            stack.stop_all()
            asyncio.run(delete_stream(nats_url, isolation.stream))

    assert len(reports) == 1, reports
    first_line, *tail = reports[0].splitlines()
    assert first_line.startswith("policy exited with code 1; last lines of")
    assert any("database unavailable" in line for line in tail), reports[0]
    assert tail[-1].strip() == "starting policy again in 1s (start 2 of 3)"


def test_a_refused_configuration_is_not_started_again(tmp_path: Path, nats_url: str) -> None:
    environment = {
        **platform_environment("postgresql://postgres@127.0.0.1:1/none", nats_url, Isolation.new()),
        "PLATFORM_RECONCILE_WORKERS": "0",
    }
    stack = ProcessStack(environment, tmp_path / "logs", gateway_address=f"127.0.0.1:{free_port()}")
    reports: list[str] = []
    stack.start("policy")
    try:
        with pytest.raises(RuntimeError, match="policy exited during start-up"):
            stack.wait_ready(timeout=60, names=("policy",), start_attempts=3, report=reports.append)
    finally:
        stack.stop_all()
    assert reports == []
    assert "PLATFORM_RECONCILE_WORKERS must be at least 1" in stack.log_tail("policy")
