"""Validation of new environment requests: every failing field named, nothing escapes."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.models import EnvironmentClass
from libs.errors import ValidationFailed
from services.intake.domain.validation import validate_new_request
from tests.support.api_flows import request_body

pytestmark = pytest.mark.unit

CLASSES = {
    "preview": EnvironmentClass(
        name="preview", allowed_regions=["us-east-1", "us-west-2"], max_ttl_hours=72, quota_profile="small"
    )
}
VALID = request_body()


def failing_fields(body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationFailed) as failure:
        validate_new_request(body, CLASSES)
    return {detail["field"] for detail in failure.value.details}


def test_valid_request_gets_defaults() -> None:
    spec = validate_new_request(VALID, CLASSES)
    assert spec.revision == "main"
    assert spec.labels == {}
    assert spec.class_name == "preview"


def test_every_failing_field_is_reported_at_once() -> None:
    body = {
        **VALID,
        "app": "Payments",
        "team": "",
        "region": "mars-1",
        "ttl_hours": 0,
        "repository": "ftp://x",
    }
    assert failing_fields(body) == {"app", "team", "region", "ttl_hours", "repository"}


def test_missing_fields_are_named() -> None:
    assert failing_fields({}) == {"app", "team", "class", "region", "ttl_hours", "owner", "repository"}


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
        ("revision", "main..evil"),
        ("revision", "-rf"),
        ("revision", "refs/heads/x y"),
        ("repository", "https://user:token@github.com/x/y.git"),
        ("repository", "https://github.com/x/y.git\nmalicious: true"),
        ("repository", "file:///etc/passwd"),
        ("labels", ["a"]),
        ("labels", {"app.kubernetes.io/name": "x\ny"}),
        ("labels", {"platform.example.com/team": "other"}),
        ("labels", {"bad key": "v"}),
        ("labels", {"k": 1}),
        ("owner", "alice\nbob"),
        ("colour", "red"),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(field: str, value: Any) -> None:
    fields = failing_fields({**VALID, field: value})
    assert any(name == field or name.startswith(f"{field}.") for name in fields), fields


def test_too_many_labels() -> None:
    labels = {f"k{i}": "v" for i in range(33)}
    assert failing_fields({**VALID, "labels": labels}) == {"labels"}


@pytest.mark.parametrize(
    "repository",
    [
        "https://github.com/example/app.git",
        "ssh://git@github.com/example/app.git",
        "git@github.com:example/app.git",
    ],
)
def test_accepted_repository_forms(repository: str) -> None:
    assert validate_new_request({**VALID, "repository": repository}, CLASSES).repository == repository
