"""The response deadline: a handler that does not answer in time becomes a 503, not a hung client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from services.gateway.entrypoints.middleware import ResponseDeadlineMiddleware


async def call(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/whoami", "headers": []}
    await ResponseDeadlineMiddleware(0.2).handle(scope, receive, send, app)  # type: ignore[arg-type]
    return sent


async def test_a_slow_handler_gets_503_with_retry_after() -> None:
    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)

    start, body = await call(stuck)
    assert start["status"] == 503
    assert (b"retry-after", b"5") in start["headers"]
    assert json.loads(body["body"])["code"] == "unavailable"


async def test_a_fast_handler_is_untouched() -> None:
    async def fast(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    start, _ = await call(fast)
    assert start["status"] == 204
