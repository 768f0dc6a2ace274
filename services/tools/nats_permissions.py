"""Who may publish and subscribe what on the bus: one NATS identity per service, a read-only
subscriber for downstream tools, an operator and the provisioner of the stream, derived
from the services' declarations.

The subjects come from the same code that makes the connections: a service's durable
consumers and published events from its ``TOPOLOGY`` (:mod:`services.tools.topology`), its
RPC endpoints and everyone's calls from :data:`contracts.rpc.RPC_VERBS`, the JetStream API
subjects from what :mod:`libs.inbox`, :mod:`libs.outbox` and :mod:`libs.bus` call. A subject a
service starts to use without a declaration is refused by the server, and the end-to-end
tests (every service on its own identity) fail.

Every identity is an NKEY user of the server's ``authorization`` block (``platformd
nats-config`` prints it, ``platformd dev`` writes it for its embedded server, and
deploy/nats/identities.yaml is it for the official Helm chart). Replies need no publish
permission: ``allow_responses`` lets an identity answer the requests it received. The
platform's identities and the operator take their replies under inbox prefixes of their own
(``_INBOX_<identity>``), so no other identity can subscribe to the gateway's RPC answers or
the operator's dead-letter listings and message reads (the ``nats`` CLI takes
``--inbox-prefix _INBOX_operator``); only the subscriber keeps the default ``_INBOX``, so a
downstream team's standard client works unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from contracts.catalog import subject_matches
from contracts.rpc import KIT, RPC_VERBS
from libs.bus import Subjects, durable_name
from libs.replay import reader_name
from libs.rpc import micro_name
from libs.settings import BusSettings
from services.tools.topology import bus_services, deployables, rpc_subjects, subjects_published, topology

SUBSCRIBER: Final = "subscriber"
OPERATOR: Final = "operator"
PROVISIONER: Final = "provisioner"
GATEWAY: Final = "gateway"
DEFAULT_INBOX: Final = "_INBOX"
JS_API: Final = "$JS.API"
SRV: Final = "$SRV"


@dataclass(frozen=True)
class Permissions:
    """One identity's subject permissions, as nats-server's ``permissions`` block takes them
    (a ``deny`` entry wins over an ``allow`` one)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    inbox_prefix: str = DEFAULT_INBOX
    # May answer the requests it receives (RPC calls, micro discovery) on their reply subjects.
    answers: bool = False

    def may_publish(self, subject: str) -> bool:
        """What the server decides for a publish to ``subject`` (a reply excepted)."""
        allowed = any(subject_matches(pattern, subject) for pattern in self.publish)
        return allowed and not any(subject_matches(pattern, subject) for pattern in self.publish_deny)

    def may_subscribe(self, subject: str) -> bool:
        return any(subject_matches(pattern, subject) for pattern in self.subscribe)

    def server_block(self) -> dict[str, Any]:
        publish: dict[str, Any] = {"allow": list(self.publish)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        block: dict[str, Any] = {"publish": publish, "subscribe": {"allow": list(self.subscribe)}}
        if self.answers:
            block["allow_responses"] = True
        return block


@dataclass(frozen=True)
class Identity:
    name: str
    permissions: Permissions
    doc: str


def inbox_prefix(identity: str) -> str:
    """Where a platform identity receives its replies (``PLATFORM_NATS_INBOX_PREFIX``)."""
    return f"{DEFAULT_INBOX}_{identity}"


def _durables(service: str) -> list[str]:
    return [durable_name(service, consumer.name) for consumer in topology(service).consumers]


def _consumer_api(stream: str, durable: str) -> list[str]:
    """What one durable consumer of :mod:`libs.inbox` asks JetStream: create (by name, with
    or without a filter, the pre-2.9 durable form too), look up, pull, and acknowledge."""
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _service(service: str, subjects: Subjects, stream: str) -> Permissions:
    """A bus service: its events, the redrives of its durables' dead letters (addressed to
    the durable alone: :meth:`libs.bus.Subjects.replay`; never the events it consumes, which
    would reach every other consumer of them), its durables, the stream it creates when missing (a create never changes
    an existing stream: the server refuses one whose configuration differs), the message the
    server gave up on (``STREAM.MSG.GET``), the consumer list (intake's backlog check), its
    RPC endpoints and micro discovery. Never a stream update: that is the provisioner's.

    A replay (``platformctl events replay --consumer``, :mod:`libs.replay`) reads the stream
    through a consumer of the service's own (created, pulled and deleted by name) and hands
    the messages to its durables on the same replay subjects as the dead letters' redrives."""
    durables = _durables(service)
    reader = reader_name(service)
    stream_api = [
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.CREATE.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.CONSUMER.LIST.{stream}",
    ]
    publish = [
        *subjects_published(service, subjects),
        *(subjects.replays(durable) for durable in durables),
        *stream_api,
        *(subject for durable in durables for subject in _consumer_api(stream, durable)),
        # A server before 2.10 takes a changed filter only on a new durable (libs.inbox).
        *(f"{JS_API}.CONSUMER.DELETE.{stream}.{durable}" for durable in durables),
        *_consumer_api(stream, reader),
        f"{JS_API}.CONSUMER.DELETE.{stream}.{reader}",
    ]
    subscribe = [
        f"{inbox_prefix(service)}.>",
        *rpc_subjects(service, subjects),
        *_discovery(service),
        *(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}" for durable in durables),
    ]
    return Permissions(tuple(publish), tuple(subscribe), inbox_prefix=inbox_prefix(service), answers=True)


def _discovery(service: str) -> list[str]:
    """What nats-py's micro service subscribes to for ``nats micro ls``/``info``/``stats``:
    ``$SRV.<verb>`` (every service), ``$SRV.<verb>.<name>`` and ``$SRV.<verb>.<name>.<id>``
    (this one), so a service never hears another's discovery requests."""
    name = micro_name(service)
    return [f"{SRV}.*", f"{SRV}.*.{name}", f"{SRV}.*.{name}.>"]


def _called_rpc_subjects(subjects: Subjects, *, kit_only: bool = False) -> list[str]:
    """Every RPC subject there is (a kit verb once per bus service), or only the kit's."""
    called = []
    for verb in RPC_VERBS.values():
        if verb.service == KIT:
            called += [subjects.rpc(service, verb.name) for service in bus_services()]
        elif not kit_only:
            called.append(subjects.rpc(verb.service, verb.name))
    return sorted(called)


def _gateway(subjects: Subjects) -> Permissions:
    """The gateway calls every verb for its callers (the user-facing ones carry their
    verified actor; policy.plan and renderer.render serve its dry run) and nothing else."""
    return Permissions(
        tuple(_called_rpc_subjects(subjects)),
        (f"{inbox_prefix(GATEWAY)}.>",),
        inbox_prefix=inbox_prefix(GATEWAY),
    )


def _subscriber(subjects: Subjects, stream: str) -> Permissions:
    """Read-only: durable pull consumers of its own on the events stream. Consumer names are
    one subject token, so any name is allowed but the platform's own durables and the services'
    replay readers, which it may neither create, change, pull nor acknowledge; no deletes at all."""
    any_name = "*"
    publish = [
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.INFO.{stream}",
        *_consumer_api(stream, any_name),
    ]
    platform_durables = [
        *(durable for service in bus_services() for durable in _durables(service)),
        *(reader_name(service) for service in bus_services()),
    ]
    deny = [subject for durable in platform_durables for subject in _consumer_api(stream, durable)]
    subscribe = [f"{DEFAULT_INBOX}.>", subjects.all_events]
    return Permissions(tuple(publish), tuple(subscribe), publish_deny=tuple(deny))


def _operator(subjects: Subjects, stream: str) -> Permissions:
    """Inspection of the stream and its consumers (``nats stream``/``consumer``/``micro``),
    replay through consumers of its own (it may create and delete any consumer, so it can
    stop a platform durable: the service recreates it where it had acknowledged), and the
    kit's verbs of every service (ping, list and redrive dead letters). Never a change of
    the stream (no update, delete or purge), never an event, never a verb that acts for a
    user."""
    publish = [
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.LIST",
        f"{JS_API}.STREAM.NAMES",
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.CONSUMER.>",
        f"$JS.ACK.{stream}.>",
        "$SRV.>",
        *_called_rpc_subjects(subjects, kit_only=True),
    ]
    prefix = inbox_prefix(OPERATOR)
    subscribe = [f"{prefix}.>", subjects.all_events, "$JS.EVENT.>"]
    return Permissions(tuple(publish), tuple(subscribe), inbox_prefix=prefix)


def _provisioner(stream: str) -> Permissions:
    """``platformd migrate`` (the Helm migration Job, ``platformd dev``): creates the stream
    and applies its configuration, and nothing else. A configuration is powerful, so this
    key is held by the deployment alone: subjects, limits and retention decide what the
    stream keeps (``max_msgs: 1`` empties it in effect)."""
    publish = [
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.CREATE.{stream}",
        f"{JS_API}.STREAM.UPDATE.{stream}",
    ]
    prefix = inbox_prefix(PROVISIONER)
    return Permissions(tuple(publish), (f"{prefix}.>",), inbox_prefix=prefix)


def _service_identity(name: str, subjects: Subjects, stream: str) -> Identity:
    if name in bus_services():
        return Identity(name, _service(name, subjects, stream), "its events, consumers and endpoints")
    if name == GATEWAY:
        return Identity(name, _gateway(subjects), "calls the services' verbs for its callers")
    raise ValueError(f"{name} is neither a bus service nor the gateway: declare what it may do on NATS")


def identities(settings: BusSettings) -> tuple[Identity, ...]:
    """Every identity: the services in start order, the subscriber, the operator and the provisioner."""
    subjects = Subjects.from_settings(settings)
    stream = settings.stream_name
    return (
        *(_service_identity(name, subjects, stream) for name in deployables()),
        Identity(SUBSCRIBER, _subscriber(subjects, stream), "read-only, events through durables of its own"),
        Identity(OPERATOR, _operator(subjects, stream), "inspection, replay and dead-letter redrive"),
        Identity(PROVISIONER, _provisioner(stream), "creates the stream and applies its configuration"),
    )


def public_key_variable(identity: str) -> str:
    """The environment variable holding an identity's public NKEY where the server config
    refers to it instead of naming it (the Helm chart's pods take it from a Secret)."""
    return f"PLATFORM_NKEY_{identity.upper()}"


def server_authorization(settings: BusSettings, public_keys: Mapping[str, str] | None = None) -> str:
    """nats-server's ``authorization`` block: every identity an NKEY user with its permissions.

    ``public_keys`` by identity; without them each user's key is the environment variable
    :func:`public_key_variable` (resolved by nats-server when it reads the file). With the
    block in place the server refuses anonymous connections.
    """
    users = []
    for identity in identities(settings):
        key = (
            public_keys[identity.name]
            if public_keys is not None
            else f"${public_key_variable(identity.name)}"
        )
        block = _nats_conf(identity.permissions.server_block(), indent="      ")
        users.append(f"    # {identity.name}\n    {{\n      nkey: {key}\n      permissions: {block}\n    }}")
    return "authorization {\n  users: [\n" + "\n".join(users) + "\n  ]\n}\n"


def _nats_conf(value: Any, indent: str) -> str:
    """``value`` in nats-server's configuration syntax (JSON-like; strings quoted)."""
    if isinstance(value, dict):
        inner = indent + "  "
        items = "\n".join(f"{inner}{key}: {_nats_conf(item, inner)}" for key, item in value.items())
        return "{\n" + items + f"\n{indent}}}"
    if isinstance(value, list):
        inner = indent + "  "
        return "[\n" + "".join(f"{inner}{_nats_conf(item, inner)}\n" for item in value) + f"{indent}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"'


HELM_HEADER = """\
# GENERATED by `platformd nats-config --format helm` from the services' declarations
# (services/tools/nats_permissions.py); tests/unit/test_nats_permissions.py fails when it
# differs. Do not edit: change the code and regenerate.
#
# The platform's NATS identities for the official NATS chart, on top of values.yaml:
#   helm upgrade --install nats nats/nats -n nats -f deploy/nats/values.yaml -f deploy/nats/identities.yaml
# Each user's public NKEY comes from the Secret `platform-nats-identities` (key: the
# identity's name), created before the release; the seeds stay with the clients
# (docs/security.md). With these users the server refuses anonymous connections.
"""


def helm_values(settings: BusSettings) -> str:
    """Values for the official NATS chart (1.x): the users under ``config.merge``, their
    keys as ``<< $VAR >>`` references filled from the Secret through ``container.env``."""
    users = [
        {
            "nkey": f"<< ${public_key_variable(identity.name)} >>",
            "permissions": identity.permissions.server_block(),
        }
        for identity in identities(settings)
    ]
    env = {
        public_key_variable(identity.name): {
            "valueFrom": {"secretKeyRef": {"name": "platform-nats-identities", "key": identity.name}}
        }
        for identity in identities(settings)
    }
    values = {"config": {"merge": {"authorization": {"users": users}}}, "container": {"env": env}}
    return HELM_HEADER + "\n" + yaml.safe_dump(values, sort_keys=False, width=120)


def describe(settings: BusSettings) -> str:
    """The identities and their subjects as text (``platformd nats-config --format table``)."""
    lines = []
    for identity in identities(settings):
        permissions = identity.permissions
        lines.append(f"{identity.name}: {identity.doc} (replies under {permissions.inbox_prefix}.>)")
        lines += [f"  publish    {subject}" for subject in permissions.publish]
        lines += [f"  deny       {subject}" for subject in permissions.publish_deny]
        lines += [f"  subscribe  {subject}" for subject in permissions.subscribe]
    return "\n".join(lines) + "\n"
