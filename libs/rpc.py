"""Request/reply between the gateway and the services, on the NATS services ("micro") API.

Every service registers its verbs (:data:`contracts.rpc.RPC_VERBS`) as endpoints of one
micro service, so ``nats micro ls``/``info``/``stats`` show them to operators. Endpoints are
queue-grouped: replicas share the load. Replies follow ``{ok, data}`` / ``{ok: false, error}``
(:mod:`contracts.rpc`); unexpected exceptions become ``internal`` without details, so no
stack trace, DSN or host crosses the bus.

Messages are decoded once, straight into the verb's types; client bodies inside them are
pydantic models (:mod:`contracts.inputs`) validated during that decoding, and a body that
fails is answered ``validation`` naming every failing field, as the gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import nats.errors
import psycopg
import pydantic
from nats.aio.client import Client as NatsClient
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind

from contracts.inputs import decode_input, encode_input
from contracts.rpc import KIT, RpcErrorBody, RpcReply, RpcVerb
from libs.errors import FieldError, PlatformError, Unavailable, ValidationFailed, validation_failed
from libs.telemetry import RPC_REPLIES_NOT_SENT, RPC_SECONDS, Stopwatch, inject_headers, span_from_headers

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ReplyT = TypeVar("ReplyT")
RpcHandler = Callable[[RequestT], Awaitable[ReplyT]]
# What else is wrong with a message whose client body failed its model: the rules the model
# cannot judge alone (intake's catalog), so one answer still names every failing field.
MoreProblems = Callable[[bytes], Awaitable[list[FieldError]]]
_ENCODER = msgspec.json.Encoder(enc_hook=encode_input)


# Headers JetStream puts on what it delivers or republishes (and NATS on status messages).
_DELIVERY_HEADERS = ("Nats-Stream", "Nats-Sequence", "Status")


def is_request(request: Request) -> bool:
    """Whether a message on an RPC subject is a caller's request, not a stream's delivery.

    Any identity that may create a push consumer chooses where it delivers, an RPC subject
    included (the server cannot refuse that: docs/security.md). Such a delivery must neither
    be handled nor answered: an answer to its ``$JS.ACK`` reply subject acknowledges it.
    """
    reply = request._msg.reply
    headers = request.headers or {}
    return (
        bool(reply) and not reply.startswith("$JS.ACK.") and not any(h in headers for h in _DELIVERY_HEADERS)
    )


def micro_name(service: str) -> str:
    """The name ``service`` registers as a micro service (``nats micro info platform-intake``)."""
    return f"platform-{service.replace('_', '-')}"


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
        self._routes: dict[str, _Route] = {}
        self._service: Service | None = None
        self._slots = asyncio.Semaphore(max_concurrency)
        self.deadline = deadline
        self._tasks: set[asyncio.Task[None]] = set()

    def route(
        self,
        verb: RpcVerb[RequestT, ReplyT],
        handler: RpcHandler[RequestT, ReplyT],
        *,
        more_problems: MoreProblems | None = None,
    ) -> None:
        """Serve ``verb`` (one of this service's, or a kit verb) with ``handler``;
        ``more_problems`` adds to the answer for a client body that fails its model."""
        if verb.service not in (self.service_name, KIT):
            raise ValueError(f"{verb.key} is not a verb of the {self.service_name} service")
        decoder = msgspec.json.Decoder(verb.request_type, dec_hook=decode_input)
        self._routes[verb.name] = _Route(decoder, handler, more_problems)

    async def start(self) -> None:
        self._service = await add_service(
            self.nc,
            name=micro_name(self.service_name),
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
            if not is_request(request):
                log.warning(
                    "dropped a message on an RPC subject that is no request (a stream delivery?)",
                    extra={"fields": {"verb": verb, "subject": request.subject}},
                )
                return
            # The task waits for its slot itself, so its deadline counts from arrival; waiting
            # here would hold up the subscription and leave later requests' clocks unstarted.
            arrived = asyncio.get_running_loop().time()
            task = asyncio.create_task(self._serve(verb, request, arrived))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return dispatch

    async def _in_slot(self, handler: RpcHandler[Any, Any], message: Any) -> Any:
        async with self._slots:
            return await handler(message)

    async def _serve(self, verb: str, request: Request, arrived: float) -> None:
        route = self._routes[verb]
        watch = Stopwatch()
        code = "ok"
        with span_from_headers(
            f"rpc {self.service_name}.{verb}",
            request.headers,
            SpanKind.SERVER,
            **{"rpc.system": "nats", "rpc.service": self.service_name, "rpc.method": verb},
        ):
            try:
                message = _decoded(route, request.data)
                data = await self._within_deadline(lambda: self._in_slot(route.handler, message), arrived)
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
                reply = await self._invalid_message(verb, exc, request.data, arrived)
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
        await self._respond(verb, request, reply)

    async def _respond(self, verb: str, request: Request, reply: RpcReply[Any]) -> None:
        """Send ``reply``; when it cannot be sent (larger than the server's ``max_payload``, or
        any other publish error), log it without its payload and send a small error instead,
        so the caller is told at once rather than waiting out its timeout for an answer that
        never comes."""
        payload = _ENCODER.encode(reply)
        limit = int(getattr(self.nc, "max_payload", 0) or 0)
        try:
            if limit and len(payload) > limit:
                raise nats.errors.MaxPayloadError
            await request.respond(payload)
            return
        except nats.errors.MaxPayloadError:
            error = reply_too_large(self.service_name, len(payload), limit)
            code = "reply_too_large"
        except Exception as exc:
            error = RpcErrorBody(code="internal", message="the reply could not be sent")
            code = type(exc).__name__
        log.error(
            "rpc: the reply could not be sent; the caller gets an error instead",
            extra={
                "fields": {"verb": verb, "reply_bytes": len(payload), "max_payload": limit, "reason": code}
            },
        )
        RPC_REPLIES_NOT_SENT.labels(self.service_name, verb).inc()
        # The error is a few hundred bytes: if even that cannot be sent (connection closed),
        # the caller's timeout is all that is left.
        with contextlib.suppress(Exception):
            await request.respond(_ENCODER.encode(RpcReply(ok=False, error=error)))

    async def _invalid_message(
        self, verb: str, exc: msgspec.ValidationError, data: bytes, arrived: float
    ) -> RpcReply[Any]:
        """A message that does not fit its type; a client body inside it that fails its model is
        answered with every failing field (pydantic's error is the cause of msgspec's), the
        route's ``more_problems`` included for fields the model passed."""
        if not isinstance(exc.__cause__, pydantic.ValidationError):
            return RpcReply(ok=False, error=RpcErrorBody(code="validation", message=str(exc)))
        failed = validation_failed(exc.__cause__)
        failing = {detail["field"] for detail in failed.details}
        more = [
            problem
            for problem in await self._more_problems(verb, data, arrived)
            if problem.field not in failing
        ]
        failed = _with(failed, more)
        return RpcReply(
            ok=False, error=RpcErrorBody(code="validation", message=failed.message, details=failed.details)
        )

    async def _more_problems(self, verb: str, data: bytes, arrived: float) -> list[FieldError]:
        """The route's ``more_problems`` (a database read, say), held to a slot and the deadline
        like any handler; when it cannot answer, the model's own answer goes out alone."""
        more_problems = self._routes[verb].more_problems
        if more_problems is None:
            return []
        try:
            return await self._within_deadline(lambda: self._in_slot(more_problems, data), arrived)  # type: ignore[no-any-return]
        except Exception as exc:
            log.warning(
                "rpc: the invalid message is answered without its catalog problems",
                extra={"fields": {"verb": verb, "error_type": type(exc).__name__}},
            )
            return []

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


def reply_too_large(service: str, size: int, limit: int) -> RpcErrorBody:
    """The error sent instead of a reply of ``size`` bytes over the bus's ``limit``."""
    return RpcErrorBody(
        code="reply_too_large",
        message=(
            f"the {service} service's reply was too large to send ({megabytes(size)} > {megabytes(limit)});"
            " ask for a smaller page (a lower limit) where the call takes one; a change it asked"
            " for was made all the same: read the resource to see it"
        ),
        details={"reply_bytes": size, "max_payload": limit},
    )


def megabytes(size: int) -> str:
    """``size`` bytes as people read it: 1.4 MB, 1 MB, 64 KB."""
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class _Route:
    decoder: msgspec.json.Decoder[Any]
    handler: RpcHandler[Any, Any]
    more_problems: MoreProblems | None


def _decoded(route: _Route, data: bytes) -> Any:
    """``data`` as the route's request type. Bytes that are no JSON, or nest deeper than the
    decoder can follow (msgspec and pydantic recurse), are a malformed message."""
    try:
        return route.decoder.decode(data)
    except msgspec.ValidationError:
        raise  # JSON that does not fit the type: answered field by field
    except (msgspec.DecodeError, RecursionError):
        raise ValidationFailed("malformed message") from None


def _with(failed: ValidationFailed, more: list[FieldError]) -> ValidationFailed:
    if not more:
        return failed
    what = failed.message.partition(":")[0]
    details = [*failed.details, *(problem.as_dict() for problem in more)]
    fields = ", ".join(dict.fromkeys(detail["field"] for detail in details))
    return ValidationFailed(f"{what}: {fields}", details=details)


class _DeadlineExceeded(Exception):
    """A request ran into :attr:`RpcServer.deadline`; its handler was cancelled."""


class RpcClient:
    """Calls service verbs; error replies raise :class:`RpcError` with the service's code.

    :meth:`ask` is the typed call (the reply decoded into the verb's reply type);
    :meth:`call` answers the reply's data as plain JSON values, for tools and tests.
    """

    def __init__(self, nc: NatsClient, prefix: str, timeout: float = 5.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout
        self._reply_decoders: dict[str, msgspec.json.Decoder[Any]] = {}

    async def ask(
        self,
        verb: RpcVerb[RequestT, ReplyT],
        message: RequestT,
        *,
        service: str | None = None,
        timeout: float | None = None,
    ) -> ReplyT:
        """``verb``'s reply to ``message``; ``service`` names the service asked for a kit verb."""
        return await self._ask(verb, message, service, timeout)

    async def ask_unvalidated(self, verb: RpcVerb[Any, ReplyT], message: Mapping[str, Any]) -> ReplyT:
        """``verb``'s reply to ``message`` given as plain JSON values, not the verb's request
        type: for a client body its model refused, which the service is shown as sent so that
        its ``validation`` answer names every failing field (its own rules' beside the model's)."""
        return await self._ask(verb, message, None, None)

    async def _ask(
        self, verb: RpcVerb[Any, ReplyT], message: Any, service: str | None, timeout: float | None
    ) -> ReplyT:
        target = service or verb.service
        data = await self._request(target, verb.name, message, timeout)
        decoder = self._reply_decoders.get(verb.key)
        if decoder is None:
            decoder = self._reply_decoders[verb.key] = msgspec.json.Decoder(RpcReply[verb.reply_type])  # type: ignore[name-defined]
        try:
            reply = decoder.decode(data)
        except msgspec.ValidationError as exc:
            # A reply this side cannot represent is a bug on one side; callers get a generic
            # internal error and the log names the verb, not the payload.
            raise RpcError("internal", f"the {target} service sent an unexpected {verb.name} reply") from exc
        except msgspec.DecodeError as exc:
            raise RpcError("internal", f"the {target} service sent a malformed reply") from exc
        return _reply_data(reply)  # type: ignore[no-any-return]

    async def call(self, service: str, verb: str, message: Any, timeout: float | None = None) -> Any:
        data = await self._request(service, verb, message, timeout)
        try:
            reply = msgspec.json.decode(data, type=RpcReply[Any])
        except msgspec.DecodeError as exc:
            raise RpcError("internal", f"the {service} service sent a malformed reply") from exc
        return _reply_data(reply)

    async def _request(self, service: str, verb: str, message: Any, timeout: float | None) -> bytes:
        subject = f"{self.prefix}.{service}.{verb}"
        try:
            reply_msg = await self.nc.request(
                subject,
                _ENCODER.encode(message),
                timeout=timeout or self.timeout,
                headers=inject_headers(),
            )
        except (
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
            nats.errors.ConnectionClosedError,
        ) as exc:
            raise Unavailable(f"the {service} service is not answering") from exc
        return reply_msg.data


def message_fields(message: bytes) -> dict[str, Any]:
    """A request message as plain JSON values ({} if it is no JSON object): what a route's
    ``more_problems`` reads, since the message failed its type."""
    try:
        fields = msgspec.json.decode(message)
    except (msgspec.DecodeError, RecursionError):
        return {}
    return fields if isinstance(fields, dict) else {}


def _reply_data(reply: RpcReply[Any]) -> Any:
    if reply.ok:
        return reply.data
    error = reply.error or RpcErrorBody(code="internal", message="unknown error")
    raise RpcError(error.code, error.message, error.details)
