"""The loopback Bot API in its own process, so the benchmark's bot does not share a core with its fake.

    python -m bench.fake_bot_api TOKEN LATENCY_S   → prints "API_URL RECORDS_URL" once listening

RECORDS_URL answers the sendMessage arrival times (time.monotonic is system-wide on Linux, so the bench
process can compare them with its own clock).
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from tests.fakes.telegram_api import FakeTelegramApi


async def serve(token: str, latency_s: float) -> None:
    async with FakeTelegramApi(token=token) as api:
        api.latency_s = latency_s

        async def records(_: web.Request) -> web.Response:
            sends = api.requests_for("sendMessage")
            rows = [[str(r.params.get("chat_id")), str(r.params.get("text", "")), r.received_at] for r in sends]
            return web.json_response(rows)

        app = web.Application()
        app.router.add_get("/records", records)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        sys.stdout.write(f"{api.base_url} http://127.0.0.1:{port}/records\n")
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], float(sys.argv[2])))
