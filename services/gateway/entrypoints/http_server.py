"""The gateway's HTTP/1.1 connection handling: uvicorn's h11 protocol with the limits it lacks.

uvicorn arms its keep-alive timeout only once a response has been sent, so a connection
that sends nothing, or only part of its request headers, was held for ever; and h11 reads a
request carrying both ``Content-Length`` and ``Transfer-Encoding: chunked`` by the chunked
framing, which lets a front proxy that trusts ``Content-Length`` and this server disagree on
where the request ends (request smuggling). :class:`GatewayHttpProtocol` adds:

- a header deadline (``PLATFORM_HTTP_READ_HEADER_TIMEOUT_SECONDS``): a connection must
  deliver a request's complete headers within it, counted from the connection's start or,
  on a kept-alive connection, from the request's first byte (the wait before that byte is
  uvicorn's keep-alive timeout). Past it the connection is closed (with a 408 when part of
  a request had arrived);
- a connection cap (``PLATFORM_HTTP_MAX_CONNECTIONS``): a connection beyond it is answered
  503 (with ``Retry-After``) as soon as it is accepted and closed, before it is read, so
  the open sockets, and with them the requests in flight (one per connection), stay
  bounded. (uvicorn's ``limit_concurrency`` is not used: it still accepts and holds such a
  connection, and once the count reaches the limit it answers 503 to requests on every
  connection, the ones already open included);
- a request with both ``Content-Length`` and ``Transfer-Encoding`` is refused with 400 and
  the connection closed (RFC 9112 section 6.3), so nothing sent after it on that
  connection is read as a request;
- a response sent before the request's body was all read (a 401 before the body, the 408
  for a body that did not arrive in time) closes the connection: uvicorn would keep it for
  the rest of the body, and every byte a client trickles in restarts its keep-alive timer,
  so one client could hold the connection, and with many of them every slot, for ever.
  Such an answer says ``Connection: close`` (so the client sends nothing more on that
  connection). Such a connection, and one refused for the cap, is closed lingering: what the client
  still sends is read and dropped until it has been quiet for ``LINGER_SECONDS`` (at most
  ``LINGER_MAX_SECONDS``), so it reads the answer instead of a reset.

``platformd gateway`` serves with it through ``services.gateway.bootstrap.uvicorn_config``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from services.gateway.domain.errors import RETRY_AFTER_SECONDS
from services.gateway.entrypoints.http_headers import SECURITY_HEADERS

log = logging.getLogger(__name__)

# The answers given before any request reaches the app carry the same security headers as
# the app's own (http_headers.SECURITY_HEADERS).
_SECURITY_LINES = "".join(f"{name.lower()}: {value}\r\n" for name, value in SECURITY_HEADERS.items()).encode()
_SECURITY_FIELDS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
HEADER_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    + _SECURITY_LINES
    + b"connection: close\r\ncontent-length: 42\r\n\r\nthe request headers did not arrive in time"
)
_OVER_CAPACITY_BODY = b"too many connections; retry later"
OVER_CAPACITY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    + f"retry-after: {RETRY_AFTER_SECONDS}\r\n".encode()
    + _SECURITY_LINES
    + f"connection: close\r\ncontent-length: {len(_OVER_CAPACITY_BODY)}\r\n\r\n".encode()
    + _OVER_CAPACITY_BODY
)
# A connection being closed after its answer still reads (and drops) what the client sends,
# so the client gets the answer rather than a reset: until the client has sent nothing for
# LINGER_SECONDS (a client on a busy machine may still be writing the body it began), and
# for LINGER_MAX_SECONDS at most, so a client trickling bytes cannot keep the socket.
LINGER_SECONDS = 1.0
LINGER_MAX_SECONDS = 5.0
AMBIGUOUS_LENGTH = "a request must not carry both Content-Length and Transfer-Encoding"


class _StrictConnection(h11.Connection):
    """h11's server connection that refuses ambiguous framing and reports each request's headers.

    A refusal is a :class:`h11.RemoteProtocolError`, which uvicorn answers with 400 and
    ``Connection: close``, then closes the transport: what follows on the connection is
    never parsed. ``refusal`` keeps the reason for that answer.
    """

    def __init__(self, max_incomplete_event_size: int, on_request: Callable[[], None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size)
        self._on_request = on_request
        self.refusal: str | None = None
        # Set when an answer went out before the request's body was all read: the connection
        # is closed after it (lingering), and the answer said so.
        self.answered_early = False

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request):
            self._on_request()
            names = {name for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                # h11 would frame it by Transfer-Encoding; a proxy in front may have framed it
                # by Content-Length. Either reading lets one of the two see a second request.
                self.refusal = AMBIGUOUS_LENGTH
                raise h11.RemoteProtocolError(AMBIGUOUS_LENGTH, error_status_hint=400)
        return event

    def send(self, event: Any) -> bytes | None:  # type: ignore[override]
        data: bytes | None = super().send(event)
        if isinstance(event, h11.Response) and self.their_state is h11.SEND_BODY and data is not None:
            # Answered before the body was read: the connection is closed after this answer,
            # and the client must know, or it would send its next request on a connection
            # that only drops what it reads (and get no answer at all).
            self.answered_early = True
            if b"\r\nconnection:" not in data.lower():
                data = data[:-2] + b"connection: close\r\n\r\n"
        return data


class GatewayHttpProtocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a connection cap and strict framing."""

    # Set per server by protocol_class().
    header_timeout_seconds: float = 10.0
    max_connections: int = 1000

    def __init__(self, config: uvicorn.Config, server_state: ServerState, **kwargs: Any) -> None:
        super().__init__(config, server_state, **kwargs)
        self.conn = _StrictConnection(
            config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE,
            self._disarm_header_deadline,
        )
        self._header_deadline: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None
        self._linger_ends = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Refused before it can hold a slot: answered at once, never read.
            log.warning(
                "connection refused: too many connections", extra={"fields": {"limit": self.max_connections}}
            )
            transport.write(OVER_CAPACITY_RESPONSE)
            self._close_lingering()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        early = self.conn.their_state is h11.SEND_BODY or getattr(self.conn, "answered_early", False)
        if early and not self.transport.is_closing():
            # Answered with the body still coming: the rest is never read (h11 cannot start
            # the next request before it), so waiting for it only holds the slot.
            log.info("connection closed: answered before the request body was read")
            self._close_lingering()
        super().on_response_complete()

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            # The rest of a body already answered: read only to be thrown away, and the
            # close put off until the client is quiet (within the lingering's limit).
            self._lingering.cancel()
            self._lingering = self.loop.call_at(
                min(self.loop.time() + LINGER_SECONDS, self._linger_ends), self.transport.close
            )
            return
        if self._header_deadline is None and self.conn.their_state is h11.IDLE:
            # The first byte of the next request on a kept-alive connection: its headers are
            # now due (uvicorn's keep-alive timer, which data cancels, covered the wait).
            self._arm_header_deadline()
        super().data_received(data)

    def timeout_keep_alive_handler(self) -> None:
        # uvicorn's keep-alive timer (armed after every answer) would close a lingering
        # connection in the middle of the body the client is still sending: the lingering
        # closes it.
        if self._lingering is None:
            super().timeout_keep_alive_handler()

    def _close_lingering(self) -> None:
        """Close after the answer, but read and drop what the client still sends for a moment
        first (a lingering close): closing with its bytes unread makes the kernel reset the
        connection, and a client still sending its body would lose the answer to the reset."""
        if self._lingering is not None:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer is all there is; the client sees it end
        self._linger_ends = self.loop.time() + LINGER_MAX_SECONDS
        self._lingering = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request it cannot read (as uvicorn sends it, with the security
        headers), saying what was wrong when we refused it."""
        self._disarm_header_deadline()
        refusal = self.conn.refusal if isinstance(self.conn, _StrictConnection) else None
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            *_SECURITY_FIELDS,
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=(refusal or msg).encode("ascii", "replace")),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(
            self.header_timeout_seconds, self._header_deadline_passed
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        # Bytes of a request waiting in h11's buffer: a client trickling its headers
        # (slowloris) is told why; an idle one is simply closed, as on keep-alive expiry.
        if self.conn.trailing_data[0]:
            self.transport.write(HEADER_TIMEOUT_RESPONSE)
        log.info("connection closed: request headers not received in time")
        self.transport.close()


def protocol_class(header_timeout_seconds: float, max_connections: int) -> type[GatewayHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    limits = {"header_timeout_seconds": header_timeout_seconds, "max_connections": max_connections}
    return type("GatewayHttpProtocol", (GatewayHttpProtocol,), limits)
