"""A loopback Binance/Aster market-stream server, for `perpwatch demo` and for the tests.

It ships with the bot (the demo runs from an installed wheel, which holds no tests) and speaks the wire
format the watcher meets in production: raw JSON text frames, answers to `LIST_SUBSCRIPTIONS`/`SUBSCRIBE`
control messages, and protocol pings answered by aiohttp. It can script the failures the watcher must
survive: a mid-stream close (`drop_all`), a stalled stream that answers nothing (`silent`), a venue that
re-sends frames to every new connection (`replay_on_connect`), and one that closes each connection once
those are sent (`close_after_replay`: with frames, a flapping venue; without, one that accepts and drops).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web

Frame = dict[str, Any] | str


def _text(frame: Frame) -> str:
    return frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":"))


class FakeForceOrderServer:
    """Serves every path as the `!forceOrder@arr` stream on 127.0.0.1 and an ephemeral port."""

    def __init__(
        self,
        *,
        replay_on_connect: Iterable[Frame] = (),
        silent: bool = False,
        close_after_replay: bool = False,
        streams: tuple[str, ...] = ("!forceOrder@arr",),
    ) -> None:
        self.replay_on_connect: list[Frame] = list(replay_on_connect)
        self.silent = silent
        self.close_after_replay = close_after_replay
        self.streams = streams
        self.received: list[list[str]] = []
        """Text frames each client sent, one list per connection in the order they were accepted."""
        self.accepted = 0
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("server not started")
        return f"ws://127.0.0.1:{self._port}/market/ws/!forceOrder@arr"

    @property
    def connections(self) -> int:
        """Sockets open now; `accepted` counts every connection ever made."""
        return len(self._sockets)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        # Our sockets are closed by close() first; no reason to wait the default 60 s for stragglers.
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        await self.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def push(self, frame: Frame) -> None:
        """Sends to every open connection, as the venue fans one event out to all subscribers."""
        text = _text(frame)
        for ws in list(self._sockets):
            if not ws.closed:
                await ws.send_str(text)

    async def drop_all(self) -> None:
        """Closes every socket mid-stream, as a venue does on a restart (1001 going away)."""
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"going away")

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Waits for a change in connections or received frames; the timeout only keeps a broken
        client from hanging the test run."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_connected(self, n: int = 1, timeout_s: float = 5.0) -> None:
        """Waits until `n` connections have been accepted in total, so 2 awaits the first reconnect."""
        await self.wait_until(lambda: self.accepted >= n, timeout_s)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self._closing:
            await ws.close(code=1001)
            return ws
        sent: list[str] = []
        self.received.append(sent)
        for frame in self.replay_on_connect:
            await ws.send_str(_text(frame))
        self._sockets.add(ws)
        self.accepted += 1
        await self._notify()
        if self.close_after_replay:
            await ws.close(code=1001, message=b"going away")
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    sent.append(msg.data)
                    await self._answer(ws, msg.data)
                    await self._notify()
        finally:
            self._sockets.discard(ws)
            await self._notify()
        return ws

    async def _answer(self, ws: web.WebSocketResponse, text: str) -> None:
        if self.silent:
            return
        try:
            request = json.loads(text)
        except ValueError:
            return
        if not isinstance(request, dict) or "id" not in request:
            return
        method = request.get("method")
        if method == "LIST_SUBSCRIPTIONS":
            await ws.send_str(json.dumps({"result": list(self.streams), "id": request["id"]}))
        elif method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            await ws.send_str(json.dumps({"result": None, "id": request["id"]}))
