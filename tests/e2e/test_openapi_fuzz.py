"""The served OpenAPI document tells the truth: a property-based fuzzer drives every operation.

Schemathesis reads ``/schema/openapi.json`` from the running gateway (real socket, real
services behind it) and sends generated requests, valid and invalid, as an admin and as a
requester of one team. Each answer must be no server error and must match the document:
a documented status, content type, headers and body. Small and seeded (a handful of
examples per operation, derandomized), so a failure replays the same way.
"""

from __future__ import annotations

from typing import Any

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
]
CALLERS = {
    "admin": ("root@example.com", "admin", None),
    "requester": ("alice@example.com", "requester", ["payments"]),
}


SMALL_AND_SEEDED = settings(
    max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:
    """``SMALL_AND_SEEDED`` cases of ``operation``, each answer checked against the document."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @SMALL_AND_SEEDED
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    run()


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_every_answer_matches_the_document(stack: RunningStack, caller: str) -> None:
    actor, role, teams = CALLERS[caller]
    headers = {"Authorization": f"Bearer {mint_token(actor, role, teams)}"}
    schema = schemathesis.openapi.from_url(f"{stack.api_url}/schema/openapi.json")
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # every operation is well-formed
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) > 20
    contradictions = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, headers)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid request
            except Exception as exc:  # every operation is fuzzed; all contradictions are reported
                contradictions.append(f"{operation.label} ({mode.value}): {exc}")
    assert not contradictions, "\n\n".join(contradictions)
