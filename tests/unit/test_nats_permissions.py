"""The NATS permission model: what each identity may publish and subscribe, derived from the
services' declarations and the RPC registry, and the generated deployment files that carry it.

That the permissions are enough for every service's whole flow is proven with a real server
(tests/e2e/test_secured_bus.py); here: that they are no wider than they should be.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.catalog import DURABLES
from contracts.events import EVENT_TYPES
from contracts.rpc import KIT, RPC_VERBS
from libs.bus import REPLAY, Subjects, durable_name
from libs.rpc import micro_name
from libs.settings import BusSettings, load_settings
from services.tools.nats_permissions import (
    GATEWAY,
    OPERATOR,
    PROVISIONER,
    SUBSCRIBER,
    Identity,
    helm_values,
    identities,
    server_authorization,
)
from services.tools.platformd.main import main as platformd
from services.tools.topology import bus_services, rpc_subjects, subjects_published, topology

REPOSITORY = Path(__file__).resolve().parents[2]
SETTINGS = load_settings(BusSettings, {})
SUBJECTS = Subjects.from_settings(SETTINGS)
STREAM = SETTINGS.stream_name
IDENTITIES = {identity.name: identity for identity in identities(SETTINGS)}
USER_FACING = sorted(
    SUBJECTS.rpc(verb.service, verb.name) for verb in RPC_VERBS.values() if verb.service != KIT
)
KIT_SUBJECTS = sorted(
    SUBJECTS.rpc(service, verb.name)
    for verb in RPC_VERBS.values()
    if verb.service == KIT
    for service in bus_services()
)
PLATFORM_DURABLES = [
    durable_name(service, consumer.name)
    for service in bus_services()
    for consumer in topology(service).consumers
]


def identity(name: str) -> Identity:
    return IDENTITIES[name]


def test_every_service_the_two_people_identities_and_the_provisioner_exist() -> None:
    assert list(IDENTITIES) == [*bus_services(), GATEWAY, SUBSCRIBER, OPERATOR, PROVISIONER]


def test_only_the_provisioner_may_change_the_stream() -> None:
    update = f"$JS.API.STREAM.UPDATE.{STREAM}"
    assert [name for name, item in IDENTITIES.items() if item.permissions.may_publish(update)] == [
        PROVISIONER
    ]
    provisioner = identity(PROVISIONER).permissions
    assert set(provisioner.publish) == {
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{STREAM}",
        f"$JS.API.STREAM.CREATE.{STREAM}",
        update,
    }
    assert provisioner.subscribe == ("_INBOX_provisioner.>",)
    assert provisioner.inbox_prefix == "_INBOX_provisioner"


def test_the_durables_intake_waits_for_are_the_declared_ones() -> None:
    assert sorted(DURABLES) == sorted(PLATFORM_DURABLES)


def test_only_the_gateway_may_call_the_verbs_that_act_for_a_user() -> None:
    for subject in USER_FACING:
        callers = [name for name, item in IDENTITIES.items() if item.permissions.may_publish(subject)]
        assert callers == [GATEWAY], subject


def test_the_kit_verbs_are_called_by_the_gateway_and_the_operator_only() -> None:
    for subject in KIT_SUBJECTS:
        callers = [name for name, item in IDENTITIES.items() if item.permissions.may_publish(subject)]
        assert callers == [GATEWAY, OPERATOR], subject


@pytest.mark.parametrize("service", bus_services())
def test_a_service_serves_its_own_endpoints_and_no_others(service: str) -> None:
    permissions = identity(service).permissions
    own = set(rpc_subjects(service, SUBJECTS))
    every = set(USER_FACING) | set(KIT_SUBJECTS)
    assert own
    assert all(permissions.may_subscribe(subject) for subject in own)
    assert not any(permissions.may_subscribe(subject) for subject in every - own)
    assert not any(permissions.may_publish(subject) for subject in every)


@pytest.mark.parametrize("service", bus_services())
def test_a_service_publishes_its_events_and_redrives_to_its_own_durables_only(service: str) -> None:
    permissions = identity(service).permissions
    own = {durable_name(service, consumer.name) for consumer in topology(service).consumers}
    events = [pattern for pattern in permissions.publish if pattern.startswith(f"{SUBJECTS.events_prefix}.")]
    assert set(events) == set(subjects_published(service, SUBJECTS)) | {SUBJECTS.replays(d) for d in own}
    assert not permissions.may_publish(f"{SUBJECTS.events_prefix}.request.made_up")
    # A type it consumes but does not emit reaches every consumer of it: never its to publish.
    for event_type in topology(service).consumed_types - topology(service).published_types:
        assert not permissions.may_publish(SUBJECTS.event(event_type)), event_type
    for durable in PLATFORM_DURABLES:
        redrive = SUBJECTS.replay(durable, "request.teardown_requested")
        assert permissions.may_publish(redrive) == (durable in own), redrive


def test_a_redrive_subject_names_its_durable_and_the_event_type() -> None:
    redrive = SUBJECTS.replay("git-publisher-work", "request.teardown_requested")
    assert redrive == "platform.events.replay.git-publisher-work.request.teardown_requested"
    assert SUBJECTS.replayed_for(redrive) == "git-publisher-work"
    assert SUBJECTS.event_type(redrive) == "request.teardown_requested"
    assert SUBJECTS.replayed_for(SUBJECTS.event("request.teardown_requested")) is None
    # The namespace is the redrives': no event type may live in it.
    assert not [event_type for event_type in EVENT_TYPES if event_type.startswith(f"{REPLAY}.")]


@pytest.mark.parametrize("service", bus_services())
def test_a_service_hears_discovery_requests_for_itself_only(service: str) -> None:
    permissions = identity(service).permissions
    own, other = micro_name(service), micro_name(next(s for s in bus_services() if s != service))
    for verb in ("PING", "INFO", "STATS"):
        assert permissions.may_subscribe(f"$SRV.{verb}")
        assert permissions.may_subscribe(f"$SRV.{verb}.{own}")
        assert permissions.may_subscribe(f"$SRV.{verb}.{own}.x1y2z3")
        assert not permissions.may_subscribe(f"$SRV.{verb}.{other}")
        assert not permissions.may_subscribe(f"$SRV.{verb}.{other}.x1y2z3")


@pytest.mark.parametrize("service", bus_services())
def test_a_service_drives_its_own_durables_only(service: str) -> None:
    permissions = identity(service).permissions
    own = {durable_name(service, consumer.name) for consumer in topology(service).consumers}
    for durable in PLATFORM_DURABLES:
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}"
        ack = f"$JS.ACK.{STREAM}.{durable}.1.2.3.4.5"
        assert permissions.may_publish(pull) == (durable in own), pull
        assert permissions.may_publish(ack) == (durable in own), ack
    for destructive in (f"$JS.API.STREAM.DELETE.{STREAM}", f"$JS.API.STREAM.PURGE.{STREAM}"):
        assert not permissions.may_publish(destructive)
    for durable in PLATFORM_DURABLES:
        delete = f"$JS.API.CONSUMER.DELETE.{STREAM}.{durable}"
        assert permissions.may_publish(delete) == (durable in own), delete


def test_the_gateway_uses_no_jetstream_and_no_events() -> None:
    permissions = identity(GATEWAY).permissions
    assert not permissions.may_publish("$JS.API.INFO")
    assert not permissions.may_publish(SUBJECTS.event("request.submitted"))
    assert permissions.inbox_prefix == "_INBOX_gateway"


def test_the_subscriber_reads_events_through_its_own_durables_and_does_nothing_else() -> None:
    permissions = identity(SUBSCRIBER).permissions
    assert permissions.may_subscribe(SUBJECTS.event("request.submitted"))
    for subject in (
        f"$JS.API.CONSUMER.CREATE.{STREAM}.audit-tap.{SUBJECTS.all_events}",
        f"$JS.API.CONSUMER.INFO.{STREAM}.audit-tap",
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.audit-tap",
        f"$JS.ACK.{STREAM}.audit-tap.1.7.7.1700000000000000000.0",
        f"$JS.API.STREAM.INFO.{STREAM}",
    ):
        assert permissions.may_publish(subject), subject
    refused = [
        SUBJECTS.event("request.approved"),
        *USER_FACING,
        *KIT_SUBJECTS,
        f"$JS.API.STREAM.DELETE.{STREAM}",
        f"$JS.API.STREAM.PURGE.{STREAM}",
        f"$JS.API.STREAM.UPDATE.{STREAM}",
        f"$JS.API.CONSUMER.DELETE.{STREAM}.audit-tap",
        *(f"$JS.API.CONSUMER.CREATE.{STREAM}.{durable}" for durable in PLATFORM_DURABLES),
        *(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}" for durable in PLATFORM_DURABLES),
        *(f"$JS.ACK.{STREAM}.{durable}.1.1.1.1.0" for durable in PLATFORM_DURABLES),
    ]
    assert [subject for subject in refused if permissions.may_publish(subject)] == []
    # The platform's and the operator's replies travel under prefixes the subscriber cannot
    # subscribe to.
    assert not permissions.may_subscribe("_INBOX_gateway.abc.1")
    assert not permissions.may_subscribe("_INBOX_operator.abc.1")
    assert permissions.may_subscribe("_INBOX.abc.1")


def test_the_operator_inspects_and_redrives_but_never_deletes_the_stream_or_acts_for_a_user() -> None:
    permissions = identity(OPERATOR).permissions
    assert permissions.may_publish(f"$JS.API.STREAM.INFO.{STREAM}")
    assert permissions.may_publish(f"$JS.API.CONSUMER.LIST.{STREAM}")
    assert permissions.may_publish(SUBJECTS.rpc("git_publisher", "replay_dead_letter"))
    assert permissions.may_publish("$SRV.INFO")
    assert not permissions.may_publish(f"$JS.API.STREAM.DELETE.{STREAM}")
    assert not permissions.may_publish(f"$JS.API.STREAM.PURGE.{STREAM}")
    assert not permissions.may_publish(SUBJECTS.event("request.approved"))
    assert not any(permissions.may_publish(subject) for subject in USER_FACING)
    assert permissions.inbox_prefix == "_INBOX_operator"
    assert permissions.may_subscribe("_INBOX_operator.abc.1")
    assert not permissions.may_subscribe("_INBOX.abc.1")


def test_the_committed_helm_values_are_the_generated_ones() -> None:
    committed = (REPOSITORY / "deploy" / "nats" / "identities.yaml").read_text()
    assert committed == helm_values(SETTINGS), (
        "deploy/nats/identities.yaml is stale: "
        "platformd nats-config --format helm > deploy/nats/identities.yaml"
    )


def test_the_server_block_names_every_identity_by_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    keys = {name: f"U{name.upper()}" for name in IDENTITIES}
    block = server_authorization(SETTINGS, keys)
    assert all(f"nkey: {key}\n" in block for key in keys.values())
    assert platformd(["nats-config", "--format", "server"]) == 0
    printed = capsys.readouterr().out
    assert "nkey: $PLATFORM_NKEY_SUBSCRIBER" in printed
    assert printed.count("nkey: ") == len(IDENTITIES)
