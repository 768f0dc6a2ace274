"""The RPC verb registry: every verb is served exactly once, by the service it names, and
every request and reply it declares can be published as a JSON Schema."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts import rpc
from contracts.inputs import decode_input, encode_input, json_schema_hook
from contracts.rpc import CREATE_REQUEST, KIT, RPC_VERBS, RpcVerb
from libs.errors import validation_failed
from tests.support.api_flows import request_body

ROOT = Path(__file__).resolve().parents[2]
# Where each service registers its verbs; the kit registers the verbs every service serves.
REGISTRATIONS = {
    **{path.parents[1].name: path for path in sorted(ROOT.glob("services/*/entrypoints/bus.py"))},
    KIT: ROOT / "libs" / "service_kit.py",
}


def _route_calls(tree: ast.AST) -> list[ast.Call]:
    """``<anything>.route(...)`` calls, except inside a ``route`` method (which only forwards)."""
    calls = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "route":
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "route":
            calls.append(node)
        calls += _route_calls(node)
    return calls


def routed_verbs(path: Path) -> list[RpcVerb[Any, Any]]:
    """The registry verbs named by ``<anything>.route(VERB, handler)`` calls in ``path``."""
    verbs = []
    for node in _route_calls(ast.parse(path.read_text(encoding="utf-8"))):
        first = node.args[0]
        assert isinstance(first, ast.Name), f"{path}:{node.lineno} routes something other than a verb"
        verb = getattr(rpc, first.id, None)
        assert isinstance(verb, RpcVerb), f"{path}:{node.lineno}: {first.id} is not a contracts.rpc verb"
        verbs.append(verb)
    return verbs


def test_every_verb_is_served_by_exactly_one_registration_of_its_own_service() -> None:
    served: dict[str, list[str]] = {}
    for service, path in REGISTRATIONS.items():
        for verb in routed_verbs(path):
            assert verb.service == service, f"{service} serves {verb.key}, a verb of another service"
            served.setdefault(verb.key, []).append(service)
    assert sorted(served) == sorted(RPC_VERBS), "verbs nobody serves, or served but not in the registry"
    assert {key: len(services) for key, services in served.items()} == dict.fromkeys(RPC_VERBS, 1)


def test_the_registry_is_keyed_by_service_and_verb() -> None:
    assert all(key == verb.key == f"{verb.service}.{verb.name}" for key, verb in RPC_VERBS.items())


def references(node: Any) -> set[str]:
    if isinstance(node, str):
        return {node.removeprefix("#/$defs/")} if node.startswith("#/") else set()
    if isinstance(node, dict):
        return set().union(*(references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(references(item) for item in node))
    return set()


@pytest.mark.parametrize("key", sorted(RPC_VERBS))
def test_every_request_and_reply_has_a_json_schema(key: str) -> None:
    verb = RPC_VERBS[key]
    for message_type in (verb.request_type, verb.reply_type):
        schema = msgspec.json.schema(message_type, schema_hook=json_schema_hook)
        assert schema.get("$defs") or schema.get("type") == "object", message_type
        # A model's own definitions are inlined: every reference must resolve in this document.
        assert references(schema) <= set(schema.get("$defs", {})), message_type


def test_a_client_body_in_a_message_is_validated_on_decoding_with_every_field_named() -> None:
    decoder = msgspec.json.Decoder(CREATE_REQUEST.request_type, dec_hook=decode_input)
    actor = {"subject": "s", "actor": "alice@example.com", "role": "requester"}
    message = decoder.decode(msgspec.json.encode({"body": request_body(), "actor": actor}))
    # On the wire again, the body is the client's JSON object as it was given.
    assert msgspec.json.decode(msgspec.json.encode(message, enc_hook=encode_input))["body"] == request_body()

    bad = msgspec.json.encode({"body": {**request_body(), "app": "../x", "ttl_hours": "1"}, "actor": actor})
    with pytest.raises(msgspec.ValidationError) as caught:
        decoder.decode(bad)
    cause = caught.value.__cause__
    assert cause is not None
    failed = validation_failed(cause)  # type: ignore[arg-type]
    assert failed.message == "invalid environment request: app, ttl_hours"
    assert [detail["field"] for detail in failed.details] == ["app", "ttl_hours"]
