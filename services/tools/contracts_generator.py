"""Generate the committed contract artefacts from the models in ``contracts/`` and the
services' bus declarations (who publishes and who consumes each event, read through
:mod:`services.tools.topology`).

Writes, deterministically (sorted keys, 2-space indent, trailing newline):

- ``contracts/schemas/data/<type>.v<n>.json``: JSON Schema (2020-12) of the ``data`` of every
  registered event version (:data:`contracts.events.EVENT_MODELS`), the target of each
  event's CloudEvents ``dataschema``;
- ``contracts/schemas/events/<type>.v<n>.json``: JSON Schema of the envelope form events had
  before CloudEvents structured mode (still read, and the form of the golden examples);
- ``contracts/schemas/rpc/<service>.<verb>.json`` and ``reply.json``: JSON Schema of every
  RPC request (:data:`contracts.rpc.RPC_VERBS`) and of the reply;
- ``contracts/asyncapi.json``: the AsyncAPI 3.0.0 document of the bus: every event as the
  CloudEvents structured-mode message it is on the wire, and every RPC verb as an operation
  with its ``reply``;
- the event catalog table between the ``GENERATED`` markers of ``docs/contracts.md``.

Golden examples (``contracts/examples/v<n>/<type>.json``) are the compatibility corpus
and are never overwritten; a missing one is created from a synthetic builder so that a
new event starts with a corpus entry (replace it with realistic values by hand).

An existing schema is only replaced by an additive change (see :func:`breaking_changes`);
a breaking change must be a new event version. ``--allow-breaking`` overrides that for
contracts that were never released; the released ones (``contracts/baseline/``) are
checked regardless, except for the breaks ``contracts/baseline/accepted-breaks.json``
lists with their reason.

Usage::

    python -m services.tools.contracts_generator            # write (what `make contracts` runs)
    python -m services.tools.contracts_generator --check    # write nothing; exit 1 listing drift
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import inspect
import json
import sys
import tomllib
import typing
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from contracts.catalog import SERVICES
from contracts.envelope import (
    CLOUDEVENTS_TYPE_PREFIX,
    DATA_CONTENT_TYPE,
    DEFAULT_SCHEMA_BASE_URL,
    SPECVERSION,
    STRUCTURED_CONTENT_TYPE,
    ContractError,
    Envelope,
    cloudevents_headers,
    cloudevents_type,
    dataschema_url,
    decode_envelope,
)
from contracts.events import EVENT_MODELS, EVENT_TYPES
from contracts.inputs import json_schema_hook
from contracts.rpc import KIT, RPC_VERBS, RpcReply
from libs.settings import PlatformSettings
from services.tools.topology import consumers_of, producers_of

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CONTRACTS_DIR: Final = REPO_ROOT / "contracts"
SCHEMAS_DIR: Final = CONTRACTS_DIR / "schemas"
EVENT_SCHEMAS_DIR: Final = SCHEMAS_DIR / "events"
DATA_SCHEMAS_DIR: Final = SCHEMAS_DIR / "data"
RPC_SCHEMAS_DIR: Final = SCHEMAS_DIR / "rpc"
EXAMPLES_DIR: Final = CONTRACTS_DIR / "examples"
# The schemas as last released (events/ and rpc/ as under schemas/): running consumers and
# gateways were built from these, so the models must stay compatible with them, whatever
# the committed schemas became since. A break made on purpose is listed, with its reason,
# in ACCEPTED_BREAKS_PATH.
BASELINE_DIR: Final = CONTRACTS_DIR / "baseline"
ACCEPTED_BREAKS_PATH: Final = BASELINE_DIR / "accepted-breaks.json"
ASYNCAPI_PATH: Final = CONTRACTS_DIR / "asyncapi.json"
DOCS_PATH: Final = REPO_ROOT / "docs" / "contracts.md"

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URL: Final = DEFAULT_SCHEMA_BASE_URL
PACKAGE_NAME: Final = "platform-control-plane"

# Defaults of PLATFORM_EVENTS_SUBJECT_PREFIX / PLATFORM_RPC_SUBJECT_PREFIX / PLATFORM_EVENTS_STREAM.
DEFAULT_EVENTS_PREFIX: Final = PlatformSettings.subject_prefix
DEFAULT_RPC_PREFIX: Final = PlatformSettings.rpc_prefix
DEFAULT_STREAM: Final = PlatformSettings.stream_name

DOCS_BEGIN: Final = "<!-- BEGIN GENERATED: event catalog (make contracts) -->"
DOCS_END: Final = "<!-- END GENERATED: event catalog -->"

_DEFS_REF: Final = "#/$defs/{name}"
_COMPONENTS_REF: Final = "#/components/schemas/{name}"

# Envelope fields producers always write, although the decoder has defaults for them.
_ALWAYS_PRESENT: Final = frozenset({"data_version", "data"})

_ENVELOPE_FIELD_DOCS: Final[dict[str, str]] = {
    "id": "Event id: a UUID, unique forever; also the Nats-Msg-Id header (dedup key).",
    "type": "Event type; the subject is <events prefix>.<type>.",
    "source": "The service that published the event.",
    "time": "When the event happened (RFC 3339, UTC).",
    "subject": "The aggregate the event is about: the request id, or the class name for class.upserted.",
    "data_version": "Version of the data model; a breaking change is a new version.",
    "data": "The event payload.",
}

_TRACE_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "traceparent": {
        "type": "string",
        "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "W3C trace context of the span that caused the event (set when tracing is on).",
    },
    "tracestate": {
        "type": "string",
        "description": "W3C vendor trace state, propagated with traceparent.",
    },
}

_HEADER_DOCS: Final[dict[str, dict[str, Any]]] = {
    "Nats-Msg-Id": {
        "format": "uuid",
        "description": "Equal to the event id: JetStream drops a republished duplicate in its window.",
    },
    "content-type": {
        "description": (
            "CloudEvents structured content mode: the body is one event in the CloudEvents JSON "
            "format. No ce-* headers: the attributes are in the body."
        )
    },
}

# Headers whose value is the same for every event: fixed as const in the shared schema.
_CONSTANT_HEADERS: Final = frozenset({"content-type"})

_CLOUDEVENT_DOCS: Final[dict[str, str]] = {
    "specversion": "CloudEvents specification version.",
    "id": "Event id: a UUID, unique forever; also the Nats-Msg-Id header (dedup key).",
    "type": (
        f"CloudEvents type: {CLOUDEVENTS_TYPE_PREFIX}<platform type>; the subject is "
        "<events prefix>.<platform type>."
    ),
    "source": "The service that published the event.",
    "time": "When the event happened (RFC 3339, UTC).",
    "subject": "The aggregate the event is about: the request id, or the class name for class.upserted.",
    "datacontenttype": "Content type of data.",
    "dataschema": (
        "Absolute URI of the JSON Schema of data (contracts/schemas/data/<type>.v<n>.json); the "
        f"base is PLATFORM_EVENTS_SCHEMA_BASE_URL, by default {DEFAULT_SCHEMA_BASE_URL}."
    ),
    "dataversion": "Extension attribute: version of the data model; a breaking change is a new version.",
    "data": "The event payload.",
}

_SAMPLE_ID: Final = "00000000-0000-4000-8000-000000000000"
_SAMPLE_TIME: Final = datetime(2025, 1, 1, tzinfo=UTC)


class ContractGenerationError(Exception):
    """A model uses a construct the generator cannot express yet; a developer must extend it."""


def render_json(document: Any) -> str:
    """The one serialisation of every generated file, so regeneration is byte-stable."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def package_version() -> str:
    """The project version: pyproject.toml when running from a checkout, else the installed metadata.

    pyproject first, because editable-install metadata goes stale until a reinstall and the
    document would then drift in CI (which installs fresh) but not locally.
    """
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file():
        with pyproject.open("rb") as stream:
            version = tomllib.load(stream).get("project", {}).get("version")
        if isinstance(version, str):
            return version
    return importlib.metadata.version(PACKAGE_NAME)


def docstring(model: type[Any]) -> str | None:
    doc = model.__doc__
    return inspect.cleandoc(doc) if doc else None


def event_description(event_type: str, model: type[Any]) -> str:
    return docstring(model) or f"The {event_type} event."


def event_summary(event_type: str) -> str:
    """What the fact means in one sentence: the first paragraph of its model's docstring."""
    first_paragraph = event_description(event_type, EVENT_TYPES[event_type]).split("\n\n", 1)[0]
    return " ".join(first_paragraph.split())


def message_id(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def event_schema_path(event_type: str, version: int) -> Path:
    return EVENT_SCHEMAS_DIR / f"{message_id(event_type, version)}.json"


def data_schema_path(event_type: str, version: int) -> Path:
    return DATA_SCHEMAS_DIR / f"{message_id(event_type, version)}.json"


def rpc_schema_path(name: str) -> Path:
    return RPC_SCHEMAS_DIR / f"{name}.json"


def example_path(event_type: str, version: int) -> Path:
    return EXAMPLES_DIR / f"v{version}" / f"{event_type}.json"


def event_versions() -> list[tuple[str, int, type[Any]]]:
    """Every registered (type, version, model), in a stable order."""
    return [
        (event_type, version, EVENT_MODELS[(event_type, version)])
        for event_type, version in sorted(EVENT_MODELS)
    ]


# --- components ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Components:
    """msgspec's schemas for a set of models, with shared, stable component names."""

    refs: dict[Any, dict[str, Any]]
    schemas: dict[str, Any]
    prefix: str

    def closure(self, *roots: Any) -> dict[str, Any]:
        """The components ``roots`` reference, directly or transitively."""
        found: dict[str, Any] = {}
        pending = list(roots)
        while pending:
            for name in _ref_names(pending.pop(), self.prefix):
                if name not in found:
                    found[name] = self.schemas[name]
                    pending.append(self.schemas[name])
        return dict(sorted(found.items()))


def normalised_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` cleaned as :func:`inspect.cleandoc` cleans a docstring.

    msgspec copies docstrings into descriptions, and how it trims them changed between
    releases (0.23 dedents continuation lines, earlier releases kept them indented). Cleaning
    every description here, idempotently, makes the committed files a function of the models
    alone, whichever msgspec is installed.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else normalised_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalised_descriptions(value) for value in node]
    return node


def _ref_names(node: Any, prefix: str) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(prefix):
            yield ref.removeprefix(prefix)
        for value in node.values():
            yield from _ref_names(value, prefix)
    elif isinstance(node, list):
        for value in node:
            yield from _ref_names(value, prefix)


def components(ref_template: str) -> Components:
    """Schemas of every event and RPC model from one msgspec call.

    One call for all models, because msgspec disambiguates clashing struct names only
    among the types it sees together; per-file calls could name the same struct
    differently in different files.
    """
    models: list[Any] = []
    for model in (
        [m for _, _, m in event_versions()]
        + [RPC_VERBS[k].request_type for k in sorted(RPC_VERBS)]
        + [RpcReply]
        + [typed_reply(RPC_VERBS[k]) for k in sorted(RPC_VERBS)]
    ):
        if model not in models:
            models.append(model)
    refs, schemas = msgspec.json.schema_components(
        models, ref_template=ref_template, schema_hook=json_schema_hook
    )
    return Components(
        refs=dict(zip(models, refs, strict=True)),
        schemas=normalised_descriptions(dict(schemas)),
        prefix=ref_template.removesuffix("{name}"),
    )


def typed_reply(verb: Any) -> Any:
    """The reply of ``verb`` as its caller decodes it: ``RpcReply[<its reply type>]``."""
    return RpcReply[verb.reply_type]


# --- event envelope schemas -----------------------------------------------------------------


def envelope_schema(event_type: str, version: int, data_ref: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope as an object schema, ``type`` and ``data_version`` fixed, ``data`` = ``data_ref``.

    Built field by field from :class:`Envelope` (msgspec cannot schema its ``Raw`` body), so a
    new optional envelope field shows up here without editing the generator.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    annotations = typing.get_type_hints(Envelope)
    envelope_info = mi.type_info(Envelope)
    if not isinstance(envelope_info, mi.StructType):  # pragma: no cover - Envelope is a Struct
        raise TypeError("Envelope must be a msgspec Struct")
    for field in envelope_info.fields:
        name = field.encode_name
        if name == "type":
            prop: dict[str, Any] = {"type": "string", "const": event_type}
        elif name == "data_version":
            prop = {"type": "integer", "const": version}
        elif name == "data":
            prop = dict(data_ref)
        else:
            prop = normalised_descriptions(msgspec.json.schema(annotations[field.name]))
            if "$defs" in prop:
                raise ContractGenerationError(
                    f"envelope field {name!r} needs components; extend envelope_schema"
                )
        if name == "id":
            prop["format"] = "uuid"
        elif isinstance(field.type, mi.DateTimeType):
            # msgspec omits the format because the decoder accepts naive times; producers
            # always write aware UTC times (new_event), which is what RFC 3339 requires.
            prop["format"] = "date-time"
        if name in _ENVELOPE_FIELD_DOCS:
            prop["description"] = _ENVELOPE_FIELD_DOCS[name]
        properties[name] = prop
        if field.required or name in _ALWAYS_PRESENT:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def cloudevent_schema(event_type: str, version: int, data_ref: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudEvents structured-mode body of ``event_type`` v``version`` (what is on the wire).

    Mirrors :class:`contracts.envelope.CloudEvent`; a test encodes an event and validates it
    against this schema, so the two cannot drift apart.
    """
    properties: dict[str, Any] = {
        "specversion": {"type": "string", "const": SPECVERSION},
        "id": {"type": "string", "format": "uuid"},
        "type": {"type": "string", "const": cloudevents_type(event_type)},
        "source": {"type": "string", "minLength": 1},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string"},
        "datacontenttype": {"type": "string", "const": DATA_CONTENT_TYPE},
        "dataschema": {
            "type": "string",
            "format": "uri",
            "examples": [dataschema_url(event_type, version)],
        },
        "dataversion": {"type": "integer", "const": version},
        "data": dict(data_ref),
    }
    for name, prop in properties.items():
        prop["description"] = _CLOUDEVENT_DOCS[name]
    return {"type": "object", "properties": properties, "required": list(properties)}


def event_schema_document(
    event_type: str, version: int, model: type[Any], comps: Components
) -> dict[str, Any]:
    data_ref = comps.refs[model]
    document: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE_URL}/events/{message_id(event_type, version)}.json",
        "title": f"{event_type} v{version}",
        "description": (
            f"{event_description(event_type, model)}\n\nThe envelope form events had before "
            "CloudEvents structured mode; consumers still read it (events already in the stream, "
            "dead letters, outbox rows of an older release). Events are published as CloudEvents "
            f"now: their data is described by {dataschema_url(event_type, version)}."
        ),
        **envelope_schema(event_type, version, data_ref),
    }
    document["$defs"] = comps.closure(data_ref)
    return document


def data_schema_document(
    event_type: str, version: int, model: type[Any], comps: Components
) -> dict[str, Any]:
    """The schema of an event's ``data``; its ``$id`` is the event's default ``dataschema``."""
    ref = comps.refs[model]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": dataschema_url(event_type, version),
        "title": f"{event_type} v{version} data",
        "description": event_description(event_type, model),
        **ref,
        "$defs": comps.closure(ref),
    }


def rpc_schema_document(name: str, model: type[Any], comps: Components) -> dict[str, Any]:
    ref = comps.refs[model]
    description = f"Request of the RPC endpoint {name} (subject {DEFAULT_RPC_PREFIX}.{name})."
    if doc := docstring(model):
        description = f"{description}\n\n{doc}"
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE_URL}/rpc/{name}.json",
        "title": name,
        "description": description,
        **ref,
        "$defs": comps.closure(ref),
    }


def rpc_reply_document(comps: Components) -> dict[str, Any]:
    ref = comps.refs[RpcReply]
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{SCHEMA_BASE_URL}/rpc/reply.json",
        "title": "RPC reply",
        "description": docstring(RpcReply)
        or (
            'Reply of every RPC endpoint: {"ok": true, "data": ...} or '
            '{"ok": false, "error": {"code", "message", "details"}}.'
        ),
        **ref,
        "$defs": comps.closure(ref),
    }


# --- AsyncAPI ---------------------------------------------------------------------------------


def _sample_headers() -> dict[str, str]:
    """The headers the publisher really sets (contracts.envelope.cloudevents_headers), for a sample."""
    sample = Envelope(id=_SAMPLE_ID, type="sample", source="sample", time=_SAMPLE_TIME, subject="sample")
    return cloudevents_headers(sample)


def headers_schema() -> dict[str, Any]:
    """Shared schema of the NATS headers every event carries."""
    sample = _sample_headers()
    properties: dict[str, Any] = {}
    for name, value in sample.items():
        prop: dict[str, Any] = {"type": "string", **_HEADER_DOCS.get(name, {})}
        if name in _CONSTANT_HEADERS:
            prop["const"] = value
        properties[name] = prop
    properties.update(_TRACE_HEADERS)
    return {
        "type": "object",
        "description": (
            "NATS message headers: content-type (CloudEvents structured mode), Nats-Msg-Id for "
            "JetStream dedup and W3C trace context."
        ),
        "properties": properties,
        # Trace headers are optional: they are only set when a span is active.
        "required": sorted(sample),
    }


def _producer_text(event_type: str) -> str:
    producers = producers_of(event_type)
    if not producers:
        return "No service publishes it yet."
    if len(producers) == 1:
        return f"Produced by the {producers[0]} service."
    return f"Produced by the {', '.join(producers)} services: the one whose stage it reports."


def _first_paragraph(text: str) -> str:
    return " ".join(text.split("\n\n", 1)[0].split())


def event_parts(comps: Components) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Schemas, messages, channels and operations of the events."""
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    versions_by_type: dict[str, list[int]] = {}
    for event_type, version, model in event_versions():
        versions_by_type.setdefault(event_type, []).append(version)
        msg = message_id(event_type, version)
        data_ref = comps.refs[model]
        if msg in comps.schemas:
            raise ContractError(f"a model named {msg} clashes with the event schema of {msg}")
        schemas.update(comps.closure(data_ref))
        schemas[msg] = {
            "title": f"{event_type} v{version} (CloudEvents)",
            "description": event_description(event_type, model),
            **cloudevent_schema(event_type, version, data_ref),
        }
        messages[msg] = {
            "name": msg,
            "title": f"{event_type} v{version}",
            "summary": event_summary(event_type),
            "description": f"{event_description(event_type, model)}\n\n{_producer_text(event_type)}",
            "contentType": STRUCTURED_CONTENT_TYPE,
            "correlationId": {
                "description": "The request id (the class name for class.upserted).",
                "location": "$message.payload#/subject",
            },
            "headers": {"$ref": "#/components/schemas/EventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{msg}"},
        }

    for event_type in sorted(versions_by_type):
        channel_messages = {
            message_id(event_type, v): {"$ref": f"#/components/messages/{message_id(event_type, v)}"}
            for v in versions_by_type[event_type]
        }
        channels[event_type] = {
            "address": f"{DEFAULT_EVENTS_PREFIX}.{event_type}",
            "title": event_type,
            "summary": event_summary(event_type),
            "description": (
                f"Events of type {event_type}, stored in the {DEFAULT_STREAM} stream. The prefix "
                f"{DEFAULT_EVENTS_PREFIX} is the default of PLATFORM_EVENTS_SUBJECT_PREFIX (and the stream "
                "name of PLATFORM_EVENTS_STREAM): tests and tenants use their own, so the address is "
                "<prefix>." + event_type + "."
            ),
            "servers": [{"$ref": "#/servers/nats"}],
            "messages": channel_messages,
        }
        message_refs = [{"$ref": f"#/channels/{event_type}/messages/{msg}"} for msg in channel_messages]
        operations[f"send.{event_type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{event_type}"},
            "messages": message_refs,
            "title": f"Publish {event_type}",
            "summary": event_summary(event_type),
            "description": (
                f"{_producer_text(event_type)} Written to the producer's transactional outbox "
                "and relayed to JetStream with Nats-Msg-Id = event id."
            ),
        }
        for consumer in consumers_of(event_type):
            operations[f"{consumer}.receive.{event_type}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{event_type}"},
                "messages": message_refs,
                "title": f"{consumer} consumes {event_type}",
                "description": (
                    f"Consumed by the {consumer} service through its durable pull consumer; acked "
                    "only after the service's own transaction committed."
                ),
            }
    return schemas, messages, channels, operations


RPC_REPLY_CHANNEL: Final = "rpc.reply"


def rpc_parts(comps: Components) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Schemas, messages, channels and operations of the RPC verbs (NATS request/reply).

    Each verb is a ``receive`` operation of the service that serves it, with a ``reply`` on
    the requester's inbox: the NATS reply subject of the request, which no header or payload
    names, hence a reply channel without an address.
    """
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    reply_messages: dict[str, Any] = {}
    for key in sorted(RPC_VERBS):
        verb = RPC_VERBS[key]
        request_ref, reply_ref = comps.refs[verb.request_type], comps.refs[typed_reply(verb)]
        schemas.update(comps.closure(request_ref, reply_ref))
        request_msg, reply_msg = f"rpc.{key}.request", f"rpc.{key}.reply"
        summary = _first_paragraph(docstring(verb.request_type) or f"The {key} request.")
        messages[request_msg] = {
            "name": request_msg,
            "title": f"{key} request",
            "summary": summary,
            "contentType": "application/json",
            "payload": dict(request_ref),
        }
        messages[reply_msg] = {
            "name": reply_msg,
            "title": f"{key} reply",
            "summary": (
                f'{{"ok": true, "data": <{verb.reply_type.__name__}>}} or {{"ok": false, "error": '
                '{"code", "message", "details"}}.'
            ),
            "contentType": "application/json",
            "payload": dict(reply_ref),
        }
        reply_messages[reply_msg] = {"$ref": f"#/components/messages/{reply_msg}"}
        channel = f"rpc.{key}"
        if verb.service == KIT:
            address = f"{DEFAULT_RPC_PREFIX}.{{service}}.{verb.name}"
            served_by = "every service (the kit serves it)"
            parameters: dict[str, Any] = {
                "parameters": {"service": {"enum": list(SERVICES), "description": "The service asked."}}
            }
        else:
            address = f"{DEFAULT_RPC_PREFIX}.{key}"
            served_by = f"the {verb.service} service"
            parameters = {}
        channels[channel] = {
            "address": address,
            "title": f"RPC {key}",
            "summary": summary,
            "description": (
                f"Requests to {key}, served by {served_by} as a NATS micro endpoint in a queue "
                f"group. The prefix {DEFAULT_RPC_PREFIX} is the default of PLATFORM_RPC_SUBJECT_PREFIX."
            ),
            "servers": [{"$ref": "#/servers/nats"}],
            "messages": {request_msg: {"$ref": f"#/components/messages/{request_msg}"}},
            **parameters,
        }
        operations[f"rpc.{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{request_msg}"}],
            "title": f"Serve {key}",
            "summary": summary,
            "description": f"Served by {served_by}; the answer goes to the request's reply subject.",
            "reply": {
                "channel": {"$ref": f"#/channels/{RPC_REPLY_CHANNEL}"},
                "messages": [{"$ref": f"#/channels/{RPC_REPLY_CHANNEL}/messages/{reply_msg}"}],
            },
        }
    channels[RPC_REPLY_CHANNEL] = {
        "address": None,
        "title": "RPC replies",
        "description": (
            "The requester's inbox: the reply subject NATS request/reply gives each request "
            "(_INBOX.… unless the requester's PLATFORM_NATS_INBOX_PREFIX says otherwise)."
        ),
        "servers": [{"$ref": "#/servers/nats"}],
        "messages": reply_messages,
    }
    return schemas, messages, channels, operations


def asyncapi_schema(node: Any) -> Any:
    """``node`` with OpenAPI's ``discriminator: {"propertyName": p}`` (pydantic writes it for
    the input models' tagged unions) in the AsyncAPI Schema Object's form, ``discriminator: p``."""
    if isinstance(node, dict):
        return {
            key: value["propertyName"]
            if key == "discriminator" and isinstance(value, dict) and "propertyName" in value
            else asyncapi_schema(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [asyncapi_schema(value) for value in node]
    return node


def asyncapi_document() -> dict[str, Any]:
    comps = components(_COMPONENTS_REF)
    if "EventHeaders" in comps.schemas:
        raise ContractError("a model named EventHeaders clashes with the AsyncAPI headers schema; rename it")
    event_schemas, event_messages, event_channels, event_operations = event_parts(comps)
    rpc_schemas, rpc_messages, rpc_channels, rpc_operations = rpc_parts(comps)
    schemas = {"EventHeaders": headers_schema(), **event_schemas, **rpc_schemas}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "platform-control-plane events",
            "version": package_version(),
            "description": (
                "Integration events and RPC endpoints of the platform control plane on NATS. Every "
                "event is a CloudEvents 1.0 event in structured content mode (header content-type: "
                f"{STRUCTURED_CONTENT_TYPE}; the body is the event in the CloudEvents JSON format with "
                f"type {CLOUDEVENTS_TYPE_PREFIX}<type> and the extension attribute dataversion) published "
                f"on <prefix>.<type> (default prefix {DEFAULT_EVENTS_PREFIX}, configurable with "
                "PLATFORM_EVENTS_SUBJECT_PREFIX) in JetStream. RPC verbs are NATS request/reply on "
                f"<rpc prefix>.<service>.<verb> (default prefix {DEFAULT_RPC_PREFIX}). Generated from "
                "contracts/ by `make contracts`; do not edit by hand."
            ),
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "Placeholder (nats://localhost:4222): deployments set PLATFORM_NATS_URL.",
            }
        },
        "channels": {**event_channels, **rpc_channels},
        "operations": {**event_operations, **rpc_operations},
        "components": {
            "schemas": asyncapi_schema(dict(sorted(schemas.items()))),
            "messages": asyncapi_schema({**event_messages, **rpc_messages}),
        },
    }


# --- docs -----------------------------------------------------------------------------------


def catalog_table() -> str:
    """The markdown event catalog (type, versions, producer, consumers, meaning)."""
    versions_by_type: dict[str, list[int]] = {}
    for event_type, version, _ in event_versions():
        versions_by_type.setdefault(event_type, []).append(version)
    lines = [
        "| type | versions | producer | consumers | meaning |",
        "|---|---|---|---|---|",
    ]
    # EVENT_TYPES order is the pipeline order, which reads better than alphabetical.
    ordered = list(EVENT_TYPES) + sorted(set(versions_by_type) - set(EVENT_TYPES))
    for event_type in ordered:
        versions = ", ".join(f"v{v}" for v in versions_by_type.get(event_type, []))
        producer = ", ".join(producers_of(event_type)) or "none (reserved)"
        consumers = ", ".join(consumers_of(event_type)) or "none"
        meaning = event_summary(event_type).replace("|", "\\|")
        lines.append(f"| `{event_type}` | {versions} | {producer} | {consumers} | {meaning} |")
    return "\n".join(lines) + "\n"


def docs_with_catalog(text: str) -> str:
    """``text`` with the part between the catalog markers replaced by :func:`catalog_table`."""
    begin = text.find(DOCS_BEGIN)
    end = text.find(DOCS_END)
    if begin < 0 or end < begin:
        raise ContractError(
            f"{DOCS_PATH.relative_to(REPO_ROOT)} lacks the markers {DOCS_BEGIN!r} … {DOCS_END!r}"
        )
    return text[: begin + len(DOCS_BEGIN)] + "\n" + catalog_table() + text[end:]


# --- examples -------------------------------------------------------------------------------


def synthetic_value(info: mi.Type, depth: int = 0) -> Any:
    """A JSON value that decodes as ``info``: placeholders, every optional field filled in."""
    if isinstance(info, mi.UnionType):
        members = [m for m in info.types if not isinstance(m, mi.NoneType)]
        # Past a few levels take None where allowed, so recursive models terminate.
        if not members or (depth > 4 and len(members) < len(info.types)):
            return None
        return synthetic_value(members[0], depth)
    if isinstance(info, mi.StructType):
        value = {
            field.encode_name: synthetic_value(field.type, depth + 1)
            for field in info.fields
            if field.required or depth <= 4
        }
        if info.tag_field is not None:
            value[info.tag_field] = info.tag
        return value
    if isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return [synthetic_value(info.item_type, depth + 1)]
    if isinstance(info, mi.TupleType):
        return [synthetic_value(item, depth + 1) for item in info.item_types]
    if isinstance(info, mi.DictType):
        return {"example": synthetic_value(info.value_type, depth + 1)}
    if isinstance(info, mi.LiteralType):
        return info.values[0]
    if isinstance(info, mi.EnumType):
        return next(iter(info.cls)).value
    if isinstance(info, mi.IntType):
        return info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else 1)
    scalars: dict[type[mi.Type], Any] = {
        mi.StrType: "example",
        mi.FloatType: 1.0,
        mi.BoolType: False,
        mi.NoneType: None,
        mi.AnyType: "example",
        mi.DateTimeType: "2025-01-01T00:00:00Z",
        mi.DateType: "2025-01-01",
        mi.UUIDType: _SAMPLE_ID,
        mi.DecimalType: "1.0",
    }
    if type(info) in scalars:
        return scalars[type(info)]
    raise ContractGenerationError(f"no synthetic value for {info!r}: write the example by hand")


def synthetic_example(event_type: str, version: int, model: type[Any]) -> dict[str, Any]:
    """A placeholder golden example for an event that has none yet; it must decode."""
    producers = producers_of(event_type)
    example = {
        "id": str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{SCHEMA_BASE_URL}/events/{message_id(event_type, version)}")
        ),
        "type": event_type,
        "source": producers[0] if producers else "intake",
        "time": "2025-01-01T00:00:00Z",
        "subject": "req-0123456789abcdef",
        "data_version": version,
        "data": synthetic_value(mi.type_info(model)),
    }
    # A generated example that does not decode would poison the corpus: fail loudly instead.
    decode_envelope(json.dumps(example).encode()).decode_data()
    return example


def missing_examples() -> dict[Path, str]:
    """Examples to create (never any that exist: they are the compatibility corpus)."""
    return {
        example_path(event_type, version): render_json(synthetic_example(event_type, version, model))
        for event_type, version, model in event_versions()
        if not example_path(event_type, version).exists()
    }


# --- additive-change rule ---------------------------------------------------------------------


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Why schema ``new`` may not replace ``old`` under the additive-change rule (empty if it may).

    Additive means: every property keeps its JSON type, ``const`` and ``enum`` values, no
    property disappears, every required property stays required, and new properties are
    optional. Checked recursively through ``$ref``, arrays, maps and unions. Descriptions,
    defaults and titles may change freely.

    A new ``enum`` value (a value added to a ``Literal``) is breaking too: consumers still
    running the old model reject the unknown value (msgspec validates Literals), so during a
    rolling upgrade every event carrying it would fail. It needs a new version, or a new
    optional field that old consumers ignore.
    """
    comparison = _Comparison(old_root=old, new_root=new)
    comparison.compare(old, new, "")
    return comparison.problems


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
    ref: str | None = None
    while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        ref = schema["$ref"]
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        schema = node
    return schema, ref


_JSON_TYPE_OF: Final[tuple[tuple[type[Any], str], ...]] = (
    (bool, "boolean"),  # before int: bool is an int subclass
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (type(None), "null"),
    (list, "array"),
    (dict, "object"),
)


def _value_type(value: Any) -> str:
    return next(name for cls, name in _JSON_TYPE_OF if isinstance(value, cls))


def _types(schema: Mapping[str, Any], root: Mapping[str, Any]) -> frozenset[str]:
    schema, _ = _resolve(schema, root)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        types: frozenset[str] = frozenset().union(*(_types(branch, root) for branch in branches))
        # A union with an unconstrained member takes any value: `Any | None` is `Any`.
        return frozenset({"any"}) if "any" in types else types
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(declared)
    if "const" in schema:
        return frozenset({_value_type(schema["const"])})
    if "enum" in schema:
        return frozenset(_value_type(value) for value in schema["enum"])
    if "properties" in schema:
        return frozenset({"object"})
    return frozenset({"any"})


def _branch_key(schema: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[Any]]:
    """A union member's JSON types and the ``const`` properties (tags) that tell it apart."""
    resolved, _ = _resolve(schema, root)
    properties: Mapping[str, Any] = resolved.get("properties", {})
    tags = frozenset((name, value["const"]) for name, value in properties.items() if "const" in value)
    return _types(schema, root), tags


@dataclass
class _Comparison:
    """One old/new schema pair being compared; roots resolve each side's own ``$ref``s."""

    old_root: Mapping[str, Any]
    new_root: Mapping[str, Any]
    problems: list[str] = dataclasses.field(default_factory=list)
    # Recursive models would loop forever; a pair of definitions needs comparing once.
    seen: set[tuple[str | None, str | None]] = dataclasses.field(default_factory=set)

    def compare(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        where = path or "(root)"
        old, old_ref = _resolve(old, self.old_root)
        new, new_ref = _resolve(new, self.new_root)
        if old_ref is not None:
            if (old_ref, new_ref) in self.seen:
                return
            self.seen.add((old_ref, new_ref))

        old_types, new_types = _types(old, self.old_root), _types(new, self.new_root)
        if old_types != new_types:
            self.problems.append(f"{where}: type changed from {sorted(old_types)} to {sorted(new_types)}")
            return
        if "const" in old and new.get("const", old["const"]) != old["const"]:
            self.problems.append(f"{where}: const changed from {old['const']!r} to {new.get('const')!r}")
        if "enum" in old and "enum" in new:
            removed = [value for value in old["enum"] if value not in new["enum"]]
            if removed:
                self.problems.append(f"{where}: enum values removed: {removed!r}")
            added = [value for value in new["enum"] if value not in old["enum"]]
            if added:
                self.problems.append(
                    f"{where}: enum values added: {added!r} (consumers of the old version reject them)"
                )
        elif "const" in old and "enum" in new:
            self.problems.append(f"{where}: const {old['const']!r} widened to enum {new['enum']!r}")
        self._compare_properties(old, new, path)
        if isinstance(old.get("items"), Mapping) and isinstance(new.get("items"), Mapping):
            self.compare(old["items"], new["items"], f"{path}[]")
        old_values, new_values = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_values, Mapping) and isinstance(new_values, Mapping):
            self.compare(old_values, new_values, f"{path}{{}}")
        # Union members are matched by JSON type and tag: `Plan | None` compares the Plan
        # branches, a tagged union (a pack's rules) each member with the one of its tag.
        for old_branch in old.get("anyOf") or old.get("oneOf") or []:
            branch_key = _branch_key(old_branch, self.old_root)
            for new_branch in new.get("anyOf") or new.get("oneOf") or []:
                if _branch_key(new_branch, self.new_root) == branch_key:
                    self.compare(old_branch, new_branch, path)
                    break

    def _compare_properties(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_props: Mapping[str, Any] = old.get("properties", {})
        new_props: Mapping[str, Any] = new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        for name in sorted(old_props):
            child = f"{path}.{name}" if path else name
            if name not in new_props:
                self.problems.append(f"{child}: property removed")
                continue
            if name in old_required and name not in new_required:
                self.problems.append(f"{child}: was required, is now optional")
            self.compare(old_props[name], new_props[name], child)
        for name in sorted(new_required - old_required):
            child = f"{path}.{name}" if path else name
            if name in old_props:
                self.problems.append(f"{child}: was optional, is now required")
            else:
                self.problems.append(f"{child}: new property is required (new properties must be optional)")


# --- the plan ---------------------------------------------------------------------------------


def generated_files() -> dict[Path, str]:
    """Every file the models determine, with its content (examples excluded)."""
    comps = components(_DEFS_REF)
    files: dict[Path, str] = {}
    for event_type, version, model in event_versions():
        files[event_schema_path(event_type, version)] = render_json(
            event_schema_document(event_type, version, model, comps)
        )
        files[data_schema_path(event_type, version)] = render_json(
            data_schema_document(event_type, version, model, comps)
        )
    for name in sorted(RPC_VERBS):
        files[rpc_schema_path(name)] = render_json(
            rpc_schema_document(name, RPC_VERBS[name].request_type, comps)
        )
    files[rpc_schema_path("reply")] = render_json(rpc_reply_document(comps))
    files[ASYNCAPI_PATH] = render_json(asyncapi_document())
    if DOCS_PATH.exists():
        files[DOCS_PATH] = docs_with_catalog(DOCS_PATH.read_text(encoding="utf-8"))
    return files


def stale_schema_files(files: Mapping[Path, str]) -> list[Path]:
    """Committed schemas no model produces any more: a removed contract, never silently deleted."""
    committed = [path for folder in _schema_dirs() for path in sorted(folder.glob("*.json"))]
    return [path for path in committed if path not in files]


def _schema_dirs() -> tuple[Path, ...]:
    return (EVENT_SCHEMAS_DIR, DATA_SCHEMAS_DIR, RPC_SCHEMAS_DIR)


def schema_breaks(files: Mapping[Path, str]) -> dict[Path, list[str]]:
    """Existing schema files that the new content would change in a non-additive way."""
    breaks: dict[Path, list[str]] = {}
    for path, content in files.items():
        if path.parent not in _schema_dirs() or not path.exists():
            continue
        problems = breaking_changes(json.loads(path.read_text(encoding="utf-8")), json.loads(content))
        if problems:
            breaks[path] = problems
    return breaks


def release_breaks(files: Mapping[Path, str]) -> dict[Path, list[str]]:
    """Released schemas (:data:`BASELINE_DIR`) that ``files`` break, beyond the accepted breaks."""
    accepted = accepted_breaks()
    breaks: dict[Path, list[str]] = {}
    for released in sorted(BASELINE_DIR.glob("*/*.json")):
        name = released.relative_to(BASELINE_DIR).as_posix()
        current = SCHEMAS_DIR / name
        content = files.get(current)
        problems = (
            ["the released contract is gone (no model produces it)"]
            if content is None
            else breaking_changes(json.loads(released.read_text(encoding="utf-8")), json.loads(content))
        )
        unaccepted = [problem for problem in problems if problem not in accepted.get(name, ())]
        if unaccepted:
            breaks[current] = unaccepted
    return breaks


def accepted_breaks() -> dict[str, list[str]]:
    """Per released schema (``rpc/<verb>.json``), the breaks made on purpose (each entry of
    :data:`ACCEPTED_BREAKS_PATH` gives its ``reason`` beside its ``problems``)."""
    if not ACCEPTED_BREAKS_PATH.exists():
        return {}
    listed = json.loads(ACCEPTED_BREAKS_PATH.read_text(encoding="utf-8"))
    return {name: list(entry["problems"]) for name, entry in listed.items()}


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def find_drift(files: Mapping[Path, str] | None = None) -> list[str]:
    """One line per committed artefact that differs from what the models produce now."""
    files = generated_files() if files is None else files
    lines = [f"drifted: {relative(path)}" for path, content in files.items() if _read(path) != content]
    lines += [f"missing example: {relative(path)}" for path in missing_examples()]
    lines += [
        f"stale: {relative(path)} (no model produces it; removing a released contract is a breaking change)"
        for path in stale_schema_files(files)
    ]
    return lines


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.tools.contracts_generator",
        description=(
            "Generate JSON Schemas, the AsyncAPI document and the docs catalog from contracts/ "
            "and the services' bus declarations."
        ),
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing files that differ from the models"
    )
    parser.add_argument(
        "--allow-breaking",
        action="store_true",
        help=(
            "overwrite schemas even when the change is not additive (only for unreleased contracts: "
            "the released ones under contracts/baseline/ are checked regardless)"
        ),
    )
    args = parser.parse_args(argv)

    files = generated_files()
    examples = missing_examples()
    breaks = release_breaks(files) | ({} if args.allow_breaking else schema_breaks(files))
    for path, problems in breaks.items():
        sys.stderr.write(f"breaking change to {relative(path)}:\n")
        sys.stderr.writelines(f"  - {problem}\n" for problem in problems)
    if breaks:
        sys.stderr.write(
            "Changes must be additive (new optional fields). For a breaking change register a new "
            "model version beside the old one, with an upcaster.\n"
        )

    if args.check:
        drift = find_drift(files)
        sys.stderr.writelines(f"{line}\n" for line in drift)
        if breaks:
            sys.stderr.write(
                "make the model change additive (or add a new version), then run `make contracts`\n"
            )
            return 1
        if drift:
            sys.stderr.write("contracts are out of date: run `make contracts` and commit the result\n")
            return 1
        sys.stdout.write("contracts are up to date\n")
        return 0

    if breaks:
        return 1
    written = 0
    for path, content in {**files, **examples}.items():
        if _read(path) != content:
            _write(path, content)
            sys.stdout.write(f"wrote {relative(path)}\n")
            written += 1
    for path in stale_schema_files(files):
        sys.stderr.write(f"warning: stale {relative(path)}: no model produces it (left in place)\n")
    sys.stdout.write(f"{written} file(s) written\n" if written else "contracts are up to date\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
