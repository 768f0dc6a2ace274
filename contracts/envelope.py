"""The event envelope every service publishes and consumes.

Body: one JSON object ``{id, type, source, time, subject, data_version, data}``.
Headers: ``Nats-Msg-Id`` = ``id`` (JetStream dedup), W3C trace context, and CloudEvents
binary-mode ``ce-*`` headers so generic tooling can read the event without our models.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from contracts.events import EVENT_MODELS, EventData


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


def encode_envelope(envelope: Envelope) -> bytes:
    return msgspec.json.encode(envelope)


def decode_envelope(payload: bytes) -> Envelope:
    try:
        envelope = msgspec.json.decode(payload, type=Envelope)
    except msgspec.DecodeError as exc:
        raise ContractError(f"not an event envelope: {exc}") from None
    # Event ids are UUIDs (and stored as such in every inbox): anything else can never be
    # recorded, so it must be rejected here, where it is dead-lettered, not retried forever.
    try:
        uuid.UUID(envelope.id)
    except ValueError:
        raise ContractError("not an event envelope: id is not a UUID") from None
    return envelope


def cloudevents_headers(envelope: Envelope) -> dict[str, str]:
    """CloudEvents 1.0 binary-mode attributes for NATS headers."""
    return {
        "ce-specversion": "1.0",
        "ce-id": envelope.id,
        "ce-type": envelope.type,
        "ce-source": envelope.source,
        "ce-time": envelope.time.isoformat().replace("+00:00", "Z"),
        "ce-subject": envelope.subject,
        "ce-dataschema": f"platform:{envelope.type}:v{envelope.data_version}",
        "ce-datacontenttype": "application/json",
        "Nats-Msg-Id": envelope.id,
    }


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
