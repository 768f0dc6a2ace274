"""What a handler reads from the request itself: the body as its input model, the ``If-Match`` version.

Bodies are read here rather than by Litestar: a malformed one is answered 400 naming its
exact problem (not JSON, not an object, too large, nested too deeply), one that trickles in
past ``PLATFORM_HTTP_READ_TIMEOUT_SECONDS`` 408, and one its :mod:`contracts.inputs` model
refuses 422 with every failing field named the way the services name them
(:func:`libs.errors.validation_failed`). The API reference shows the same models
(:mod:`.request_bodies`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, TypeVar

import msgspec
import pydantic
from litestar import Request
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import HeaderParameter

from libs.errors import json_type, validation_failed
from services.gateway.domain.errors import BadRequest, HttpError
from services.gateway.settings import GatewaySettings

Input = TypeVar("Input", bound=pydantic.BaseModel)


async def read_input(request: Request[Any, Any, Any], settings: GatewaySettings, model: type[Input]) -> Input:
    """The request body as ``model``: 400 when it is no JSON object, 422 naming every field
    the model refuses."""
    body = await read_json_object(request, settings)
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        raise validation_failed(exc) from None


async def read_json_object(request: Request[Any, Any, Any], settings: GatewaySettings) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong with it."""
    try:
        # uvicorn has no body read deadline; a client trickling bytes would hold the handler.
        async with asyncio.timeout(settings.http_read_timeout_seconds):
            raw = await request.body()
    except RequestEntityTooLarge:
        raise BadRequest(
            f"the request body is larger than {settings.max_body_bytes} bytes",
            details=[{"field": "body", "message": f"must be at most {settings.max_body_bytes} bytes"}],
        ) from None
    except TimeoutError:
        raise HttpError(408, "timeout", "the request body was not received in time") from None
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object", details=_body_problem("is empty"))
    try:
        value = msgspec.json.decode(raw)
    except RecursionError:
        # Thousands of nested brackets fit in a small body; msgspec gives up on the depth.
        raise BadRequest(
            "the request body is nested too deeply", details=_body_problem("is nested too deeply")
        ) from None
    except ValueError as exc:  # msgspec.DecodeError/ValidationError (e.g. 1e400), invalid UTF-8
        raise BadRequest(
            f"the request body is not valid JSON: {_json_problem(exc)}",
            details=_body_problem("is not valid JSON"),
        ) from None
    if not isinstance(value, dict):
        problem = f"must be a JSON object, not {json_type(value)}"
        raise BadRequest(f"the request body {problem}", details=_body_problem(problem))
    return value


def _json_problem(exc: ValueError) -> str:
    """msgspec's "JSON is malformed: invalid character (byte 4)" as "invalid character at byte 4"."""
    text = str(exc).removeprefix("JSON is malformed: ")
    text = re.sub(r" \(byte (\d+)\)$", r" at byte \1", text)
    return text[:1].lower() + text[1:]


def _body_problem(message: str) -> list[dict[str, str]]:
    return [{"field": "body", "message": message}]


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: "3"`` (the request's ``ETag``; or ``3``, ``W/"3"``) -> 3: the version the
    caller last read (none, or ``*``: any version, the change is unconditional)."""
    if value is None or value.strip() in {"", "*"}:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise BadRequest(
            'If-Match must be the request\'s version (e.g. "3")',
            details=[{"field": "If-Match", "message": "must be a request version number"}],
        )
    return int(text)


IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Apply only if the request's `version` is still this one (else 409)",
        max_length=32,
    ),
]
