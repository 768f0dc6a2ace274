"""The event envelope every service publishes and consumes, and its wire form.

On the wire an event is a CloudEvents 1.0 event in *structured* content mode: the NATS
message body is one JSON object in the CloudEvents JSON format,
``{specversion, id, type, source, time, subject, datacontenttype, dataschema, dataversion,
data}``, and the header ``content-type: application/cloudevents+json`` says so. Beside it:
``Nats-Msg-Id`` = ``id`` (JetStream dedup) and the W3C trace context. No ``ce-*`` headers:
CloudEvents SDKs take a message with any of them for *binary* mode.

In code an event is an :class:`Envelope` whose ``type`` is the platform's own name
(``request.submitted``, also the subject suffix); the CloudEvents ``type`` is derived from it
(:func:`cloudevents_type`) and the ``dataschema`` from the type, its ``data_version`` and a
configurable base URL (:func:`dataschema_url`).

Before CloudEvents structured mode the body was the envelope itself,
``{id, type, source, time, subject, data_version, data}`` (with ``ce-*`` headers beside it).
:func:`decode_envelope` still reads that form: events already in the stream, dead letters
and outbox rows written before an upgrade carry it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from contracts.events import EVENT_MODELS, EventData

SPECVERSION: Final = "1.0"
# The reverse-DNS prefix of every CloudEvents type: `request.submitted` travels as
# `io.platform-control-plane.request.submitted`. Consumers filter on it; it never changes.
CLOUDEVENTS_TYPE_PREFIX: Final = "io.platform-control-plane."
# Content type of a structured-mode body, and of the data inside it.
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
DATA_CONTENT_TYPE: Final = "application/json"
# Where the JSON Schemas under contracts/schemas/ are published by default (their `$id`s);
# PLATFORM_EVENTS_SCHEMA_BASE_URL moves the dataschema of published events elsewhere.
DEFAULT_SCHEMA_BASE_URL: Final = "https://platform.example.com/schemas"


class ContractError(ValueError):
    """A message does not match its contract (unknown type, wrong shape)."""


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    source: str
    time: datetime
    subject: str
    data_version: int = 1
    data: msgspec.Raw = msgspec.Raw(b"{}")

    def decode_data(self) -> EventData:
        """The typed payload for this envelope's ``type`` and ``data_version``."""
        model = EVENT_MODELS.get((self.type, self.data_version))
        if model is None:
            raise ContractError(f"unknown event type {self.type!r} version {self.data_version}")
        try:
            data: EventData = msgspec.json.decode(self.data, type=model)
            return data
        except msgspec.ValidationError as exc:
            raise ContractError(f"{self.type} v{self.data_version}: {exc}") from None


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The structured-mode body: CloudEvents 1.0 JSON format (``dataversion`` is an extension)."""

    specversion: str
    id: str
    type: str
    source: str
    time: datetime
    subject: str
    datacontenttype: str
    dataschema: str
    dataversion: int
    data: msgspec.Raw


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    """Either form of a body, decoded in one pass: ``specversion`` tells them apart."""

    specversion: str | None = None
    id: str
    type: str
    source: str
    time: datetime
    subject: str
    data_version: int | None = None  # the pre-CloudEvents envelope
    dataversion: int | None = None  # the CloudEvents extension attribute
    datacontenttype: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"{}")


_WIRE_DECODER: Final = msgspec.json.Decoder(_Wire)
_ENCODER: Final = msgspec.json.Encoder()


def new_event(event_type: str, source: str, subject: str, data: EventData) -> Envelope:
    """Wrap ``data`` in a fresh envelope with a new, forever-unique id."""
    version = getattr(type(data), "__data_version__", 1)
    return Envelope(
        id=str(uuid.uuid4()),
        type=event_type,
        source=source,
        time=datetime.now(UTC),
        subject=subject,
        data_version=version,
        data=msgspec.Raw(msgspec.json.encode(data)),
    )


def cloudevents_type(event_type: str) -> str:
    """The CloudEvents ``type`` of the platform's ``event_type`` (reverse-DNS, one prefix)."""
    return CLOUDEVENTS_TYPE_PREFIX + event_type


def dataschema_url(event_type: str, version: int, base: str = DEFAULT_SCHEMA_BASE_URL) -> str:
    """Absolute URI of the JSON Schema of ``data`` of ``event_type`` v``version``.

    The file is ``contracts/schemas/data/<type>.v<n>.json`` published under ``base``.
    """
    return f"{base.rstrip('/')}/data/{event_type}.v{version}.json"


def to_cloudevent(envelope: Envelope, schema_base: str = DEFAULT_SCHEMA_BASE_URL) -> CloudEvent:
    return CloudEvent(
        specversion=SPECVERSION,
        id=envelope.id,
        type=cloudevents_type(envelope.type),
        source=envelope.source,
        time=envelope.time,
        subject=envelope.subject,
        datacontenttype=DATA_CONTENT_TYPE,
        dataschema=dataschema_url(envelope.type, envelope.data_version, schema_base),
        dataversion=envelope.data_version,
        data=envelope.data,
    )


def encode_envelope(envelope: Envelope, schema_base: str = DEFAULT_SCHEMA_BASE_URL) -> bytes:
    """The message body: ``envelope`` as a CloudEvents 1.0 structured-mode JSON event."""
    return _ENCODER.encode(to_cloudevent(envelope, schema_base))


def decode_envelope(payload: bytes) -> Envelope:
    """The envelope of a message body, CloudEvents structured mode or the earlier envelope form.

    Raises :class:`ContractError` for anything else (not JSON, a missing attribute, a
    CloudEvents type outside the platform's prefix, data that is not JSON, an id that is not
    a UUID).
    """
    try:
        wire = _WIRE_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise ContractError(f"not an event envelope: {exc}") from None
    if wire.specversion is None:
        envelope = Envelope(
            id=wire.id,
            type=wire.type,
            source=wire.source,
            time=wire.time,
            subject=wire.subject,
            data_version=1 if wire.data_version is None else wire.data_version,
            data=wire.data,
        )
    else:
        envelope = _from_cloudevent(wire)
    # Event ids are UUIDs (and stored as such in every inbox): anything else can never be
    # recorded, so it must be rejected here, where it is dead-lettered, not retried forever.
    try:
        uuid.UUID(envelope.id)
    except ValueError:
        raise ContractError("not an event envelope: id is not a UUID") from None
    return envelope


def _from_cloudevent(wire: _Wire) -> Envelope:
    if wire.specversion != SPECVERSION:
        raise ContractError(f"not an event envelope: CloudEvents specversion {wire.specversion!r}")
    if not wire.type.startswith(CLOUDEVENTS_TYPE_PREFIX):
        raise ContractError(f"unknown event type {wire.type!r}: not under {CLOUDEVENTS_TYPE_PREFIX}")
    if wire.datacontenttype not in (None, DATA_CONTENT_TYPE):
        raise ContractError(f"{wire.type}: datacontenttype {wire.datacontenttype!r} is not JSON")
    return Envelope(
        id=wire.id,
        type=wire.type.removeprefix(CLOUDEVENTS_TYPE_PREFIX),
        source=wire.source,
        time=wire.time,
        subject=wire.subject,
        data_version=1 if wire.dataversion is None else wire.dataversion,
        data=wire.data,
    )


def cloudevents_headers(envelope: Envelope) -> dict[str, str]:
    """The NATS headers of ``envelope``'s message: structured mode's content type and dedup id.

    Deliberately no ``ce-*`` attribute headers: the attributes are in the body, and a
    CloudEvents SDK reads any message carrying ``ce-*`` headers as binary mode.
    """
    return {"content-type": STRUCTURED_CONTENT_TYPE, "Nats-Msg-Id": envelope.id}


# How a release writes events: ``cloudevents`` (structured mode), or ``envelope``, the form
# releases before CloudEvents wrote and read, for the length of a rolling upgrade from one.
WIRE_FORMS: Final = ("cloudevents", "envelope")


def encode_earlier_form(envelope: Envelope) -> bytes:
    """The message body as releases before CloudEvents wrote it: the envelope itself."""
    return _ENCODER.encode(envelope)


def earlier_form_headers(envelope: Envelope) -> dict[str, str]:
    """The NATS headers releases before CloudEvents wrote (and whose ``ce-type`` they route on)."""
    return {
        "ce-specversion": SPECVERSION,
        "ce-id": envelope.id,
        "ce-type": envelope.type,
        "ce-source": envelope.source,
        "ce-time": envelope.time.isoformat().replace("+00:00", "Z"),
        "ce-subject": envelope.subject,
        "ce-dataschema": f"platform:{envelope.type}:v{envelope.data_version}",
        "ce-datacontenttype": DATA_CONTENT_TYPE,
        "Nats-Msg-Id": envelope.id,
    }


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
