"""A body its model refuses at the gateway is a 422 whatever the service asked about it says.

The gateway shows such a body to the owning service so that one answer also names what only
the service can judge. When the service cannot answer that in time (its ``unavailable``
reply past its deadline, as a saturated policy gives), the client still gets the gateway's
own 422 naming the model's fields: the body is wrong either way, and a 503 would invite a
retry of the same bad body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.msg import Msg

from contracts.rpc import UPSERT_CLASS, VALIDATE_REQUEST
from tests.support.api_flows import request_body
from tests.support.gateway import GatewayStack, auth, gateway_stack

ADMIN = auth("admin")
TOO_BUSY = msgspec.json.encode(
    {
        "ok": False,
        "error": {"code": "unavailable", "message": "the service is too busy to answer in time; retry"},
    }
)


@pytest.fixture
async def stack(nats_url: str, isolation: Any) -> AsyncIterator[GatewayStack]:
    """Policy and intake answering every body ``unavailable``, as a service does whose
    deadline passed before it could look at the catalog."""

    async def too_busy(message: Msg) -> None:
        await message.respond(TOO_BUSY)

    async with gateway_stack(nats_url, isolation.rpc_prefix) as running:
        prefix = running.settings.rpc_prefix
        subscriptions = [
            await running.nc.subscribe(f"{prefix}.{verb.key}", cb=too_busy)
            for verb in (UPSERT_CLASS, VALIDATE_REQUEST)
        ]
        await running.nc.flush()
        try:
            yield running
        finally:
            for subscription in subscriptions:
                await subscription.unsubscribe()


def fields(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {detail["field"] for detail in response.json()["details"]}


async def test_a_class_body_stays_422_when_policy_is_too_busy_to_add_its_refusals(
    http: httpx.AsyncClient,
) -> None:
    body = {"allowed_regions": ["us-east-1"], "max_ttl_hours": 0, "quota_profile": "small", "colour": 1}
    answer = await http.put("/v1/environment-classes/preview", json=body, headers=ADMIN)
    assert fields(answer) == {"max_ttl_hours", "colour"}


async def test_a_create_body_stays_422_when_intake_is_too_busy_to_add_its_refusals(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post(
        "/v1/environment-requests", json={**request_body(), "ttl_hours": 0}, headers=auth("requester")
    )
    assert fields(answer) == {"ttl_hours"}
