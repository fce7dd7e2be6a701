"""Pipeline benchmark: prints figures, asserts nothing.

    .venv/bin/python -m bench.pipeline            # full run (~1 min)
    .venv/bin/python -m bench.pipeline --quick    # smaller counts, same shape

1. accept throughput: events/s through `Pipeline.accept` into a SQLite outbox holding 1,000 subscriptions
   over 1,000 chats with mixed filters. Each producer is shaped like a watcher's stream: one event per frame,
   handed over through a `Handoff`, so a busy venue's frames share commits; seven producers are the seven
   venues. One more run awaits each event's commit before the next, the floor without read-ahead.
2. frame-to-send latency: frames pushed on a loopback Binance-format socket at 200 events/s reach the real
   bot (aiohttp watcher → pipeline → outbox → dispatcher → python-telegram-bot), which sends to a loopback
   Bot API that takes 50 ms per call; 100 subscribed chats, pacing off ("no rate limit applies"). Latency is
   from the frame leaving the fake venue to the sendMessage request arriving at the fake Bot API.
3. peak RSS of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import PerpwatchApp
from bot.pipeline import Pipeline
from bot.platforms.telegram_http import AiohttpRequest
from bot.settings import Settings
from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from storage import Store
from watchers.base import WatcherHealth
from watchers.handoff import Handoff

SYMBOLS = [f"SYM{i}USDT" for i in range(100)]
TOKEN = "123456:BENCH-TOKEN"
API_LATENCY_S = 0.05


# Liquidation sizes are heavy-tailed: most are small, a few are whales.
_SIZES = [500] * 30 + [2_000] * 25 + [10_000] * 20 + [50_000] * 12 + [250_000] * 8 + [1_000_000] * 4 + [5_000_000]


def _event(i: int, rng: random.Random) -> Event:
    usd = Decimal(rng.choice(_SIZES))
    return Event(
        key=f"bench:{i}",
        topic=Topic.LIQUIDATION,
        source="bench",
        venue=rng.choice([Venue.BINANCE, Venue.ASTER]),
        symbol=rng.choice(SYMBOLS),
        usd=usd,
        occurred_at=datetime.now(UTC),
        body=LiquidationBody(side=PositionSide.LONG, size=Decimal(1), price=usd, notional_usd=usd),
    )


MIXES = {
    # Traders mostly set a floor: what a public bot's subscriptions look like.
    "typical": {
        "venue": [None, None, "binance", "aster"],
        "symbol": [None, *SYMBOLS[:20]],
        "min": [10_000, 50_000, 100_000, 250_000, 1_000_000],
    },
    # A quarter of the chats take every liquidation of every size: the worst case for fan-out.
    "broad": {
        "venue": [None, "binance", "aster"],
        "symbol": [None, None, *SYMBOLS[:20]],
        "min": [0, 10_000, 100_000, 1_000_000],
    },
}


async def bench_accept(events: int, mix_name: str, producers: int = 1, *, shape: str = "stream") -> None:
    """`stream`: each producer hands frames over as a watcher's stream does (through a `Handoff`, reading on
    while earlier events commit). `awaited`: each producer awaits every event's commit before the next, the
    floor a source that cannot read ahead would see."""
    rng = random.Random(1)
    mix = MIXES[mix_name]
    with tempfile.TemporaryDirectory() as tmp:
        async with Store(Path(tmp) / "bench.db") as store:
            for c in range(1000):
                chat = await store.chats.upsert("telegram", str(c), kind="private", title=None)
                await store.chats.subscribe(
                    chat.id,
                    "liquidation",
                    venue=rng.choice(mix["venue"]),  # type: ignore[arg-type]
                    symbol=rng.choice(mix["symbol"]),  # type: ignore[arg-type]
                    min_usd=Decimal(rng.choice(mix["min"])),  # type: ignore[arg-type]
                    limit=10,
                )
            pipeline = Pipeline(store.outbox)
            batch = [_event(i, rng) for i in range(events)]
            start = time.perf_counter()
            cpu0 = time.process_time()

            async def stream(share: list[Event], name: str) -> None:
                async with Handoff(pipeline, WatcherHealth(name=name), label=name) as handoff:
                    for event in share:  # one event per frame, as the forceOrder stream sends them
                        await handoff.put([event])
                        await asyncio.sleep(0)  # the next frame is another read from the socket
                    await handoff.settled()

            async def awaited(share: list[Event], _: str) -> None:
                for event in share:
                    await pipeline.accept([event])

            produce = stream if shape == "stream" else awaited
            await asyncio.gather(*(produce(batch[p::producers], f"p{p}") for p in range(producers)))
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            commits = pipeline.stats.commits
            replay_start = time.perf_counter()
            for event in batch[:2000]:
                await pipeline.accept([event])
            replay = time.perf_counter() - replay_start
    assert pipeline.stats.accepted == events, "every event must be accepted once"
    print(
        f"accept, {mix_name} mix, {producers} producer(s), {shape}: {events} events, 1,000 subscriptions over "
        f"1,000 chats: {events / wall:,.0f} events/s (wall {wall:.2f}s, process CPU {cpu:.2f}s), "
        f"{events / commits:.1f} events/commit; replaying 2,000 known events: {2000 / replay:,.0f}/s"
    )


def _record_send_starts(into: list[tuple[str, float]]) -> Callable[[], None]:
    """Note when the bot hands each sendMessage to its HTTP client: the bot's own share of the latency,
    apart from the transport and the fake API's scheduling on a shared two-core machine."""
    original = AiohttpRequest.do_request

    async def recording(self: AiohttpRequest, url: str, method: str, request_data: Any = None, **kw: Any) -> Any:
        if url.endswith("/sendMessage") and request_data is not None:
            into.append((str(request_data.parameters.get("text", "")), time.monotonic()))
        return await original(self, url, method, request_data, **kw)

    AiohttpRequest.do_request = recording  # type: ignore[method-assign,assignment]

    def restore() -> None:
        AiohttpRequest.do_request = original  # type: ignore[method-assign]

    return restore


async def bench_latency(seconds: float, rate: float, chats: int, fanout: int) -> None:
    """Each symbol is followed by `fanout` chats, so each event is sent to `fanout` chats."""
    starts: list[tuple[str, float]] = []
    restore = _record_send_starts(starts)
    symbols = SYMBOLS[: max(1, chats // fanout)]
    total = int(seconds * rate)
    fakes = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fake_bot_api", TOKEN, str(API_LATENCY_S), stdout=asyncio.subprocess.PIPE
    )
    assert fakes.stdout is not None
    api_url, venue_url, control = (await fakes.stdout.readline()).decode().split()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                _env_file=None,
                telegram_bot_token=TOKEN,
                telegram_api_url=api_url,
                binance_ws_url=venue_url,
                watchers="binance",
                database_url=f"sqlite:///{tmp}/lat.db",
                log_level="WARNING",
            )
            async with Store(settings.database_url) as store:
                for c in range(chats):
                    chat = await store.chats.upsert("telegram", str(1000 + c), kind="private", title=None)
                    await store.chats.subscribe(
                        chat.id,
                        "liquidation",
                        venue=None,
                        symbol=symbols[c % len(symbols)],
                        min_usd=None,
                        limit=10,
                    )
            async with PerpwatchApp(settings, pacing=False) as app, aiohttp.ClientSession() as http:
                health = app.supervisor.watchers["binance"].health
                while health.connected_since is None:  # noqa: ASYNC110 - the watcher's own flag
                    await asyncio.sleep(0.01)
                cpu0 = time.process_time()
                query = {"total": str(total), "rate": str(rate), "symbols": ",".join(symbols)}
                async with http.post(f"{control}/push", params=query) as resp:
                    resp.raise_for_status()
                deadline = time.monotonic() + seconds + 60
                while time.monotonic() < deadline and (  # noqa: ASYNC110 - polls the bot's own counters
                    app.pipeline.stats.accepted < total or not await app.dispatcher.idle()
                ):
                    await asyncio.sleep(0.05)
                cpu = time.process_time() - cpu0
                stats = app.dispatcher.stats
                async with http.get(f"{control}/records") as resp:
                    recorded = await resp.json()
    finally:
        restore()
        fakes.terminate()
        await fakes.wait()
    pushed_at = {int(k): float(v) for k, v in recorded["pushed"].items()}
    records = recorded["sends"]
    achieved = total / (max(pushed_at.values()) - min(pushed_at.values())) * (total - 1) / total
    size = re.compile(r"Size: <b>([\d,]+) ")
    latencies: list[float] = []
    unqueued: list[float] = []  # alerts whose chat had no earlier send still in flight when the frame arrived
    busy_until: dict[str, float] = {}
    for chat_id, text, at in sorted(records, key=lambda r: r[2]):
        match = size.search(text)
        if not match:
            continue
        pushed = pushed_at[int(match.group(1).replace(",", ""))]
        latency = (at - pushed) * 1000
        latencies.append(latency)
        if busy_until.get(chat_id, 0.0) <= pushed:
            unqueued.append(latency)
        busy_until[chat_id] = at + API_LATENCY_S
    latencies.sort()
    unqueued.sort()
    p50, p99 = _pct(latencies, 50), _pct(latencies, 99)
    in_bot = sorted(
        (at - pushed_at[int(m.group(1).replace(",", ""))]) * 1000 for text, at in starts if (m := size.search(text))
    )
    print(
        f"latency: {total} events at {rate:.0f}/s (pushed at {achieved:.0f}/s), {chats} chats, {fanout} chat(s) "
        f"per event, fake venue and Bot API in their own process, API 50 ms/call, pacing off: {len(latencies)} sends, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms; the {len(unqueued)} not queued behind an "
        f"in-flight send to the same chat: p50 {_pct(unqueued, 50):.1f} ms, p99 {_pct(unqueued, 99):.1f} ms; "
        f"frame to the bot's HTTP client: p50 {_pct(in_bot, 50):.1f} ms, p99 {_pct(in_bot, 99):.1f} ms; "
        f"bot process CPU {cpu / seconds:.0%} of a core; {len(records)} sendMessage calls, {stats.retried} retries"
    )


def _pct(values: list[float], pct: int) -> float:
    return values[max(0, round(len(values) * pct / 100) - 1)] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events = 3000 if args.quick else 20000
    seconds = 3 if args.quick else 10
    print(f"python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d}")
    for mix in ("typical", "broad"):
        for producers in (1, 7):
            asyncio.run(bench_accept(events, mix, producers))
    asyncio.run(bench_accept(events, "typical", 1, shape="awaited"))
    asyncio.run(bench_latency(seconds, 200, 100, 1))
    asyncio.run(bench_latency(seconds, 200, 100, 2))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {rss_mb:.0f} MiB")


if __name__ == "__main__":
    main()
