"""Log lines never carry DSNs, URLs, hosts, ports or secrets, whatever a library puts in them."""

from __future__ import annotations

import json
import logging

import pytest

from libs.telemetry import JsonFormatter, bind_request, redact


@pytest.mark.parametrize(
    ("raw", "forbidden"),
    [
        ('connection to server at "db.internal", port 5432 failed', ["db.internal", "5432"]),
        ("postgresql://app:hunter2@10.0.0.7:5432/platform", ["hunter2", "10.0.0.7", "postgresql://"]),
        (
            "fatal: unable to access 'https://x-token:ghp_abc@github.com/org/repo.git/'",
            ["ghp_abc", "github.com"],
        ),
        ("nats: no servers available for connection to nats://10.1.2.3:4222", ["10.1.2.3", "4222"]),
        ("password=hunter2 user=app", ["hunter2"]),
        ("Authorization: Bearer eyJhbGciOi", ["eyJhbGciOi"]),
    ],
)
def test_redact_removes_infrastructure_details(raw: str, forbidden: list[str]) -> None:
    cleaned = redact(raw)
    for fragment in forbidden:
        assert fragment not in cleaned


def test_json_log_line_has_service_trace_and_request_ids() -> None:
    record = logging.LogRecord(
        "psycopg.pool", logging.WARNING, __file__, 1, 'server at "db.internal" down', None, None
    )
    token = bind_request("req-0123456789abcdef")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        bind_request(None)
        del token
    assert set(line) >= {"time", "level", "service", "message", "trace_id", "request_id"}
    assert line["request_id"] == "req-0123456789abcdef"
    assert "db.internal" not in line["message"]
