"""Validation of new environment requests: every failing field named, nothing escapes.

The body's own rules are the :class:`EnvironmentRequestInput` model's; what needs the
catalog (class, region, TTL maximum) is intake's :func:`request_spec`. A client sees one
answer either way, so the cases below go through both, as intake does.
"""

from __future__ import annotations

import re
from typing import Any

import pydantic
import pytest

from contracts.inputs import EnvironmentRequestInput, ExtensionInput, PolicyPackInput
from contracts.models import EnvironmentClass, RequestSpec
from libs.errors import ValidationFailed, validation_failed
from services.intake.domain.validation import extended_ttl, request_spec
from tests.support.api_flows import request_body

CLASSES = {
    "preview": EnvironmentClass(
        name="preview", allowed_regions=["us-east-1", "us-west-2"], max_ttl_hours=72, quota_profile="small"
    )
}
VALID = request_body()


def validate(body: dict[str, Any]) -> RequestSpec:
    """What intake does with a body: the model, then the catalog's rules."""
    try:
        model = EnvironmentRequestInput.model_validate(body)
    except pydantic.ValidationError as exc:
        raise validation_failed(exc) from None
    return request_spec(model, CLASSES)


def failures(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as failure:
        validate(body)
    details = failure.value.details
    for detail in details:
        assert detail["field"] in failure.value.message
    return {detail["field"]: detail["message"] for detail in details}


def failing_fields(body: dict[str, Any]) -> set[str]:
    return set(failures(body))


def test_valid_request_gets_defaults() -> None:
    spec = validate(VALID)
    assert spec.revision == "main"
    assert spec.labels == {}
    assert spec.class_name == "preview"


def test_every_failing_field_of_the_body_is_reported_at_once() -> None:
    body = {**VALID, "app": "Payments", "team": "", "ttl_hours": 0, "repository": "ftp://x", "colour": "red"}
    assert failures(body) == {
        "app": "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter"
        " or digit, at most 40 characters",
        "team": "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter"
        " or digit, at most 40 characters",
        "ttl_hours": "must be at least 1",
        "repository": (
            "must be an https:// or ssh git URL "
            "(https://host/org/repo.git, ssh://git@host/org/repo.git, git@host:org/repo.git)"
        ),
        "colour": "unknown field",
    }


def test_every_field_the_catalog_refuses_is_reported_at_once() -> None:
    assert failures({**VALID, "region": "mars-1", "ttl_hours": 73}) == {
        "region": "not allowed for class preview (allowed: us-east-1, us-west-2)",
        "ttl_hours": "must be between 1 and 72 for class preview",
    }
    assert failures({**VALID, "class": "gold"}) == {
        "class": "unknown environment class 'gold' (known: preview)"
    }


def test_missing_fields_are_named() -> None:
    assert failures({}) == dict.fromkeys(
        ("app", "team", "class", "region", "ttl_hours", "owner", "repository"), "is required"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("app", "../../etc"),
        ("app", "a/b"),
        ("app", "..."),
        ("team", "pay ments"),
        ("team", "payments\n"),
        ("team", "ｐａｙｍｅｎｔｓ"),  # full-width unicode look-alikes
        ("app", "раyments"),  # Cyrillic 'р' and 'а'
        ("app", "x" * 41),
        ("app", "-leading"),
        ("team", 42),
        ("ttl_hours", "24"),
        ("ttl_hours", 24.5),
        ("ttl_hours", True),
        ("ttl_hours", 73),
        ("ttl_hours", 10**30),
        ("revision", "main..evil"),
        ("revision", "-rf"),
        ("revision", "refs/heads/x y"),
        ("revision", ""),
        ("repository", "https://user:token@github.com/x/y.git"),
        ("repository", "https://github.com/x/y.git\nmalicious: true"),
        ("repository", "file:///etc/passwd"),
        ("labels", ["a"]),
        ("labels", {"app.kubernetes.io/name": "x\ny"}),
        ("labels", {"platform.example.com/team": "other"}),
        ("labels", {"pod-security.kubernetes.io/enforce": "privileged"}),
        ("labels", {"bad key": "v"}),
        ("labels", {"k": 1}),
        ("owner", "alice\nbob"),
        ("owner", "   "),
        ("colour", "red"),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(field: str, value: Any) -> None:
    fields = failing_fields({**VALID, field: value})
    assert any(name == field or name.startswith(f"{field}.") for name in fields), fields


def test_label_problems_name_the_label() -> None:
    assert failures({**VALID, "labels": {"bad key": "v", "tier": 1}}) == {
        "labels.bad key": (
            "label key name must be 1-63 characters: letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        ),
        "labels.tier": "must be a string, not a number",
    }


def test_too_many_labels() -> None:
    labels = {f"k{i}": "v" for i in range(33)}
    assert failures({**VALID, "labels": labels}) == {"labels": "at most 32 labels are allowed"}
    # One problem, whatever the keys: not 33 more about them.
    labels = {f"bad key {i}": "v" for i in range(33)}
    assert failures({**VALID, "labels": labels}) == {"labels": "at most 32 labels are allowed"}


def test_an_owner_with_spaces_around_it_is_a_name_a_blank_one_is_not() -> None:
    assert validate({**VALID, "owner": " alice "}).owner == " alice "
    assert validate({**VALID, "owner": "Alice O'Neil"}).owner == "Alice O'Neil"
    assert set(failures({**VALID, "owner": "   "})) == {"owner"}


def test_a_required_field_given_as_null_is_required() -> None:
    assert failures({**VALID, "app": None, "ttl_hours": None}) == {
        "app": "is required",
        "ttl_hours": "is required",
    }


def test_labels_are_stored_sorted_and_null_means_none() -> None:
    assert validate({**VALID, "labels": {"b": "2", "a": "1"}}).labels == {"a": "1", "b": "2"}
    assert validate({**VALID, "labels": None, "revision": None}) == validate(VALID)


@pytest.mark.parametrize(
    "repository",
    [
        "https://github.com/example/app.git",
        "ssh://git@github.com/example/app.git",
        "git@github.com:example/app.git",
    ],
)
def test_accepted_repository_forms(repository: str) -> None:
    assert validate({**VALID, "repository": repository}).repository == repository


def test_an_extension_stays_within_the_class_maximum() -> None:
    preview = CLASSES["preview"]
    assert extended_ttl(ExtensionInput(ttl_hours=72), preview) == 72
    assert extended_ttl(ExtensionInput(ttl_hours=500), None) == 500
    with pytest.raises(ValidationFailed) as failure:
        extended_ttl(ExtensionInput(ttl_hours=73), preview)
    assert failure.value.details == [
        {"field": "ttl_hours", "message": "must be between 1 and 72 for class preview"}
    ]
    with pytest.raises(pydantic.ValidationError):
        ExtensionInput.model_validate({"ttl_hours": 2, "app": "x"})


def test_the_schema_tells_the_label_repository_and_revision_rules() -> None:
    """Rules checked by validators still show in the JSON Schema (and the OpenAPI document)."""
    schema = EnvironmentRequestInput.model_json_schema(by_alias=True)
    labels = next(
        branch for branch in schema["properties"]["labels"]["anyOf"] if branch.get("type") == "object"
    )
    keys = re.compile(labels["propertyNames"]["pattern"])
    assert keys.fullmatch("app.example.com/tier")
    assert not keys.fullmatch("bad key")
    assert "reserved" in labels["description"]
    assert labels["additionalProperties"]["maxLength"] == 63
    assert "ssh://" in schema["properties"]["repository"]["description"]
    revision = schema["properties"]["revision"]["description"]
    assert "'..'" in revision
    assert "main when left out" in revision


def test_a_long_client_value_is_echoed_cut_short() -> None:
    assert failures({**VALID, "labels": {"k": "v" * 10_000}})["labels.k"].startswith("label value must be")
    with pytest.raises(pydantic.ValidationError) as failure:
        PolicyPackInput.model_validate({"rules": [{"type": "x" * 10_000}]})
    message = validation_failed(failure.value).details[0]["message"]
    assert message.startswith("unknown type 'xxx")
    assert len(message) < 400
