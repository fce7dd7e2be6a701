"""A loopback WebSocket venue that speaks a generic topic protocol (Bybit's shape):
`{"op":"subscribe","args":[...]}` / `{"op":"unsubscribe","args":[...]}`, answered with
`{"op":..., "success":true}`; data frames `{"topic": t, "data": ...}` go only to connections subscribed to
`t`. Records every connection's topics and frames, and can cap topics per connection like a venue does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer


class Conn:
    def __init__(self, ws: web.WebSocketResponse, number: int) -> None:
        self.ws = ws
        self.number = number
        self.topics: set[str] = set()
        self.frames: list[dict[str, Any]] = []
        self.open = True


class FakeTopicServer:
    def __init__(self, *, per_connection: int | None = None, per_frame: int | None = None) -> None:
        self.per_connection = per_connection
        self.per_frame = per_frame
        self.conns: list[Conn] = []
        self.violations: list[str] = []
        self.changed = asyncio.Event()
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("/ws")).replace("http", "ws", 1)

    @property
    def live(self) -> list[Conn]:
        return [c for c in self.conns if c.open]

    def subscribed(self) -> list[str]:
        return sorted(t for c in self.live for t in c.topics)

    async def push(self, topic: str, data: Any) -> int:
        sent = 0
        for conn in self.live:
            if topic in conn.topics:
                await conn.ws.send_str(json.dumps({"topic": topic, "data": data}))
                sent += 1
        return sent

    async def drop(self, conn: Conn) -> None:
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
        conn = Conn(ws, len(self.conns))
        self.conns.append(conn)
        self.changed.set()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                conn.frames.append(frame)
                op, args = frame.get("op"), list(frame.get("args", []))
                if self.per_frame is not None and len(args) > self.per_frame:
                    self.violations.append(f"conn {conn.number}: {len(args)} args in one frame")
                if op == "subscribe":
                    conn.topics.update(args)
                    if self.per_connection is not None and len(conn.topics) > self.per_connection:
                        self.violations.append(f"conn {conn.number}: {len(conn.topics)} topics")
                elif op == "unsubscribe":
                    conn.topics.difference_update(args)
                await ws.send_str(json.dumps({"op": op, "success": True}))
                self.changed.set()
        finally:
            conn.open = False
            self.changed.set()
        return ws

    async def __aenter__(self) -> FakeTopicServer:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.live:
            await conn.ws.close()
        await self._server.close()
