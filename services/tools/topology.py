"""The platform's services and their places on the bus, read from the services' own declarations.

Every package under ``services/`` with a ``bootstrap`` module is a deployable; the
``TOPOLOGY`` of its ``entrypoints/bus.py`` says which events it consumes and publishes (the
gateway declares none: it serves HTTP and calls the others). What lists services or says
who publishes or consumes an event reads it here: platformd's registry, the contracts
generator (the AsyncAPI document and the event catalog of docs/contracts.md) and the bus
subjects each service uses, from which its NATS permissions follow.

:data:`contracts.catalog.SERVICES` names the services at run time, where the gateway and
intake cannot import the others; :func:`check_service_names` holds it to the declarations.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Final

import services
from contracts.catalog import SERVICES
from contracts.rpc import KIT, RPC_VERBS
from libs.bus import Subjects
from libs.topology import ServiceTopology

SERVICES_DIR: Final = Path(services.__file__).resolve().parent

# Event types in the contracts that no service publishes yet (their docstrings say why).
# They stay: removing a released event type breaks whoever consumes it.
RESERVED_EVENTS: Final = frozenset({"request.promotion_opened"})


def _deployable_names() -> list[str]:
    return sorted(
        module.name
        for module in pkgutil.iter_modules([str(SERVICES_DIR)])
        if module.ispkg and (SERVICES_DIR / module.name / "bootstrap.py").is_file()
    )


def _declared(name: str) -> ServiceTopology:
    """The service's declaration; a deployable without a bus entrypoint is on the bus as a caller only."""
    try:
        module = importlib.import_module(f"services.{name}.entrypoints.bus")
    except ModuleNotFoundError as exc:
        if exc.name != f"services.{name}.entrypoints.bus":
            raise
        return ServiceTopology(name=name)
    topology = module.TOPOLOGY
    if not isinstance(topology, ServiceTopology) or topology.name != name:
        raise TypeError(
            f"services/{name}/entrypoints/bus.py must declare TOPOLOGY = ServiceTopology({name!r}, ...)"
        )
    return topology


@functools.cache
def topologies() -> tuple[ServiceTopology, ...]:
    """Every deployable's declaration, in start order: the bus services as
    :data:`~contracts.catalog.SERVICES` orders them (the pipeline), then the callers."""
    declared = [_declared(name) for name in _deployable_names()]
    order = {name: index for index, name in enumerate(SERVICES)}
    return tuple(sorted(declared, key=lambda topology: order.get(topology.name, len(order))))


def deployables() -> tuple[str, ...]:
    """Every service that runs as its own process, in start order."""
    return tuple(topology.name for topology in topologies())


def bus_services() -> tuple[str, ...]:
    """The services built on the kit: each consumes events, publishes them and answers RPC."""
    return tuple(topology.name for topology in topologies() if topology.consumers or topology.publishes)


def topology(service: str) -> ServiceTopology:
    return next(candidate for candidate in topologies() if candidate.name == service)


def check_service_names() -> list[str]:
    """Where :data:`contracts.catalog.SERVICES` and the declarations disagree (empty: nowhere)."""
    declared = bus_services()
    problems = [
        f"{name} declares a TOPOLOGY but is missing from SERVICES"
        for name in declared
        if name not in SERVICES
    ]
    problems += [
        f"{name} is in SERVICES but declares no TOPOLOGY" for name in SERVICES if name not in declared
    ]
    return problems


def producers_of(event_type: str) -> list[str]:
    return [topology.name for topology in topologies() if event_type in topology.published_types]


def consumers_of(event_type: str) -> list[str]:
    return [topology.name for topology in topologies() if event_type in topology.consumed_types]


def subjects_published(service: str, subjects: Subjects) -> list[str]:
    """The event subjects ``service`` publishes on (through its outbox relay)."""
    return sorted(subjects.event(event_type) for event_type in topology(service).published_types)


def subjects_subscribed(service: str, subjects: Subjects) -> list[str]:
    """The event subjects ``service``'s durable consumers take from the stream."""
    return sorted(subjects.event(event_type) for event_type in topology(service).consumed_types)


def rpc_verbs(service: str) -> list[str]:
    """The verbs ``service`` answers: its own (contracts.rpc) and those the kit serves for every service."""
    if service not in bus_services():
        return []
    return sorted(verb.name for verb in RPC_VERBS.values() if verb.service in (service, KIT))


def rpc_subjects(service: str, subjects: Subjects) -> list[str]:
    """The RPC subjects ``service`` serves (``<rpc prefix>.<service>.<verb>``)."""
    return [subjects.rpc(service, verb) for verb in rpc_verbs(service)]
