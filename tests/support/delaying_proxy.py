"""A slow API server for tests: a reverse proxy on loopback that holds chosen requests.

It sits in front of a real HTTP server (the Kubernetes emulator) and forwards every request
unchanged, after waiting ``delay`` seconds for those ``slow`` picks. ``held`` counts the
requests it is holding right now, so a test can act while a call is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

# What the Kubernetes client sends that the upstream needs; hop-by-hop headers stay here.
_FORWARDED_HEADERS = ("Accept", "Authorization", "Content-Type")


@dataclass
class DelayingProxy:
    upstream: str
    delay: float
    slow: Callable[[web.Request], bool]
    url: str = ""
    held: int = 0
    held_total: int = 0
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        slow = self.slow(request)
        if slow:
            self.held += 1
            self.held_total += 1
        try:
            if slow:
                await asyncio.sleep(self.delay)
            assert self._session is not None
            headers = {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body
            ) as response:
                payload = await response.read()
                content_type = response.headers.get("Content-Type", "application/json")
                return web.Response(
                    status=response.status, body=payload, headers={"Content-Type": content_type}
                )
        finally:
            if slow:
                self.held -= 1


@contextlib.asynccontextmanager
async def delaying_proxy(
    upstream: str, *, delay: float, slow: Callable[[web.Request], bool]
) -> AsyncIterator[DelayingProxy]:
    """Run a :class:`DelayingProxy` to ``upstream`` on a free loopback port."""
    proxy = DelayingProxy(upstream.rstrip("/"), delay, slow)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    proxy.url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        proxy._session = session
        try:
            yield proxy
        finally:
            await runner.cleanup()
