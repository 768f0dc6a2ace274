"""A downstream consumer reads the platform's events off JetStream with the official CloudEvents SDK,
and the services still read events in the envelope form an older release wrote."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import jsonschema
import msgspec
import nats
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.v1.http import from_http
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.events import RequestSubmitted
from contracts.models import Actor, RequestSpec
from contracts.rpc import CreateRequest
from libs.rpc import RpcClient
from services.tools import contracts_generator as generate
from tests.support.api_flows import PREVIEW
from tests.support.bus import stream_events, wait_until
from tests.support.services import catalog_replicated, running_services

ALICE = Actor(subject="alice", actor="alice@example.com", role="requester", teams=["payments"])


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> Any:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)
    await nc.close()


async def _raw_messages(
    js: JetStreamContext, stream: str, subject: str
) -> list[tuple[dict[str, str], bytes]]:
    """Headers and body of every message on ``subject``, as any NATS client receives them."""
    subscription = await js.pull_subscribe(
        subject, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30)
    )
    try:
        pending = (await subscription.consumer_info()).num_pending
        messages = await subscription.fetch(pending, timeout=5) if pending else []
        return [(dict(message.headers or {}), message.data) for message in messages]
    finally:
        await subscription.unsubscribe()


async def test_a_downstream_consumer_reads_request_submitted_with_the_cloudevents_sdk(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    stream, prefix = platform_env["PLATFORM_EVENTS_STREAM"], platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"]
    subject = f"{prefix}.request.submitted"  # the subject downstream subscriptions filter on
    async with running_services(["policy", "intake"], platform_env) as kits:
        await catalog_replicated(rpc)
        created = await rpc.call("intake", "create_request", CreateRequest(body=PREVIEW, actor=ALICE))
        request_id = created["request"]["id"]
        js = kits["intake"].js

        async def submitted() -> list[tuple[dict[str, str], bytes]]:
            return await _raw_messages(js, stream, subject)

        messages = await wait_until(submitted, what="request.submitted on the stream")

    assert len(messages) == 1
    headers, body = messages[0]
    event = from_http_event(HTTPMessage(headers=headers, body=body))

    assert event.get_type() == "io.platform-control-plane.request.submitted"
    assert event.get_id() == headers["Nats-Msg-Id"]
    assert event.get_source() == "intake"
    assert event.get_subject() == request_id
    assert event.get_extension("dataversion") == 1
    data = event.get_data()
    assert isinstance(data, dict)
    assert data["request_id"] == request_id
    assert data["spec"]["app"] == PREVIEW["app"]
    assert data["created_by"] == "alice@example.com"
    # Its dataschema is the published schema of that data, and the data matches it.
    data_schema = json.loads(generate.data_schema_path("request.submitted", 1).read_text(encoding="utf-8"))
    assert event.get_dataschema() == data_schema["$id"]
    assert not list(jsonschema.Draft202012Validator(data_schema).iter_errors(data))
    # The SDK's classic API (cloudevents.http before 2.0) reads it the same way.
    classic = from_http(headers, body)
    assert (classic["type"], classic["id"], classic["subject"]) == (
        event.get_type(),
        event.get_id(),
        request_id,
    )
    assert classic.data == data


@pytest.mark.parametrize("wire_form", ["cloudevents", "envelope"])
async def test_an_event_in_the_pre_cloudevents_form_is_still_handled(
    platform_env: dict[str, str], rpc: RpcClient, wire_form: str
) -> None:
    """A request.submitted an older release left in the stream (envelope body, ce-* headers):
    policy evaluates it, and answers in the form it is set to write: a CloudEvent, or during a
    rolling upgrade from such a release (PLATFORM_EVENTS_WIRE_FORM=envelope) that release's form."""
    stream, prefix = platform_env["PLATFORM_EVENTS_STREAM"], platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"]
    request_id = f"req-{uuid.uuid4().hex[:16]}"
    spec = RequestSpec(
        app="legacy-api",
        team="payments",
        class_name="preview",
        region="us-east-1",
        ttl_hours=24,
        owner="alice@example.com",
        repository="https://github.com/acme/legacy-api.git",
    )
    data = RequestSubmitted(
        request_id=request_id,
        spec=spec,
        created_by="alice@example.com",
        created_at=datetime(2025, 6, 3, 14, 5, 12, tzinfo=UTC),
    )
    event_id = str(uuid.uuid4())
    legacy_body = json.dumps(
        {
            "id": event_id,
            "type": "request.submitted",
            "source": "intake",
            "time": "2025-06-03T14:05:12Z",
            "subject": request_id,
            "data_version": 1,
            "data": msgspec.to_builtins(data),
        }
    ).encode()
    legacy_headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": "request.submitted",
        "ce-source": "intake",
        "ce-time": "2025-06-03T14:05:12Z",
        "ce-subject": request_id,
        "ce-dataschema": "platform:request.submitted:v1",
        "ce-datacontenttype": "application/json",
        "Nats-Msg-Id": event_id,
    }
    async with running_services(["policy"], {**platform_env, "PLATFORM_EVENTS_WIRE_FORM": wire_form}) as kits:
        js = kits["policy"].js
        await js.publish(f"{prefix}.request.submitted", legacy_body, headers=legacy_headers)

        async def evaluated() -> Any:
            events = await stream_events(js, stream, prefix, "request.policy_evaluated")
            return [event for event in events if event.subject == request_id]

        (answer,) = await wait_until(evaluated, what="policy's answer to the legacy event")
        (headers, body), *_ = [
            (headers, body)
            for headers, body in await _raw_messages(js, stream, f"{prefix}.request.policy_evaluated")
            if headers["Nats-Msg-Id"] == answer.id
        ]

    assert answer.decode_data().request_id == request_id
    if wire_form == "cloudevents":
        assert headers["content-type"] == "application/cloudevents+json"
        assert json.loads(body)["type"] == "io.platform-control-plane.request.policy_evaluated"
    else:  # what the earlier release reads: its envelope, routed on ce-type
        assert headers["ce-type"] == "request.policy_evaluated"
        assert headers["ce-id"] == answer.id
        earlier = json.loads(body)
        assert set(earlier) == set(json.loads(legacy_body))
        assert (earlier["type"], earlier["data_version"]) == ("request.policy_evaluated", 1)
