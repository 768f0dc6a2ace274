"""Request/reply between the gateway and the services, on the NATS services ("micro") API.

Every service registers its verbs as endpoints of one micro service, so
``nats micro ls``/``info``/``stats`` show them to operators. Endpoints are queue-grouped:
replicas share the load. Replies follow ``{ok, data}`` / ``{ok: false, error}``
(:mod:`contracts.rpc`); unexpected exceptions become ``internal`` without details, so no
stack trace, DSN or host crosses the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import psycopg
from nats.aio.client import Client as NatsClient
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from contracts.rpc import RpcErrorBody, RpcReply
from libs.errors import PlatformError, Unavailable
from libs.telemetry import RPC_SECONDS, Stopwatch, inject_headers, span_from_headers

log = logging.getLogger(__name__)

RpcHandler = Callable[[Any], Awaitable[Any]]


class RpcError(PlatformError):
    """An error reply from a service, raised on the calling side."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.code = code


class RpcServer:
    """Registers verbs of one service as NATS micro endpoints.

    nats-py runs a subscription's callbacks one at a time, so each request is handled in
    its own task (bounded by ``max_concurrency``); otherwise one slow database call would
    queue every other caller behind it.

    ``deadline`` bounds a request from its arrival (time spent waiting for a slot or a
    database connection included): past it the handler is cancelled, its transaction rolls
    back, and the caller is answered ``unavailable``. Set below the callers' own timeout, it
    means a caller that gave up never sees its command commit afterwards.
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        service: str,
        prefix: str,
        version: str = "0.1.0",
        max_concurrency: int = 64,
        deadline: float | None = None,
    ) -> None:
        self.nc = nc
        self.service_name = service
        self.prefix = prefix
        self.version = version
        self._routes: dict[str, tuple[type[Any], RpcHandler]] = {}
        self._service: Service | None = None
        self._slots = asyncio.Semaphore(max_concurrency)
        self.deadline = deadline
        self._tasks: set[asyncio.Task[None]] = set()

    def route(self, verb: str, message_type: type[Any], handler: RpcHandler) -> None:
        self._routes[verb] = (message_type, handler)

    async def start(self) -> None:
        self._service = await add_service(
            self.nc,
            name=f"platform-{self.service_name.replace('_', '-')}",
            version=self.version,
            description=f"platform-control-plane {self.service_name} commands and queries",
        )
        group = self._service.add_group(name=f"{self.prefix}.{self.service_name}")
        for verb in self._routes:
            await group.add_endpoint(name=verb, handler=self._dispatcher(verb))
        # Round-trip to the server so the subscriptions exist before anyone is told we started.
        await self.nc.flush()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, then let the ones in progress answer."""
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    def _dispatcher(self, verb: str) -> Callable[[Request], Awaitable[None]]:
        async def dispatch(request: Request) -> None:
            # The task waits for its slot itself, so its deadline counts from arrival; waiting
            # here would hold up the subscription and leave later requests' clocks unstarted.
            arrived = asyncio.get_running_loop().time()
            task = asyncio.create_task(self._serve(verb, request, arrived))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return dispatch

    async def _in_slot(self, handler: RpcHandler, message: Any) -> Any:
        async with self._slots:
            return await handler(message)

    async def _serve(self, verb: str, request: Request, arrived: float) -> None:
        message_type, handler = self._routes[verb]
        watch = Stopwatch()
        code = "ok"
        with span_from_headers(f"rpc {self.service_name}.{verb}", request.headers):
            try:
                message = msgspec.json.decode(request.data, type=message_type)
                data = await self._within_deadline(lambda: self._in_slot(handler, message), arrived)
                reply = RpcReply(ok=True, data=data)
            except _DeadlineExceeded:
                code = "unavailable"
                log.warning("rpc handler: deadline exceeded", extra={"fields": {"verb": verb}})
                reply = RpcReply(
                    ok=False,
                    error=RpcErrorBody(
                        code="unavailable", message="the service is too busy to answer in time; retry"
                    ),
                )
            except msgspec.ValidationError as exc:
                code = "validation"
                reply = RpcReply(ok=False, error=RpcErrorBody(code="validation", message=str(exc)))
            except msgspec.DecodeError:
                code = "validation"
                reply = RpcReply(ok=False, error=RpcErrorBody(code="validation", message="malformed message"))
            except PlatformError as exc:
                code = exc.code
                reply = RpcReply(
                    ok=False,
                    error=RpcErrorBody(code=exc.code, message=exc.message, details=exc.details),  # type: ignore[arg-type]
                )
            except psycopg.DataError:
                # A value the database cannot take (a NUL character, an out-of-range number):
                # bad input that slipped past validation, not a bug to hide behind a 500.
                code = "validation"
                reply = RpcReply(
                    ok=False,
                    error=RpcErrorBody(
                        code="validation",
                        message="a value in the request is not acceptable (control characters?)",
                    ),
                )
            except psycopg.OperationalError as exc:
                # The database is restarting or unreachable (or a pooled connection died with
                # it): a condition to retry, not a bug. Callers get 503 with Retry-After.
                code = "unavailable"
                log.warning(
                    "rpc handler: database unavailable",
                    extra={"fields": {"verb": verb, "error_type": type(exc).__name__}},
                )
                reply = RpcReply(
                    ok=False,
                    error=RpcErrorBody(
                        code="unavailable", message="the service's database is unavailable; retry"
                    ),
                )
            except Exception as exc:
                code = "internal"
                log.exception(
                    "rpc handler crashed",
                    extra={"fields": {"verb": verb, "error_type": type(exc).__name__}},
                )
                reply = RpcReply(ok=False, error=RpcErrorBody(code="internal", message="internal error"))
        RPC_SECONDS.labels(self.service_name, verb, code).observe(watch.elapsed())
        with contextlib.suppress(Exception):
            await request.respond(msgspec.json.encode(reply))

    async def _within_deadline(self, call: Callable[[], Awaitable[Any]], arrived: float) -> Any:
        if self.deadline is None:
            return await call()
        remaining = self.deadline - (asyncio.get_running_loop().time() - arrived)
        if remaining <= 0:
            raise _DeadlineExceeded  # late before it even started: the caller has given up
        try:
            return await asyncio.wait_for(call(), remaining)
        except TimeoutError:
            raise _DeadlineExceeded from None


class _DeadlineExceeded(Exception):
    """A request ran into :attr:`RpcServer.deadline`; its handler was cancelled."""


class RpcClient:
    """Calls service verbs; error replies raise :class:`RpcError` with the service's code."""

    def __init__(self, nc: NatsClient, prefix: str, timeout: float = 5.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout

    async def call(self, service: str, verb: str, message: Any, timeout: float | None = None) -> Any:
        subject = f"{self.prefix}.{service}.{verb}"
        try:
            reply_msg = await self.nc.request(
                subject,
                msgspec.json.encode(message),
                timeout=timeout or self.timeout,
                headers=inject_headers(),
            )
        except (
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
            nats.errors.ConnectionClosedError,
        ) as exc:
            raise Unavailable(f"the {service} service is not answering") from exc
        try:
            reply = msgspec.json.decode(reply_msg.data, type=RpcReply)
        except msgspec.DecodeError as exc:
            raise RpcError("internal", f"the {service} service sent a malformed reply") from exc
        if reply.ok:
            return reply.data
        error = reply.error or RpcErrorBody(code="internal", message="unknown error")
        raise RpcError(error.code, error.message, error.details)
