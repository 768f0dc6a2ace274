"""The API reference's request bodies: each is its input model's schema, and its example passes the model."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.openapi.spec import RequestBody
from pydantic import BaseModel

from contracts.inputs import (
    EnvironmentClassInput,
    EnvironmentRequestInput,
    ExtensionInput,
    PolicyPackInput,
    QuotaProfileInput,
    RejectionInput,
    TeamBudgetInput,
)
from services.gateway.entrypoints import request_bodies

BODIES = [
    (request_bodies.ENVIRONMENT_REQUEST, EnvironmentRequestInput),
    (request_bodies.EXTENSION, ExtensionInput),
    (request_bodies.REJECTION, RejectionInput),
    (request_bodies.ENVIRONMENT_CLASS, EnvironmentClassInput),
    (request_bodies.QUOTA_PROFILE, QuotaProfileInput),
    (request_bodies.POLICY_PACK, PolicyPackInput),
    (request_bodies.TEAM_BUDGET, TeamBudgetInput),
]


def documented_schema(body: RequestBody) -> dict[str, Any]:
    schema: dict[str, Any] = body.content["application/json"].schema  # type: ignore[assignment]
    return schema


@pytest.mark.parametrize(("body", "model"), BODIES, ids=[model.__name__ for _, model in BODIES])
def test_the_documented_example_is_accepted_by_the_model(body: RequestBody, model: type[BaseModel]) -> None:
    [example] = documented_schema(body)["examples"]
    model.model_validate(example)


@pytest.mark.parametrize(("body", "model"), BODIES, ids=[model.__name__ for _, model in BODIES])
def test_the_documented_schema_carries_the_models_rules(body: RequestBody, model: type[BaseModel]) -> None:
    schema = documented_schema(body)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {field.alias or name for name, field in model.model_fields.items()}
    assert set(schema.get("required", [])) == {
        field.alias or name for name, field in model.model_fields.items() if field.is_required()
    }
