"""A message that fails its model is always answered, in time, with the model's fields.

A kit service with a one-connection pool serves a verb whose client body is a pydantic model
and whose ``more_problems`` reads the database (as intake's catalog check does). However
that read fares (the pool exhausted by a burst, the query failing), every caller hears
``validation`` naming the model's fields before it gives up; and a message nested too deep
to decode is ``malformed``, not a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client as NatsClient

from contracts.inputs import ExtensionInput
from contracts.rpc import RpcVerb
from libs.errors import FieldError
from libs.rpc import RpcClient, RpcError
from libs.service_kit import ServiceKit
from libs.settings import PlatformSettings, load_settings
from libs.telemetry import REGISTRY

CALLER_TIMEOUT = 2.0


class Extend(msgspec.Struct, frozen=True, kw_only=True):
    body: ExtensionInput
    slow_catalog: bool = True


class Extended(msgspec.Struct, frozen=True):
    ttl_hours: int


EXTEND = RpcVerb("picky", "extend", Extend, Extended)


@pytest.fixture
async def kit(platform_env: dict[str, str]) -> AsyncIterator[ServiceKit]:
    settings = load_settings(
        PlatformSettings,
        {
            **platform_env,
            "PLATFORM_POSTGRES_POOL_MAX": "1",
            "PLATFORM_POSTGRES_POOL_WAIT_SECONDS": "0.3",
            "PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS": "1.5",
        },
    )
    service = await ServiceKit.open(service="picky", schema="picky", settings=settings, package=None)

    async def extend(command: Extend) -> Extended:
        return Extended(ttl_hours=command.body.ttl_hours)

    async def catalog_problems(message: bytes) -> list[FieldError]:
        """Holds the only connection a while, or fails outright, like a catalog under load."""
        slow = msgspec.json.decode(message).get("slow_catalog", True)
        async with service.pool.connection() as conn:
            await conn.execute("SELECT pg_sleep(0.4)" if slow else "SELECT * FROM no_such_catalog")
        return [FieldError("region", "not one of the class's regions")]

    service.route(EXTEND, extend, more_problems=catalog_problems)
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def nc(platform_env: dict[str, str]) -> AsyncIterator[NatsClient]:
    client = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield client
    await client.close()


def _validation_answers() -> float:
    return (
        REGISTRY.get_sample_value(
            "platform_rpc_seconds_count", {"service": "picky", "verb": "extend", "code": "validation"}
        )
        or 0.0
    )


async def _ask(rpc: RpcClient, message: object) -> RpcError:
    with pytest.raises(RpcError) as answer:
        await rpc.call(EXTEND.service, EXTEND.name, message, timeout=CALLER_TIMEOUT)
    return answer.value


async def test_a_burst_of_invalid_bodies_is_answered_when_the_catalog_check_cannot_get_a_connection(
    kit: ServiceKit, nc: NatsClient
) -> None:
    rpc = RpcClient(nc, kit.settings.rpc_prefix)
    before = _validation_answers()

    answers = await asyncio.gather(*(_ask(rpc, {"body": {"ttl_hours": "24"}}) for _ in range(8)))

    assert {answer.code for answer in answers} == {"validation"}
    for answer in answers:
        assert "ttl_hours" in {detail["field"] for detail in answer.details}
    # The first callers got the catalog's word too; the rest the model's alone, in time.
    assert any(len(answer.details) == 2 for answer in answers)
    assert _validation_answers() - before == 8


async def test_a_failing_catalog_check_leaves_the_models_answer(kit: ServiceKit, nc: NatsClient) -> None:
    rpc = RpcClient(nc, kit.settings.rpc_prefix)

    answer = await _ask(rpc, {"body": {"ttl_hours": 0}, "slow_catalog": False})

    assert answer.code == "validation"
    assert answer.details == [{"field": "ttl_hours", "message": "must be at least 1"}]


async def test_a_message_nested_too_deep_is_malformed(kit: ServiceKit, nc: NatsClient) -> None:
    rpc = RpcClient(nc, kit.settings.rpc_prefix)
    subject = f"{kit.settings.rpc_prefix}.picky.extend"

    reply = await nc.request(subject, b'{"body": ' + b"[" * 5000 + b"]" * 5000 + b"}", timeout=CALLER_TIMEOUT)

    assert msgspec.json.decode(reply.data)["error"] == {
        "code": "validation",
        "message": "malformed message",
        "details": None,
    }
    # The service still answers.
    assert (await _ask(rpc, {"body": {}, "slow_catalog": False})).details == [
        {"field": "ttl_hours", "message": "is required"}
    ]
