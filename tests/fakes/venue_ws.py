"""A loopback venue stream that takes whatever a venue's client sends, records it per connection, answers
the venue's own ping with its pong, and pushes the frames a test gives it: the venue's wire format lives in
the frames and pongs the test passes, taken from the venue's documented samples."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer


class Connection:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.received: list[str] = []
        self.open = True


class FakeVenueStream:
    def __init__(self, pongs: Mapping[str, str]) -> None:
        self.pongs = dict(pongs)
        self.connections: list[Connection] = []
        self.changed = asyncio.Event()
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("/ws")).replace("http", "ws", 1)

    @property
    def live(self) -> list[Connection]:
        return [c for c in self.connections if c.open]

    def received(self) -> list[str]:
        """What the live connections were sent, pings left out."""
        return [text for c in self.live for text in c.received if text not in self.pongs]

    async def push(self, text: str) -> None:
        for conn in self.live:
            await conn.ws.send_str(text)

    async def drop_all(self) -> None:
        for conn in self.live:
            await conn.ws.close()

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Hang guard only."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Connection(ws)
        self.connections.append(conn)
        self.changed.set()
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    conn.received.append(msg.data)
                    if msg.data in self.pongs:
                        await ws.send_str(self.pongs[msg.data])
                    self.changed.set()
        finally:
            conn.open = False
            self.changed.set()
        return ws

    async def __aenter__(self) -> FakeVenueStream:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.live:
            await conn.ws.close()
        await self._server.close()
