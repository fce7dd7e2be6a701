"""A loopback REST venue: serves JSON bodies by path, records every request with the weight it counts and
the time on the test's clock, and scripts failures (429 with or without `Retry-After`, down with 503)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from perpwatch.clock import Clock


@dataclass(frozen=True)
class Seen:
    path: str
    at: float
    weight: int
    status: int
    query: str = ""


class FakeRest:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.bodies: dict[str, Any] = {}
        self.posts: dict[str, Callable[[Any], Any]] = {}
        self.gets: dict[str, Callable[[dict[str, str]], Any]] = {}
        self.weights: dict[str, int] = {}
        self.seen: list[Seen] = []
        self.down = False
        self.limited: list[str | None] = []
        """Each entry answers one request with 429; the entry is its Retry-After (None: no header)."""
        self.status_next: list[int] = []
        self.gate: asyncio.Event | None = None
        """When set to an unset event, requests wait on it before answering (a slow venue)."""
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")

    def answer_posts(self, path: str, answer: Callable[[Any], Any]) -> None:
        """POSTs to `path` are answered with `answer(decoded JSON body)` (one info endpoint, many request
        types: Hyperliquid's `/info`)."""
        self.posts[path] = answer

    def answer_gets(self, path: str, answer: Callable[[dict[str, str]], Any]) -> None:
        """GETs to `path` are answered with `answer(query parameters)` (one endpoint, one account per query:
        Lighter's `account`, Pacifica's `positions`)."""
        self.gets[path] = answer

    def serve(self, path: str, body: Any, *, weight: int = 1) -> None:
        self.bodies[path] = body
        self.weights[path] = weight

    def url(self, path: str) -> str:
        return str(self._server.make_url(path))

    def requests(self, path: str | None = None) -> list[Seen]:
        return [s for s in self.seen if path is None or s.path == path]

    def max_weight_in(self, window_s: float, *, status: int | None = None) -> int:
        """The most weight seen in any window of `window_s` (starting at each request)."""
        hits = [s for s in self.seen if status is None or s.status == status]
        return max((sum(h.weight for h in hits if start.at <= h.at < start.at + window_s) for start in hits), default=0)

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        weight = self.weights.get(path, 1)
        if self.gate is not None:
            await self.gate.wait()
        status = 200
        response: web.Response
        if self.down:
            status, response = 503, web.Response(status=503, text="down for maintenance")
        elif self.limited:
            retry = self.limited.pop(0)
            headers = {"Retry-After": retry} if retry is not None else {}
            status, response = 429, web.Response(status=429, text="too many requests", headers=headers)
        elif self.status_next:
            status = self.status_next.pop(0)
            response = web.Response(status=status, text="scripted")
        elif request.method == "POST" and path in self.posts:
            answer = self.posts[path](await request.json())
            response = web.Response(text=json.dumps(answer), content_type="application/json")
        elif request.method == "GET" and path in self.gets:
            answer = self.gets[path](dict(request.query))
            response = web.Response(text=json.dumps(answer), content_type="application/json")
        elif path not in self.bodies:
            status, response = 404, web.Response(status=404, text="no such path")
        else:
            body = self.bodies[path]
            text = body() if callable(body) else body
            response = web.Response(text=json.dumps(text), content_type="application/json")
        self.seen.append(Seen(path, self.clock.monotonic(), weight, status, request.query_string))
        self.arrived.set()
        return response

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Hang guard only: waits until the fake has seen what `predicate` asks for."""
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

    async def __aenter__(self) -> FakeRest:
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()
