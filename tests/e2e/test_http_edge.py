"""The gateway's HTTP edge against hostile clients, with raw sockets, as ``make run`` serves it.

One ``platformd dev`` (the launcher ``make run`` runs, serving the gateway through
``platformd gateway``'s own uvicorn configuration) with a short header deadline and a small
connection cap, so the limits show in seconds. Each test speaks HTTP/1.1 byte by byte:
clients that send nothing or trickle their headers, more connections than the cap, a
request smuggled behind one with both ``Content-Length`` and ``Transfer-Encoding``,
repeated credential headers; and what every response carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from services.tools.platformd.dev_stack import DEV_JWT_SECRET
from tests.support.gateway import mint
from tests.support.platformd_dev import DevStack, platformd_dev

pytestmark = [pytest.mark.e2e]

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 24
# What a connection the gateway is done with must have seen by then, at the latest.
GRACE = 4.0


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    limits = {
        "PLATFORM_HTTP_READ_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "PLATFORM_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "PLATFORM_HTTP_READ_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    with platformd_dev(tmp_path_factory.mktemp("edge"), environment=limits) as running:
        yield running


@dataclass(frozen=True)
class Exchange:
    """What a raw connection received, and whether (and when) the server closed it."""

    received: bytes
    closed: bool
    seconds: float

    @property
    def statuses(self) -> list[int]:
        return [int(code) for code in re.findall(rb"^HTTP/1\.1 (\d{3}) ", self.received, re.MULTILINE)]

    def header(self, name: str) -> str | None:
        head = self.received.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        match = re.search(rf"^{re.escape(name)}: (.*)\r?$", head, re.MULTILINE | re.IGNORECASE)
        return match.group(1).strip() if match else None


def address(dev: DevStack) -> tuple[str, int]:
    parts = urlsplit(dev.api_url)
    assert parts.hostname
    assert parts.port
    return parts.hostname, parts.port


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, bool]:
    received = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(65536):
                received += chunk
    except TimeoutError:
        return received, False
    except ConnectionError:
        pass
    return received, True


async def exchange(dev: DevStack, data: bytes, limit: float = GRACE + HEADER_TIMEOUT) -> Exchange:
    """Send ``data`` on a new connection, then read until the server closes it (or ``limit``)."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(*address(dev))
    try:
        writer.write(data)
        await writer.drain()
        received, closed = await read_until_closed(reader, limit)
    finally:
        writer.close()
    return Exchange(received, closed, time.monotonic() - started)


def request(path: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def bearer() -> str:
    return f"Authorization: Bearer {mint('approver', secret=DEV_JWT_SECRET, ttl=600)}"


# -- connections that send nothing, or too little ----------------------------------------------


def test_idle_connections_are_closed_after_the_header_timeout(dev: DevStack) -> None:
    """Sockets that never send a byte were held for ever (uvicorn times out only after a response)."""

    async def idle_sockets() -> list[Exchange]:
        return list(await asyncio.gather(*(exchange(dev, b"") for _ in range(MAX_CONNECTIONS // 2))))

    exchanges = asyncio.run(idle_sockets())
    assert exchanges
    for idle in exchanges:
        assert idle.closed, "an idle connection is still open"
        assert idle.received == b""
        assert HEADER_TIMEOUT * 0.8 <= idle.seconds <= HEADER_TIMEOUT + GRACE


def test_headers_trickling_in_slower_than_the_deadline_are_cut_off_with_408(dev: DevStack) -> None:
    """A slowloris: a header line every 0.3 s, for longer than the deadline allows."""

    async def slowloris() -> tuple[Exchange, int]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(*address(dev))
        sent = 0
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            for number in range(40):  # 12 s of headers if nobody stops it
                # The pause between lines doubles as a read, so an answer is never missed.
                try:
                    answer = await asyncio.wait_for(reader.read(65536), 0.3)
                except TimeoutError:
                    answer = None
                if answer is not None:
                    rest, closed = await read_until_closed(reader, GRACE)
                    received = answer + rest
                    break
                try:
                    writer.write(f"X-Padding-{number}: {'a' * 20}\r\n".encode())
                    await writer.drain()
                except ConnectionError:
                    received, closed = b"", True
                    break
                sent += 1
            else:
                received, closed = await read_until_closed(reader, GRACE)
        finally:
            writer.close()
        return Exchange(received, closed, time.monotonic() - started), sent

    cut, sent = asyncio.run(slowloris())
    assert cut.closed
    assert cut.statuses == [408]
    assert b"headers did not arrive in time" in cut.received
    assert_security_headers(cut)
    assert sent < 40, "every header line was accepted"
    assert cut.seconds <= HEADER_TIMEOUT + GRACE


@pytest.mark.parametrize(("credentials", "status"), [((), 401), (("requester",), 408)])
def test_a_body_trickling_in_is_answered_and_its_connection_closed(
    dev: DevStack, credentials: tuple[str, ...], status: int
) -> None:
    """A kept-alive POST whose body comes a byte at a time: refused before the body (401) or
    when the body is late (408), and the connection closed, not held while bytes keep coming."""
    token = [
        f"Authorization: Bearer {mint(role, teams=['payments'], secret=DEV_JWT_SECRET)}"
        for role in credentials
    ]
    head = "\r\n".join(
        [
            "POST /v1/environment-requests HTTP/1.1",
            "Host: localhost",
            "Content-Type: application/json",
            "Content-Length: 65000",
            *token,
        ]
    )

    async def trickle() -> tuple[Exchange, int]:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(*address(dev))
        received, closed, sent = b"", False, 0
        try:
            writer.write(f"{head}\r\n\r\n{{".encode())
            for _ in range(40):  # 12 s of body if nobody stops it
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 0.3)
                except TimeoutError:
                    chunk = None
                if chunk == b"":
                    closed = True
                    break
                received += chunk or b""
                try:
                    writer.write(b" ")
                    await writer.drain()
                except ConnectionError:
                    closed = True
                    break
                sent += 1
        finally:
            writer.close()
        return Exchange(received, closed, time.monotonic() - started), sent

    answered, sent = asyncio.run(trickle())
    assert answered.statuses == [status]
    assert answered.closed, "the connection is still held while the body trickles in"
    assert sent < 40
    assert answered.seconds <= BODY_TIMEOUT + GRACE


def create_head(content_length: int) -> bytes:
    """The head (without its closing blank line) of a requester's create with this body size."""
    token = f"Authorization: Bearer {mint('requester', teams=['payments'], secret=DEV_JWT_SECRET)}"
    return "\r\n".join(
        [
            "POST /v1/environment-requests HTTP/1.1",
            "Host: localhost",
            "Content-Type: application/json",
            f"Content-Length: {content_length}",
            token,
        ]
    ).encode()


def test_a_client_still_sending_an_oversized_body_reads_the_answer_not_a_reset(dev: DevStack) -> None:
    """The answer comes before the body is read; the connection is closed lingering (what
    still arrives is read and dropped), so the client reads the 400 rather than a reset."""
    body = b"{" + b" " * 2_000_000 + b"}"
    head = create_head(len(body))

    async def oversized() -> Exchange:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(*address(dev))

        async def send() -> None:
            with contextlib.suppress(ConnectionError):
                writer.write(head + b"\r\n\r\n")
                for offset in range(0, len(body), 65536):
                    writer.write(body[offset : offset + 65536])
                    await writer.drain()

        sending = asyncio.create_task(send())
        try:
            received, closed = await read_until_closed(reader, GRACE + 2)
        finally:
            sending.cancel()
            writer.close()
        return Exchange(received, closed, time.monotonic() - started)

    for _ in range(5):
        answered = asyncio.run(oversized())
        assert answered.statuses == [400], answered.received[:200]
        assert b"larger than" in answered.received
        assert answered.closed


def test_a_client_that_reads_only_after_sending_a_slow_oversized_body_still_gets_the_answer(
    dev: DevStack,
) -> None:
    """An HTTP client on a busy machine: the body goes out in pieces with pauses between them,
    and the answer is read only once all of it is sent, three seconds after the gateway
    answered. The connection keeps lingering while pieces keep coming, so the answer is
    still there to read, not lost to a reset."""
    body = b"{" + b" " * 499_998 + b"}"
    head = create_head(len(body))

    async def slow() -> Exchange:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(*address(dev))
        try:
            writer.write(head + b"\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                for offset in range(0, len(body), 100_000):
                    await asyncio.sleep(0.6)
                    writer.write(body[offset : offset + 100_000])
                    await writer.drain()
            received, closed = await read_until_closed(reader, GRACE + 2)
        finally:
            writer.close()
        return Exchange(received, closed, time.monotonic() - started)

    answered = asyncio.run(slow())
    assert answered.statuses == [400], answered.received[:200]
    assert b"larger than" in answered.received
    assert answered.closed
    # Said in the answer, so a client does not send its next request on this connection (the
    # gateway only drops what still arrives on it, and that request would get no answer).
    assert answered.header("connection") == "close"


def test_connections_beyond_the_cap_get_503_and_the_gateway_serves_again_after(dev: DevStack) -> None:
    async def flood() -> tuple[Exchange, int]:
        held = [await asyncio.open_connection(*address(dev)) for _ in range(MAX_CONNECTIONS)]
        try:
            beyond = await exchange(dev, request("/healthz"), limit=GRACE)
        finally:
            for _, writer in held:
                writer.close()
        # The held sockets are closed by now: the gateway serves again at once.
        await asyncio.sleep(0.5)
        after = await exchange(dev, request("/healthz"))
        return beyond, after.statuses[0]

    beyond, status_after = asyncio.run(flood())
    assert beyond.statuses == [503]
    assert beyond.header("Retry-After") == "5"
    assert_security_headers(beyond)
    assert beyond.closed
    assert beyond.seconds < HEADER_TIMEOUT, "answered at once, not after holding the connection"
    assert status_after == 200


# -- requests the gateway must refuse ----------------------------------------------------------


def test_content_length_with_transfer_encoding_is_400_and_the_smuggled_request_never_answered(
    dev: DevStack,
) -> None:
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    ambiguous = (
        b"POST /v1/environment-requests HTTP/1.1\r\nHost: localhost\r\n"
        + f"{bearer()}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + body
    )
    refused = asyncio.run(exchange(dev, ambiguous))
    assert refused.closed
    assert refused.statuses == [400], refused.received  # one answer: the smuggled GET got none
    assert b"Content-Length and Transfer-Encoding" in refused.received
    assert_security_headers(refused)
    assert b'"status":"ok"' not in refused.received


@pytest.mark.parametrize(
    ("path", "method", "header"),
    [
        ("/v1/whoami", "GET", "Authorization"),
        ("/v1/environment-requests/req-1/approve", "POST", "X-Platform-Approval-Signature"),
    ],
)
def test_a_repeated_credential_header_is_400_naming_it(
    dev: DevStack, path: str, method: str, header: str
) -> None:
    token = bearer()
    repeated = (
        [token, "Authorization: Bearer x.y.z"]
        if header == "Authorization"
        else [token, f"{header}: {'a' * 64}", f"{header}: {'b' * 64}"]
    )
    answer = asyncio.run(exchange(dev, request(path, *repeated, "Content-Length: 0", method=method)))
    assert answer.statuses == [400], answer.received
    body = answer.received.split(b"\r\n\r\n", 1)[1].decode()
    assert f"header sent more than once: {header}" in body
    # The same request with the header once gets past that check.
    once = [token, *([] if header == "Authorization" else [f"{header}: {'a' * 64}"])]
    assert asyncio.run(exchange(dev, request(path, *once, "Content-Length: 0", method=method))).statuses != [
        400
    ]


# -- what every response carries -----------------------------------------------------------------


@pytest.mark.parametrize(("path", "headers", "status"), [("/healthz", (), 200), ("/no-such-route", (), 404)])
def test_security_headers_are_on_every_response(
    dev: DevStack, path: str, headers: tuple[str, ...], status: int
) -> None:
    answer = asyncio.run(exchange(dev, request(path, *headers)))
    assert answer.statuses == [status]
    assert_security_headers(answer)


def test_security_headers_are_on_a_401(dev: DevStack) -> None:
    answer = asyncio.run(exchange(dev, request("/v1/whoami")))
    assert answer.statuses == [401]
    assert_security_headers(answer)


def assert_security_headers(answer: Exchange) -> None:
    policy = answer.header("Content-Security-Policy")
    assert policy is not None
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.header("X-Content-Type-Options") == "nosniff"
    assert answer.header("X-Frame-Options") == "DENY"
    assert answer.header("Referrer-Policy") == "no-referrer"


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1


def test_the_api_reference_loads_no_external_url(dev: DevStack) -> None:
    """The page and what it loads reference the gateway only, and its policy allows nothing else."""
    with httpx.Client(base_url=dev.api_url, timeout=10) as http:
        page = http.get("/schema")
        assert page.status_code == 200
        policy = page.headers["content-security-policy"]
        sources = re.findall(r"[\w-]+-src ([^;]+)", policy)
        assert sources
        allowed = {"'self'", "'none'", "'unsafe-inline'", "data:"}
        assert all(set(source.split()) <= allowed for source in sources), policy
        parser = References()
        parser.feed(page.text)
        assert parser.inline_scripts == 0
        assert len(parser.urls) >= 4, parser.urls
        for url in parser.urls:
            assert url.startswith("/"), url
            assert not url.startswith("//"), url
            assert http.get(url).status_code == 200, url
        [starter] = [url for url in parser.urls if url.endswith("api-reference.js")]
        assert not re.findall(rb"https?://", http.get(starter).content)
        stylesheet = next(url for url in parser.urls if url.endswith(".css"))
        css = http.get(stylesheet).text
        assert [u for u in re.findall(r"url\(['\"]?([^'\")]+)", css) if not u.startswith("data:")] == []
