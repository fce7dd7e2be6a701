"""The benchmark's loopback venue and Bot API, in their own process.

    python -m bench.fake_bot_api TOKEN LATENCY_S   → prints "API_URL VENUE_URL CONTROL_URL" once listening

A real venue and a real Bot API run elsewhere; sharing the bot's event loop (or its core) with them would
bill their work to the bot. CONTROL_URL/push?total=N&rate=R&symbols=A,B starts pushing frames at R per
second; CONTROL_URL/records returns when each frame was pushed and when each sendMessage arrived
(time.monotonic is system-wide on Linux, so the bench compares them with its own clock), and each accepted
message with the id the fake gave it. `serve` takes the API class to run (a stricter judge, say) and a
`report` whose result `records` adds under "report".
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi


def frame(index: int, symbol: str) -> dict[str, Any]:
    """A documented-shape forceOrder frame whose quantity (index + 1) identifies it in the alert text."""
    now_ms = int(time.time() * 1000)
    qty = str(index + 1)
    return {
        "e": "forceOrder",
        "E": now_ms,
        "o": {
            "s": symbol,
            "S": "SELL",
            "o": "LIMIT",
            "f": "IOC",
            "q": qty,
            "p": "100",
            "ap": "100",
            "X": "FILLED",
            "l": qty,
            "z": qty,
            "T": now_ms,
        },
    }


async def serve(
    token: str,
    latency_s: float,
    *,
    make_api: Callable[[str], FakeTelegramApi] = FakeTelegramApi,
    report: Callable[[FakeTelegramApi], Any] | None = None,
) -> None:
    pushed: dict[int, float] = {}
    tasks: set[asyncio.Task[None]] = set()
    async with make_api(token) as api, FakeForceOrderServer() as venue:
        api.latency_s = latency_s

        async def push_all(total: int, rate: float, symbols: list[str]) -> None:
            start = time.perf_counter()
            for i in range(total):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                pushed[i + 1] = time.monotonic()
                await venue.push(frame(i, symbols[i % len(symbols)]))

        async def push(request: web.Request) -> web.Response:
            total, rate = int(request.query["total"]), float(request.query["rate"])
            task = asyncio.create_task(push_all(total, rate, request.query["symbols"].split(",")))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            return web.json_response({"started": total})

        async def records(_: web.Request) -> web.Response:
            sends = [
                [str(r.params.get("chat_id")), str(r.params.get("text", "")), r.received_at]
                for r in api.requests_for("sendMessage")
            ]
            accepted = [[m.chat_id, m.method, m.message_id, m.received_at, m.body] for m in api.sent]
            return web.json_response(
                {
                    "pushed": pushed,
                    "sends": sends,
                    "pushing": bool(tasks),
                    "accepted": accepted,
                    "report": None if report is None else report(api),
                }
            )

        app = web.Application()
        app.router.add_post("/push", push)
        app.router.add_get("/records", records)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        control = f"http://127.0.0.1:{runner.addresses[0][1]}"
        sys.stdout.write(f"{api.base_url} {venue.url} {control}\n")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], float(sys.argv[2])))
