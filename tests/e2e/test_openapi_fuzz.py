"""The served OpenAPI document tells the truth: a property-based fuzzer drives every operation.

Schemathesis reads ``/schema/openapi.json`` from the running gateway (real socket, real
services behind it) and sends generated requests, valid and invalid, as an admin and as a
requester of one team. Each answer must be no server error and must match the document:
a documented status, content type, headers and body; a secured operation that succeeds
must refuse the same request without a token. Small and seeded (a handful of examples per
operation, derandomized), so a failure replays the same way.

Generated bodies rarely pass the catalog's rules, so the create route's successes (201, the
idempotent replay's 200, the dry run's 200) are reached on purpose: its documented
examples are sent as they are and checked the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from tests.support.stack import RunningStack, mint_token

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.ignored_auth,
]
CALLERS = {
    "admin": ("root@example.com", "admin", None),
    "requester": ("alice@example.com", "requester", ["payments"]),
}
CREATE = ("/v1/environment-requests", "POST")
AN_OBJECT = {"application/json": {"schema": {"type": "object"}}}


SMALL_AND_SEEDED = settings(
    max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

Check = tuple[str, Callable[[], None]]


def contradictions_of(runs: Iterable[Check]) -> list[str]:
    """Run every check, whatever the others did, and report each one that failed.

    Schemathesis reports contradictions as a ``FailureGroup``, a ``BaseExceptionGroup``
    that ``except Exception`` does not catch (hypothesis may group several failures the
    same way); anything else a check raises is reported too.
    """
    contradictions = []
    for label, run in runs:
        try:
            run()
        except (Exception, BaseExceptionGroup) as failed:
            contradictions.append(f"{label}: {failed}")
    return contradictions


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    """``SMALL_AND_SEEDED`` cases of ``operation``, each answer checked against the document."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @SMALL_AND_SEEDED
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    try:
        run()
    except Unsatisfiable:
        if mode is not GenerationMode.NEGATIVE:
            raise
        # An operation without inputs has no invalid request.


def fuzzed(operations: list[Any], headers: dict[str, str]) -> Iterable[Check]:
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            yield f"{operation.label} ({mode.value})", lambda o=operation, m=mode: fuzz(o, m, headers)


def sent_as_documented(operation: Any, headers: dict[str, str], caller: str) -> Iterable[Check]:
    """Each documented example of the create route as a dry run, a creation and an
    idempotent replay, each answer checked against the document and its status asserted
    (so the success responses are really reached)."""
    body_schema = operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
    examples = body_schema["examples"]
    assert examples, "the create route documents an example body"
    for number, example in enumerate(examples):
        key = {"Idempotency-Key": f"fuzz-{caller}-{uuid.uuid4().hex}"}
        sends = [
            ("dry run", {"dry_run": "true"}, {}, 200),
            ("create", {}, key, 201),
            ("idempotent replay", {}, key, 200),
        ]
        for what, query, extra_headers, status in sends:
            case = operation.Case(body=example, query=query, headers=extra_headers)
            label = f"{operation.label} example {number} ({what})"
            yield label, lambda c=case, s=status: expect(c, s, headers)


def expect(case: Any, status: int, headers: dict[str, str]) -> None:
    response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
    assert response.status_code == status, (response.status_code, response.text)


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_every_answer_matches_the_document(stack: RunningStack, caller: str) -> None:
    actor, role, teams = CALLERS[caller]
    headers = {"Authorization": f"Bearer {mint_token(actor, role, teams)}"}
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/schema/openapi.json")
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # every operation is well-formed
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) > 20
    path, method = CREATE
    contradictions = contradictions_of(
        [*sent_as_documented(schema[path][method], headers, caller), *fuzzed(operations, headers)]
    )
    assert not contradictions, "\n\n".join(contradictions)


def test_every_contradiction_is_reported_not_only_the_first() -> None:
    """Two operations whose answers contradict the document: both are reported (a
    ``FailureGroup`` is no ``Exception``, so a plain ``except Exception`` let the first one
    end the run)."""
    schema = schemathesis.openapi.from_dict(
        {
            "openapi": "3.1.0",
            "info": {"title": "two lies", "version": "1"},
            "paths": {
                path: {"get": {"responses": {"200": {"description": "ok", "content": AN_OBJECT}}}}
                for path in ("/a", "/b")
            },
        }
    )

    def lie(path: str) -> Callable[[], None]:
        def validate() -> None:
            case = schema[path]["GET"].Case()
            answer = httpx.Response(
                200, json=["not", "an", "object"], request=httpx.Request("GET", f"http://gateway{path}")
            )
            answer.elapsed = timedelta(0)  # set by the transport on a real answer; schemathesis reads it
            case.validate_response(answer, checks=CHECKS)

        return validate

    contradictions = contradictions_of([("GET /a", lie("/a")), ("GET /b", lie("/b"))])
    assert [line.split(":")[0] for line in contradictions] == ["GET /a", "GET /b"]
    assert all("schema" in line.lower() for line in contradictions), contradictions
