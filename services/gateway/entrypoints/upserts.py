"""PUT of a catalog item (class, quota profile, policy pack): 201 when new, 200 when replaced.

The owning service (policy) validates the whole body and names each failing field (422);
the gateway only checks that the body is one JSON object (400 otherwise).
"""

from __future__ import annotations

from typing import Any

from litestar import Response
from litestar.openapi import ResponseSpec

from services.gateway.entrypoints.openapi import BODY_ERRORS, error_responses


def upserted(item: Any, created: bool) -> Response[Any]:
    return Response(item, status_code=201 if created else 200)


def upsert_responses(model: type[Any]) -> dict[int, ResponseSpec]:
    return {
        200: ResponseSpec(data_container=model, description="Replaced", generate_examples=False),
        201: ResponseSpec(data_container=model, description="Created", generate_examples=False),
        **error_responses(*BODY_ERRORS),
    }
