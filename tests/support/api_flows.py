"""Shared steps of the end-to-end API tests: sample bodies, signed approvals, event streams."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import nats

from contracts.attestation import sign_approval
from contracts.envelope import Envelope
from tests.support.bus import stream_events
from tests.support.isolation import TEST_APPROVAL_SECRET

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SIGNATURE_HEADER = "X-Platform-Approval-Signature"


def request_body(**overrides: Any) -> dict[str, Any]:
    """A valid preview request with only the required fields; ``overrides`` change or add fields."""
    body: dict[str, Any] = {
        "app": "payments-api",
        "team": "payments",
        "class": "preview",
        "region": "us-east-1",
        "ttl_hours": 24,
        "owner": "alice@example.com",
        "repository": "https://github.com/example/payments-api.git",
    }
    body.update(overrides)
    return body


# The preview request of a pull request: the body most flows start from.
PREVIEW = request_body(revision="pr-42", labels={"pr": "42"})


def example(name: str, **overrides: Any) -> dict[str, Any]:
    """``examples/<name>.json`` with ``overrides`` applied."""
    body: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    body.update(overrides)
    return body


def signature(
    request_id: str, actor: str, class_name: str = "production", secret: str = TEST_APPROVAL_SECRET
) -> str:
    return sign_approval(secret, request_id=request_id, actor=actor, class_name=class_name)


def approve(
    client: httpx.Client, request_id: str, actor: str, class_name: str = "production", **kwargs: Any
) -> httpx.Response:
    """POST approve with the signature ``actor`` would compute (platformctl's way)."""
    headers = {SIGNATURE_HEADER: signature(request_id, actor, class_name, **kwargs)}
    return client.post(f"/v1/environment-requests/{request_id}/approve", headers=headers)


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/environment-requests", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def events_of(env: dict[str, str], request_id: str, event_type: str = ">") -> list[Envelope]:
    """Every event about ``request_id`` in the stack's stream (read straight from JetStream)."""

    async def read() -> list[Envelope]:
        nc = await nats.connect(env["PLATFORM_NATS_URL"])
        try:
            envelopes = await stream_events(
                nc.jetstream(),
                env["PLATFORM_EVENTS_STREAM"],
                env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
                f"request.{event_type}" if event_type != ">" else "request.>",
            )
        finally:
            await nc.close()
        return [e for e in envelopes if e.subject == request_id]

    return asyncio.run(read())
