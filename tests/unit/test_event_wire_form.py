"""Events on the wire are CloudEvents 1.0 in structured mode; the earlier envelope form still reads.

Also: the generated AsyncAPI document is a valid AsyncAPI 3.0.0 document (checked against the
AsyncAPI Initiative's JSON Schema, vendored under tests/support/asyncapi_spec/) and describes
the RPC verbs with their replies.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.v1.http import from_http

from contracts.envelope import (
    CLOUDEVENTS_TYPE_PREFIX,
    ContractError,
    Envelope,
    cloudevents_headers,
    decode_envelope,
    earlier_form_headers,
    encode_earlier_form,
    encode_envelope,
)
from contracts.rpc import RPC_VERBS
from libs.settings import BusSettings, SettingsError, load_settings
from services.tools import contracts_generator as generate

ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "support" / "asyncapi_spec" / "3.0.0.json"
EXAMPLE_FILES = sorted(generate.EXAMPLES_DIR.glob("v*/*.json"))


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _golden(path: Path) -> Envelope:
    return decode_envelope(path.read_bytes())


def _ids(paths: list[Path]) -> list[str]:
    return [f"{path.parent.name}/{path.stem}" for path in paths]


# --- the wire form -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=_ids(EXAMPLE_FILES))
def test_every_event_reads_with_the_cloudevents_sdk(path: Path) -> None:
    """Each golden event, as published now, is what a CloudEvents SDK expects of structured mode."""
    envelope = _golden(path)
    headers, body = cloudevents_headers(envelope), encode_envelope(envelope)

    event = from_http_event(HTTPMessage(headers=headers, body=body))

    assert event.get_specversion() == "1.0"
    assert event.get_id() == envelope.id
    assert event.get_type() == f"io.platform-control-plane.{envelope.type}"
    assert event.get_source() == envelope.source
    assert event.get_subject() == envelope.subject
    assert event.get_time() == envelope.time
    assert event.get_datacontenttype() == "application/json"
    assert event.get_extension("dataversion") == envelope.data_version
    assert event.get_data() == json.loads(bytes(envelope.data))
    assert event.get_dataschema() == (
        f"https://platform.example.com/schemas/data/{envelope.type}.v{envelope.data_version}.json"
    )
    # The classic API of the same SDK (cloudevents.http before 2.0) agrees.
    classic = from_http(headers, body)
    assert (classic["type"], classic["id"], classic.data) == (event.get_type(), envelope.id, event.get_data())


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=_ids(EXAMPLE_FILES))
def test_every_event_matches_its_asyncapi_payload_and_its_dataschema(path: Path) -> None:
    envelope = _golden(path)
    body = json.loads(encode_envelope(envelope))
    document = _load(generate.ASYNCAPI_PATH)
    message = generate.message_id(envelope.type, envelope.data_version)
    payload_schema = {"$ref": f"#/components/schemas/{message}", "components": document["components"]}

    payload_errors = [e.message for e in jsonschema.Draft202012Validator(payload_schema).iter_errors(body)]

    assert not payload_errors, payload_errors
    # The dataschema names the committed file whose $id it is, and the data matches that file.
    data_schema_path = generate.data_schema_path(envelope.type, envelope.data_version)
    data_schema = _load(data_schema_path)
    assert data_schema["$id"] == body["dataschema"]
    assert not list(jsonschema.Draft202012Validator(data_schema).iter_errors(body["data"]))


def test_the_body_carries_every_attribute_and_the_headers_none() -> None:
    envelope = _golden(generate.example_path("request.submitted", 1))

    body = json.loads(encode_envelope(envelope))
    headers = cloudevents_headers(envelope)

    assert set(body) == {
        "specversion",
        "id",
        "type",
        "source",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "dataversion",
        "data",
    }
    assert body["type"] == "io.platform-control-plane.request.submitted"
    assert body["time"].endswith("Z")
    assert headers == {"content-type": "application/cloudevents+json", "Nats-Msg-Id": envelope.id}


def test_dataschema_follows_the_configured_base() -> None:
    envelope = _golden(generate.example_path("request.rendered", 1))

    body = json.loads(encode_envelope(envelope, "https://schemas.example.org/platform/"))

    assert body["dataschema"] == "https://schemas.example.org/platform/data/request.rendered.v1.json"
    assert decode_envelope(encode_envelope(envelope, "https://schemas.example.org/platform")) == envelope


@pytest.mark.parametrize(
    "value", ["platform-schemas", "ftp://schemas.example.org", "https://", "https://x.example/s?v=1"]
)
def test_a_schema_base_that_is_no_absolute_http_url_stops_start_up(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(BusSettings, {"PLATFORM_EVENTS_SCHEMA_BASE_URL": value})

    assert "PLATFORM_EVENTS_SCHEMA_BASE_URL" in str(raised.value)


def test_an_unknown_wire_form_stops_start_up_naming_the_choices() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(BusSettings, {"PLATFORM_EVENTS_WIRE_FORM": "binary"})

    assert "PLATFORM_EVENTS_WIRE_FORM must be one of cloudevents, envelope (got 'binary')" in str(
        raised.value
    )


def test_the_earlier_form_round_trips_through_the_reader_of_both() -> None:
    envelope = _golden(generate.example_path("request.rendered", 1))

    assert decode_envelope(encode_earlier_form(envelope)) == envelope
    assert earlier_form_headers(envelope)["ce-type"] == "request.rendered"


def test_the_schema_base_defaults_to_where_the_schemas_say_they_live() -> None:
    settings = load_settings(BusSettings, {})

    assert settings.events_schema_base_url == generate.SCHEMA_BASE_URL


# --- reading both forms ------------------------------------------------------------------------


def _event(**overrides: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": "io.platform-control-plane.request.extended",
        "source": "intake",
        "time": "2025-06-03T14:05:12Z",
        "subject": "req-7f3a9c2e5b1d4086",
        "datacontenttype": "application/json",
        "dataschema": "https://platform.example.com/schemas/data/request.extended.v1.json",
        "dataversion": 1,
        "data": {
            "request_id": "req-7f3a9c2e5b1d4086",
            "previous_ttl_hours": 24,
            "ttl_hours": 48,
            "expires_at": "2025-06-05T14:05:12Z",
            "extended_by": "alice@example.com",
        },
    }
    event.update(overrides)
    return {key: value for key, value in event.items() if value is not ...}


def test_the_legacy_envelope_and_the_cloudevent_decode_to_the_same_envelope() -> None:
    event = _event()
    legacy = {
        "id": event["id"],
        "type": "request.extended",
        "source": "intake",
        "time": event["time"],
        "subject": event["subject"],
        "data_version": 1,
        "data": event["data"],
    }

    from_cloudevent = decode_envelope(json.dumps(event).encode())
    from_legacy = decode_envelope(json.dumps(legacy).encode())

    assert from_cloudevent == from_legacy
    assert from_cloudevent.type == "request.extended"
    assert from_cloudevent.time == datetime(2025, 6, 3, 14, 5, 12, tzinfo=UTC)
    assert from_cloudevent.decode_data() == from_legacy.decode_data()


def test_a_cloudevent_without_dataversion_or_datacontenttype_is_version_1_json() -> None:
    envelope = decode_envelope(json.dumps(_event(dataversion=..., datacontenttype=...)).encode())

    assert envelope.data_version == 1
    assert envelope.decode_data()


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"type": "com.example.request.extended"}, "not under io.platform-control-plane."),
        ({"specversion": "0.3"}, "specversion"),
        ({"datacontenttype": "application/xml"}, "datacontenttype"),
        ({"id": "not-a-uuid"}, "id is not a UUID"),
        ({"subject": ...}, "subject"),
    ],
)
def test_a_cloudevent_outside_the_contract_is_a_contract_error(
    overrides: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ContractError, match=problem):
        decode_envelope(json.dumps(_event(**overrides)).encode())


def test_a_newer_dataversion_reads_as_that_version() -> None:
    """So the consumer parks it (a newer version than it reads) rather than failing it."""
    envelope = decode_envelope(json.dumps(_event(dataversion=2)).encode())

    assert envelope.data_version == 2
    assert envelope.type == "request.extended"


def test_the_type_prefix_is_reverse_dns() -> None:
    assert CLOUDEVENTS_TYPE_PREFIX == "io.platform-control-plane."
    assert msgspec.json.decode(encode_envelope(_golden(generate.example_path("class.upserted", 1))))[
        "type"
    ] == ("io.platform-control-plane.class.upserted")


# --- the AsyncAPI document ---------------------------------------------------------------------


def _asyncapi_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(_load(ASYNCAPI_SCHEMA))
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:200]}"
        for error in validator.iter_errors(document)
    ]


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    document = _load(generate.ASYNCAPI_PATH)

    assert not _asyncapi_errors(document)


def test_the_asyncapi_schema_refuses_a_broken_document() -> None:
    """The vendored schema really checks: AsyncAPI 2's `publish` is no AsyncAPI 3 action."""
    document = copy.deepcopy(_load(generate.ASYNCAPI_PATH))
    document["operations"]["send.request.submitted"]["action"] = "publish"

    assert _asyncapi_errors(document)


def test_every_rpc_verb_is_an_operation_with_its_reply() -> None:
    document = _load(generate.ASYNCAPI_PATH)

    for key, verb in RPC_VERBS.items():
        operation = document["operations"][f"rpc.{key}"]
        channel = document["channels"][f"rpc.{key}"]
        assert operation["action"] == "receive"
        assert operation["channel"] == {"$ref": f"#/channels/rpc.{key}"}
        assert channel["address"].endswith(f".{verb.name}")
        assert channel["address"].startswith("platform.rpc.")
        reply_message = operation["reply"]["messages"][0]["$ref"].rsplit("/", 1)[1]
        assert reply_message in document["channels"]["rpc.reply"]["messages"]
        reply_payload = document["components"]["messages"][reply_message]["payload"]
        assert verb.reply_type.__name__ in reply_payload["$ref"]
    assert document["channels"]["rpc.reply"]["address"] is None
    assert (
        document["channels"]["rpc.intake.create_request"]["address"] == "platform.rpc.intake.create_request"
    )
    assert document["channels"]["rpc.kit.ping"]["address"] == "platform.rpc.{service}.ping"


def test_an_rpc_reply_matches_its_asyncapi_payload() -> None:
    """A reply as a service sends it validates against the document's typed reply."""
    from contracts.replies import ClassList
    from contracts.rpc import RpcReply

    document = _load(generate.ASYNCAPI_PATH)
    payload = document["components"]["messages"]["rpc.policy.list_classes.reply"]["payload"]
    schema = {**payload, "components": document["components"]}
    ok = msgspec.to_builtins(RpcReply(ok=True, data=ClassList(items=[])))
    failed = {"ok": False, "error": {"code": "not_found", "message": "no such class"}}

    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(ok))
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(failed))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors({"ok": True, "data": {"items": 3}}))
