"""The committed contracts match the models, the golden corpus keeps parsing, changes stay additive."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from contracts.catalog import subject_matches
from contracts.envelope import decode_envelope, encode_envelope
from contracts.events import EVENT_MODELS, EVENT_TYPES
from services.tools import contracts_generator as generate
from services.tools import topology

EXAMPLE_FILES = sorted(generate.EXAMPLES_DIR.glob("v*/*.json"))
COMMITTED_SCHEMAS = (
    sorted(generate.EVENT_SCHEMAS_DIR.glob("*.json"))
    + sorted(generate.DATA_SCHEMAS_DIR.glob("*.json"))
    + sorted(generate.RPC_SCHEMAS_DIR.glob("*.json"))
)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(generate.CONTRACTS_DIR)) for path in paths]


# --- (a) generated files do not drift from the models ---------------------------------------


def test_committed_contracts_match_the_models() -> None:
    drift = generate.find_drift()
    assert not drift, (
        "contracts/ is out of date with the models:\n  "
        + "\n  ".join(drift)
        + "\nRun `make contracts` and commit the result."
    )


def test_generator_check_mode_exits_zero_and_writes_nothing() -> None:
    before = {path: path.read_bytes() for path in generate.CONTRACTS_DIR.rglob("*.json")}
    result = subprocess.run(
        [sys.executable, "-m", "services.tools.contracts_generator", "--check"],
        cwd=generate.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{result.stderr}\nRun `make contracts` and commit the result."
    assert {path: path.read_bytes() for path in generate.CONTRACTS_DIR.rglob("*.json")} == before


def test_generation_is_deterministic() -> None:
    assert generate.generated_files() == generate.generated_files()


def _msgspec_0_22_doc(t: Any) -> str:
    """How msgspec up to 0.22 turned a docstring into a description: continuation lines kept
    their indentation (0.23 dedents them like ``inspect.cleandoc``)."""
    import textwrap

    cls = getattr(t.cls, "__origin__", t.cls)
    doc = getattr(cls, "__doc__", "") or ""
    return textwrap.dedent(doc).strip("\r\n")


def _msgspec_0_23_doc(t: Any) -> str:
    import inspect

    cls = getattr(t.cls, "__origin__", t.cls)
    return inspect.cleandoc(getattr(cls, "__doc__", "") or "")


@pytest.mark.parametrize(
    "doc_style", [_msgspec_0_22_doc, _msgspec_0_23_doc], ids=["msgspec-0.22", "msgspec-0.23"]
)
def test_generated_bytes_do_not_depend_on_how_msgspec_trims_docstrings(
    doc_style: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed files are a function of the models alone: with either msgspec's way of
    copying docstrings (indented continuation lines or not) the generator writes the same bytes."""
    from msgspec import _json_schema

    monkeypatch.setattr(_json_schema, "_get_doc", doc_style)
    raw = msgspec.json.schema(EVENT_TYPES["request.submitted"])
    assert raw, "the patched msgspec still produces schemas"
    files = generate.generated_files()
    committed = {path: path.read_text(encoding="utf-8") for path in files}
    assert files == committed
    indented = [path.name for path, text in files.items() if "\\n    " in text and path.suffix == ".json"]
    assert not indented, f"descriptions keep docstring indentation in {indented}"


# --- (b) the golden corpus decodes and round-trips ---------------------------------------------


def _same_modulo_defaults(original: Any, reencoded: Any, path: str = "") -> list[str]:
    """Where ``original`` differs from ``reencoded``; keys only in ``reencoded`` are allowed.

    Decoding fills every absent field with its default, so a key the re-encoded object has
    and the original lacks can only be a default: that is the "modulo defaults". A key the
    original has and the re-encoded lacks means the model dropped a field (not additive).
    """
    if isinstance(original, dict) and isinstance(reencoded, dict):
        problems = []
        for key, value in original.items():
            if key not in reencoded:
                problems.append(f"{path}.{key}: in the example but unknown to the model")
            else:
                problems += _same_modulo_defaults(value, reencoded[key], f"{path}.{key}")
        return problems
    if isinstance(original, list) and isinstance(reencoded, list) and len(original) == len(reencoded):
        return [
            problem
            for index, (left, right) in enumerate(zip(original, reencoded, strict=True))
            for problem in _same_modulo_defaults(left, right, f"{path}[{index}]")
        ]
    if original == reencoded or _same_instant(original, reencoded):
        return []
    return [f"{path}: {original!r} re-encodes as {reencoded!r}"]


def _same_instant(left: Any, right: Any) -> bool:
    """``...T10:00:00+00:00`` and ``...T10:00:00Z`` are the same value written two ways."""
    if not (isinstance(left, str) and isinstance(right, str)):
        return False
    try:
        return datetime.fromisoformat(left) == datetime.fromisoformat(right)
    except ValueError:
        return False


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=_ids(EXAMPLE_FILES))
def test_golden_example_decodes_and_reencodes(path: Path) -> None:
    raw = path.read_bytes()
    envelope = decode_envelope(raw)
    assert f"v{envelope.data_version}" == path.parent.name, "examples live in examples/v<data_version>/"
    assert path.stem == envelope.type, "an example is named after its event type"
    model = EVENT_MODELS[(envelope.type, envelope.data_version)]

    data = envelope.decode_data()

    assert type(data) is model
    original = json.loads(raw)
    # The corpus is in the envelope form events had before CloudEvents: the Envelope struct
    # is that form, so it re-encodes to the example; the wire form is tested beside it.
    assert not _same_modulo_defaults(original, json.loads(msgspec.json.encode(envelope)))
    assert decode_envelope(encode_envelope(envelope)) == envelope
    problems = _same_modulo_defaults(original["data"], msgspec.to_builtins(data))
    assert not problems, f"{path.name} does not round-trip through {model.__name__}:\n" + "\n".join(problems)


def test_same_modulo_defaults_flags_dropped_fields_and_changed_values() -> None:
    assert _same_modulo_defaults({"a": 1}, {"a": 1, "b": []}) == []
    assert _same_modulo_defaults({"t": "2025-06-03T14:05:12+00:00"}, {"t": "2025-06-03T14:05:12Z"}) == []
    assert _same_modulo_defaults({"a": 1, "gone": 2}, {"a": 1}) == [
        ".gone: in the example but unknown to the model"
    ]
    assert _same_modulo_defaults({"a": [1, 2]}, {"a": [1, 3]}) == [".a[1]: 2 re-encodes as 3"]


# --- (c) the golden corpus validates against the committed JSON Schemas ------------------------


def _format_checker() -> jsonschema.FormatChecker:
    """jsonschema's format checks, with date-time always on.

    jsonschema checks date-time only when the optional rfc3339-validator is installed (it
    is not here); the envelope's RFC 3339 time must carry an offset, since a naive time is
    ambiguous across services.
    """
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_datetime(value: object) -> bool:
        return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None

    return checker


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=_ids(EXAMPLE_FILES))
def test_golden_example_validates_against_its_schema(path: Path) -> None:
    example = _load(path)
    schema_path = generate.event_schema_path(example["type"], example["data_version"])
    schema = _load(schema_path)
    validator = jsonschema.Draft202012Validator(schema, format_checker=_format_checker())

    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(example)
    ]

    assert not errors, f"{path.name} does not match {schema_path.name}:\n" + "\n".join(errors)


def test_schema_validation_rejects_a_wrong_payload() -> None:
    """Guards the previous test: the schemas really constrain ``data``, ``type`` and formats."""
    example = _load(generate.example_path("request.submitted", 1))
    schema = _load(generate.event_schema_path("request.submitted", 1))
    validator = jsonschema.Draft202012Validator(schema, format_checker=_format_checker())

    wrong_type = {**example, "type": "request.rendered"}
    missing_spec = {**example, "data": {k: v for k, v in example["data"].items() if k != "spec"}}
    naive_time = {**example, "time": "2025-06-03T14:05:12"}
    bad_id = {**example, "id": "not-a-uuid"}

    for wrong in (wrong_type, missing_spec, naive_time, bad_id):
        assert not validator.is_valid(wrong)


@pytest.mark.parametrize("path", COMMITTED_SCHEMAS, ids=_ids(COMMITTED_SCHEMAS))
def test_committed_schema_is_valid_json_schema(path: Path) -> None:
    schema = _load(path)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == generate.JSON_SCHEMA_DIALECT
    assert schema["$id"].endswith(f"/{path.parent.name}/{path.name}")


# --- (d) every event type is covered everywhere -------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_event_type_has_schema_example_and_channel(event_type: str) -> None:
    asyncapi = _load(generate.ASYNCAPI_PATH)
    versions = [version for (name, version) in EVENT_MODELS if name == event_type]

    assert EVENT_TYPES[event_type].__data_version__ in versions
    for version in versions:
        assert generate.event_schema_path(event_type, version).is_file()
        assert generate.example_path(event_type, version).is_file()
        assert generate.message_id(event_type, version) in asyncapi["channels"][event_type]["messages"]
    assert asyncapi["channels"][event_type]["address"] == f"platform.events.{event_type}"
    assert asyncapi["operations"][f"send.{event_type}"]["action"] == "send"


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_event_type_says_what_it_means(event_type: str) -> None:
    """The catalog's meaning column is the first paragraph of the model's docstring."""
    summary = generate.event_summary(event_type)
    assert summary != f"The {event_type} event.", f"give {EVENT_TYPES[event_type].__name__} a docstring"
    assert "\n" not in summary


def test_asyncapi_operations_are_the_declared_producers_and_consumers() -> None:
    operations = _load(generate.ASYNCAPI_PATH)["operations"]
    receivers = {
        name
        for name, operation in operations.items()
        if operation["action"] == "receive" and not name.startswith("rpc.")
    }

    assert receivers == {
        f"{service}.receive.{event_type}"
        for event_type in EVENT_TYPES
        for service in topology.consumers_of(event_type)
    }
    assert "the policy, approval, renderer" in operations["send.request.failed"]["description"]
    assert "No service publishes it yet." in operations["send.request.promotion_opened"]["description"]


def test_subject_matching_follows_nats_wildcards() -> None:
    assert subject_matches("request.*", "request.rendered")
    assert not subject_matches("request.*", "request.rendered.extra")
    assert subject_matches("request.>", "request.rendered.extra")
    assert not subject_matches("request.>", "request")
    assert not subject_matches("request.rendered", "request.published")


def test_every_rpc_message_has_a_schema() -> None:
    from contracts.rpc import RPC_VERBS

    for name in RPC_VERBS:
        assert generate.rpc_schema_path(name).is_file()
    assert generate.rpc_schema_path("reply").is_file()


def test_asyncapi_document_is_consistent() -> None:
    document = _load(generate.ASYNCAPI_PATH)

    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["nats"] == {
        "host": "localhost:4222",
        "protocol": "nats",
        "description": document["servers"]["nats"]["description"],
    }
    headers = document["components"]["schemas"]["EventHeaders"]["properties"]
    for header in ("Nats-Msg-Id", "traceparent", "tracestate", "content-type"):
        assert header in headers
    assert headers["content-type"]["const"] == "application/cloudevents+json"
    # Structured mode: a ce-* header would make CloudEvents SDKs read the body as bare data.
    assert not [header for header in headers if header.startswith("ce-")]
    # Every local reference resolves: a dangling $ref would break every AsyncAPI tool.
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"dangling $ref {ref}"
            node = node[part]


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_a_missing_example_is_synthesised_and_decodes() -> None:
    for event_type, version, model in generate.event_versions():
        example = generate.synthetic_example(event_type, version, model)
        assert decode_envelope(json.dumps(example).encode()).decode_data().__class__ is model


# --- (e) changes are additive ---------------------------------------------------------------------


def _head_version(path: Path) -> dict[str, Any] | None:
    """The file as committed in git HEAD, or None (no git, not a repo, or not committed yet)."""
    git = shutil.which("git")
    if git is None:
        return None
    result = subprocess.run(
        [git, "show", f"HEAD:{path.relative_to(generate.REPO_ROOT).as_posix()}"],
        cwd=generate.REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="module")
def generated_now() -> dict[Path, dict[str, Any]]:
    return {
        path: json.loads(content)
        for path, content in generate.generated_files().items()
        if path.suffix == ".json"
    }


@pytest.mark.parametrize("path", COMMITTED_SCHEMAS, ids=_ids(COMMITTED_SCHEMAS))
def test_models_change_committed_schema_only_additively(
    path: Path, generated_now: dict[Path, dict[str, Any]]
) -> None:
    """The working-tree file catches an unregenerated change; HEAD also catches a regenerated one."""
    new = generated_now.get(path)
    assert new is not None, (
        f"{path.name} is committed but no model produces it any more: a published contract was "
        "removed. Restore the model (old versions stay registered beside new ones)."
    )
    baselines = {"working tree": _load(path), "git HEAD": _head_version(path)}
    for label, old in baselines.items():
        if old is None:
            continue
        problems = generate.breaking_changes(old, new)
        assert not problems, (
            f"{path.name} ({label}) changed in a non-additive way:\n  "
            + "\n  ".join(problems)
            + "\nAdd optional fields only; a breaking change is a new model version with an upcaster."
        )


def _schema(
    properties: dict[str, Any], required: list[str], defs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "type": {"type": "string", "const": "request.sample"},
            "data": {"$ref": "#/$defs/Sample"},
        },
        "required": ["type", "data"],
        "$defs": {
            "Sample": {"type": "object", "properties": properties, "required": required},
            **(defs or {}),
        },
    }


OLD = _schema(
    {
        "request_id": {"type": "string"},
        "generation": {"type": "integer"},
        "status": {"enum": ["applied", "deleted"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
    },
    ["request_id", "generation", "status", "items"],
    {"Item": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
)


def test_additive_change_is_accepted() -> None:
    new = _schema(
        {
            "request_id": {"type": "string", "description": "now documented"},
            "generation": {"type": "integer"},
            "status": {"enum": ["applied", "deleted"]},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "region": {"type": "string", "default": ""},
        },
        ["request_id", "generation", "status", "items"],
        {
            "Item": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "size": {"type": "integer", "default": 0}},
                "required": ["name"],
            }
        },
    )

    assert generate.breaking_changes(OLD, new) == []


def test_breaking_changes_are_rejected() -> None:
    new = _schema(
        {
            "request_id": {"type": "string"},
            "generation": {"type": "string"},
            "status": {"enum": ["applied"]},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "region": {"type": "string"},
        },
        ["request_id", "status", "items", "region"],
        {"Item": {"type": "object", "properties": {"name": {"type": "string"}}, "required": []}},
    )

    problems = generate.breaking_changes(OLD, new)

    assert problems == [
        "data.generation: was required, is now optional",
        "data.generation: type changed from ['integer'] to ['string']",
        "data.items[].name: was required, is now optional",
        "data.note: property removed",
        "data.status: enum values removed: ['deleted']",
        "data.region: new property is required (new properties must be optional)",
    ]


def test_added_enum_value_is_breaking() -> None:
    """A consumer still on the old model rejects the new value (msgspec validates Literals), so
    during a rolling upgrade every event carrying it would fail there."""
    new = json.loads(json.dumps(OLD))
    new["$defs"]["Sample"]["properties"]["status"]["enum"] = ["applied", "deleted", "drifted"]

    assert generate.breaking_changes(OLD, new) == [
        "data.status: enum values added: ['drifted'] (consumers of the old version reject them)"
    ]


def test_literal_widened_from_one_value_is_breaking() -> None:
    old = json.loads(json.dumps(OLD))
    old["$defs"]["Sample"]["properties"]["status"] = {"const": "applied"}
    new = json.loads(json.dumps(OLD))
    new["$defs"]["Sample"]["properties"]["status"] = {"enum": ["applied", "deleted"]}

    assert generate.breaking_changes(old, new) == [
        "data.status: const 'applied' widened to enum ['applied', 'deleted']"
    ]


def test_changed_const_is_breaking() -> None:
    new = json.loads(json.dumps(OLD))
    new["properties"]["type"]["const"] = "request.renamed"

    assert generate.breaking_changes(OLD, new) == [
        "type: const changed from 'request.sample' to 'request.renamed'"
    ]


def test_models_keep_the_released_contracts() -> None:
    """The released schemas (contracts/baseline/) bind whatever the committed ones became:
    regenerating with --allow-breaking cannot drop a field a running gateway still sends."""
    files = generate.generated_files()
    assert sorted(generate.BASELINE_DIR.glob("*/*.json")), "the release baseline is missing"
    assert generate.release_breaks(files) == {}


def test_every_accepted_break_of_a_released_contract_still_happens() -> None:
    """An accepted break that no longer occurs would silently accept a later one of the same wording."""
    files = generate.generated_files()
    for name, accepted in generate.accepted_breaks().items():
        released = json.loads((generate.BASELINE_DIR / name).read_text(encoding="utf-8"))
        now = json.loads(files[generate.SCHEMAS_DIR / name])
        assert set(accepted) <= set(generate.breaking_changes(released, now)), name


def test_a_released_field_removed_again_is_refused_despite_allow_breaking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = tmp_path / "baseline"
    (baseline / "rpc").mkdir(parents=True)
    (baseline / "rpc" / "intake.create_request.json").write_text(
        generate.render_json(_schema({"dry_run": {"type": "boolean"}}, [])), encoding="utf-8"
    )
    monkeypatch.setattr(generate, "BASELINE_DIR", baseline)
    monkeypatch.setattr(generate, "ACCEPTED_BREAKS_PATH", baseline / "accepted-breaks.json")
    dropped = generate.render_json(_schema({}, []))
    monkeypatch.setattr(
        generate, "generated_files", lambda: {generate.rpc_schema_path("intake.create_request"): dropped}
    )
    monkeypatch.setattr(generate, "missing_examples", dict)

    assert generate.main(["--allow-breaking", "--check"]) == 1
    assert "data.dry_run: property removed" in capsys.readouterr().err


def test_generator_refuses_a_breaking_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make contracts`` keeps the committed schema when the models changed it non-additively."""
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    committed = events_dir / "request.sample.v1.json"
    committed.write_text(generate.render_json(OLD), encoding="utf-8")
    breaking = _schema({"request_id": {"type": "string"}}, ["request_id"])
    monkeypatch.setattr(generate, "EVENT_SCHEMAS_DIR", events_dir)

    breaks = generate.schema_breaks({committed: generate.render_json(breaking)})

    assert list(breaks) == [committed]
    assert "data.generation: property removed" in breaks[committed]
