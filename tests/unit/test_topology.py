"""The bus topology comes from the services' declarations, and nothing else restates it.

Who publishes and who consumes each event, and which services exist, is declared once per
service (``services/<service>/entrypoints/bus.py``) and read through
``services/tools/topology.py``; the AsyncAPI document and the docs' event catalog are
generated from it (tests/unit/test_contracts.py checks they are up to date).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.catalog import SERVICES
from contracts.events import EVENT_TYPE_OF, EVENT_TYPES
from libs.bus import Subjects
from libs.topology import event_filter
from services.intake.domain.model import OWN_EVENTS
from services.tools import topology
from services.tools.platformd.registry import ops_port_order, service_entry

ROOT = Path(__file__).resolve().parents[2]
EVENT_TYPE_BY_CLASS_NAME = {model.__name__: event_type for event_type, model in EVENT_TYPES.items()}
# Where the two lists are written: the names services answer to, and the event classes.
LIST_HOMES = {ROOT / "contracts" / "catalog.py", ROOT / "contracts" / "events.py"}
SUBJECTS = Subjects(events_prefix="tenant.events", rpc_prefix="tenant.rpc")


def python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from (path for path in sorted((ROOT / folder).rglob("*.py")) if "__pycache__" not in path.parts)


def constructed_events(tree: ast.AST) -> set[str]:
    """The event types whose classes ``tree`` calls, i.e. constructs."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in EVENT_TYPE_BY_CLASS_NAME:
                found.add(EVENT_TYPE_BY_CLASS_NAME[name])
    return found


def events_a_service_stages(service: str) -> set[str]:
    """What the service's code constructs, and what its consumers' give-up and retry hooks do."""
    package = ROOT / "services" / service
    found = set().union(
        *(constructed_events(ast.parse(path.read_text())) for path in python_files(str(package)))
    )
    for consumer in topology.topology(service).consumers:
        for hook in (consumer.on_give_up, consumer.on_retry):
            if hook is not None:
                found |= constructed_events(ast.parse(inspect.getsource(hook)))
    return found


@pytest.mark.parametrize("service", topology.deployables())
def test_a_service_declares_every_event_it_stages_and_no_other(service: str) -> None:
    declared = topology.topology(service).published_types
    assert events_a_service_stages(service) == declared, (
        f"services/{service}/entrypoints/bus.py: TOPOLOGY.publishes must list what the service stages"
    )


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_every_event_has_a_producer_unless_reserved(event_type: str) -> None:
    producers = topology.producers_of(event_type)
    if event_type in topology.RESERVED_EVENTS:
        assert producers == [], f"{event_type} is published now: remove it from RESERVED_EVENTS"
    else:
        assert producers, f"no service declares that it publishes {event_type}"


# Intake records the events it publishes in the request's timeline as it stages them.
RECORDED_BY_THEIR_PRODUCER = {EVENT_TYPE_OF[model] for model in OWN_EVENTS}


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_every_event_is_consumed_or_recorded_by_its_producer(event_type: str) -> None:
    if event_type in RECORDED_BY_THEIR_PRODUCER:
        assert topology.producers_of(event_type) == ["intake"]
        assert "intake" not in topology.consumers_of(event_type)
    else:
        assert topology.consumers_of(event_type), f"no service consumes {event_type}"


def test_the_bus_services_are_the_declared_ones() -> None:
    assert topology.check_service_names() == []
    assert topology.bus_services() == SERVICES
    assert topology.deployables() == (*SERVICES, "gateway")


def test_the_ops_ports_follow_the_pipeline_order() -> None:
    """platformd dev, compose and the charts give the services 9101, 9102, ... in this order."""
    assert ops_port_order() == SERVICES
    assert service_entry("gateway").schema is None
    assert all(service_entry(name).schema == name for name in SERVICES)


def test_consumer_filters_are_derived_from_their_event_classes() -> None:
    intake = {consumer.name: consumer for consumer in topology.topology("intake").consumers}
    assert intake["requests"].event_filter == "request.>"
    assert set(intake["requests"].event_types) == {
        name for name in EVENT_TYPES if name.startswith("request.") and name not in RECORDED_BY_THEIR_PRODUCER
    }
    assert {
        "request.submitted",
        "request.reconcile_requested",
        "request.teardown_requested",
        "request.extended",
    } == RECORDED_BY_THEIR_PRODUCER
    assert intake["classes"].event_filter == "class.upserted"
    assert event_filter(["request.rendered", "request.teardown_requested"]) == "request.>"
    assert event_filter(["request.rendered", "class.upserted"]) == ">"
    with pytest.raises(ValueError, match="at least one event type"):
        event_filter([])


def test_bus_subjects_of_a_service() -> None:
    assert topology.subjects_published("renderer", SUBJECTS) == [
        "tenant.events.request.failed",
        "tenant.events.request.rendered",
        "tenant.events.request.stage_retrying",
    ]
    assert topology.subjects_subscribed("renderer", SUBJECTS) == ["tenant.events.request.reconcile_requested"]
    renderer_rpc = topology.rpc_subjects("renderer", SUBJECTS)
    assert "tenant.rpc.renderer.render" in renderer_rpc
    assert "tenant.rpc.renderer.ping" in renderer_rpc
    assert not any(".intake." in subject for subject in renderer_rpc)
    assert topology.rpc_subjects("gateway", SUBJECTS) == []


def literal_lists(tree: ast.AST) -> Iterator[tuple[int, list[str]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [key for key in node.keys if key is not None]
        else:
            continue
        strings = [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        yield node.lineno, strings


def copies(names: set[str]) -> list[str]:
    """Literals naming all of ``names`` but at most one (a stale copy lacks the newest)."""
    found = []
    for path in python_files("services", "libs", "contracts", "tests"):
        if path in LIST_HOMES:
            continue
        for line, strings in literal_lists(ast.parse(path.read_text())):
            if len(names & set(strings)) >= len(names) - 1:
                found.append(f"{path.relative_to(ROOT)}:{line}")
    return found


def test_no_second_copy_of_the_service_list() -> None:
    assert copies(set(SERVICES)) == [], "import contracts.catalog.SERVICES or read services.tools.topology"


def test_no_second_copy_of_the_event_list() -> None:
    assert copies(set(EVENT_TYPES)) == [], (
        "derive it from contracts.events.EVENT_TYPES (libs.topology.events_under)"
    )
