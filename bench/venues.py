"""Venue benchmark: frames parsed per second per venue, and events per second through accept with all seven
venues producing at once. Prints figures, asserts nothing.

    .venv/bin/python -m bench.venues                 # 20,000 frames per venue, 3,000 events per venue
    .venv/bin/python -m bench.venues --frames 5000 --events 1000

Parse: each venue's documented sample frame (from `../shared/payloads`, shaped into a liquidation the way
its tests do), as the text a socket delivers, decoded and parsed by the venue module, with a fresh timestamp
or id per frame so nothing is cached. Accept: seven producers (one per venue) each hand their venue's parsed
events to one `Pipeline` (with the cascade detector) over a fresh SQLite file, one event per call, as a
stream does; the figure is events committed per second. This drives the parsers and the pipeline, not the
sockets: the WebSocket read loop is the same for every venue (`watchers/ws.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.cascades import CascadeDetector, CascadeSettings, Thresholds
from bot.pipeline import Pipeline
from perpwatch.events import Event, Venue
from storage import Store
from watchers import bybit, forceorder, hyperliquid, lighter, okx, pacifica

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
LIQUIDATOR = "0x" + "11" * 20
TRADER = "0x" + "22" * 20


def _load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


def _now_ms() -> int:
    return int(time.time() * 1000)


def sample_streams() -> dict[str, tuple[Callable[[int], str], Callable[[Any], list[Event]]]]:
    """Per venue: a frame maker (frame number -> socket text) and the parse the watcher runs on it."""
    binance = _load("binance_forceOrder_docs.json")
    bybit_frame = _load("bybit_allLiquidation_docs.json")
    bybit_ref = bybit.BybitRef(frozenset({"ROSEUSDT"}))
    okx_frame = _load("okx_liquidation_orders_docs.json")
    okx_ref = okx.parse_reference(_load("okx_instruments_ccxt.json"))
    okx_frame["data"][0].update(instId="BTC-USDT-SWAP", instFamily="BTC-USDT", uly="BTC-USDT")
    okx_frame["data"][0]["details"][0]["bkPx"] = "60000"
    lighter_frame = _load("lighter_ws_trade_ccxt.json")
    lighter_ref = lighter.parse_reference(_load("lighter_orderBooks_real.json"))
    trade = lighter_frame["trades"].pop(0)
    trade["type"] = "liquidation"
    lighter_frame["liquidation_trades"] = [trade]
    pacifica_frame = _load("pacifica_ws_trades_docs.json")
    pacifica_frame["data"][0]["tc"] = "market_liquidation"
    pacifica_ref = pacifica.parse_reference(_load("pacifica_info_docs.json"))
    hl_frame = _load("hyperliquid_ws_trades_ccxt.json")
    hl_frame["data"][0]["users"] = [LIQUIDATOR, TRADER]
    hl_ref = hyperliquid.HyperliquidRef(
        coins=frozenset({str(hl_frame["data"][0]["coin"])}), liquidators=frozenset({LIQUIDATOR})
    )

    def text(frame: Any, stamp: Callable[[Any, int], None]) -> Callable[[int], str]:
        def make(n: int) -> str:
            changed = copy.deepcopy(frame)
            stamp(changed, n)
            return json.dumps(changed, default=str)

        return make

    def stamp_binance(f: Any, n: int) -> None:
        f["o"]["T"] = f["E"] = _now_ms() + n

    def stamp_bybit(f: Any, n: int) -> None:
        f["data"][0]["T"] = _now_ms() + n

    def stamp_okx(f: Any, n: int) -> None:
        f["data"][0]["details"][0]["ts"] = str(_now_ms() + n)

    def stamp_lighter(f: Any, n: int) -> None:
        f["liquidation_trades"][0]["trade_id"] = n
        f["liquidation_trades"][0]["timestamp"] = _now_ms() + n

    def stamp_pacifica(f: Any, n: int) -> None:
        f["data"][0]["h"] = n
        f["data"][0]["t"] = _now_ms() + n

    def stamp_hl(f: Any, n: int) -> None:
        f["data"][0]["tid"] = n
        f["data"][0]["time"] = _now_ms() + n

    return {
        "binance": (text(binance, stamp_binance), lambda d: forceorder.parse(d, Venue.BINANCE)),
        "aster": (text(binance, stamp_binance), lambda d: forceorder.parse(d, Venue.ASTER)),
        "bybit": (text(bybit_frame, stamp_bybit), lambda d: bybit.parse_frame(d, bybit_ref)),
        "okx": (text(okx_frame, stamp_okx), lambda d: okx.parse_frame(d, okx_ref)),
        "lighter": (text(lighter_frame, stamp_lighter), lambda d: lighter.parse_frame(d, lighter_ref)),
        "pacifica": (text(pacifica_frame, stamp_pacifica), lambda d: pacifica.parse_frame(d, pacifica_ref)),
        "hyperliquid": (text(hl_frame, stamp_hl), lambda d: hyperliquid.parse_frame(d, hl_ref)),
    }


def parse_rates(frames: int) -> dict[str, tuple[float, list[Event]]]:
    rates: dict[str, tuple[float, list[Event]]] = {}
    for name, (make, parse) in sample_streams().items():
        texts = [make(n) for n in range(frames)]
        events: list[Event] = []
        started = time.perf_counter()
        for raw in texts:
            events.extend(parse(json.loads(raw, parse_float=Decimal)))
        elapsed = time.perf_counter() - started
        if not events:
            raise SystemExit(f"{name}: the sample frame parsed to no event; the bench is out of step")
        rates[name] = (frames / elapsed, events)
    return rates


async def accept_rate(streams: dict[str, list[Event]], *, cascades: bool = True) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        async with Store(f"sqlite:///{folder}/bench.db") as store:
            detector = CascadeDetector(
                CascadeSettings(
                    window=timedelta(seconds=60),
                    symbol=Thresholds(10, Decimal(1_000_000)),
                    market=Thresholds(50, Decimal(5_000_000)),
                )
            )
            pipeline = Pipeline(store.outbox, cascades=detector if cascades else None)

            async def produce(events: list[Event]) -> None:
                for event in events:
                    await pipeline.accept([event])

            started = time.perf_counter()
            await asyncio.gather(*(produce(events) for events in streams.values()))
            elapsed = time.perf_counter() - started
            total = sum(len(events) for events in streams.values())
            return total / elapsed, pipeline.stats.cascade_revisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000, help="frames parsed per venue")
    parser.add_argument("--events", type=int, default=3_000, help="events accepted per venue")
    args = parser.parse_args()
    rates = parse_rates(args.frames)
    print(f"{'venue':<12} {'frames/s parsed':>16}")
    for name, (rate, _) in rates.items():
        print(f"{name:<12} {rate:>16,.0f}")
    streams = {name: events[: args.events] for name, (_, events) in rates.items()}
    total = sum(len(e) for e in streams.values())
    for cascades in (True, False):
        rate, revisions = asyncio.run(accept_rate(streams, cascades=cascades))
        what = f"{revisions:,} cascade revisions" if cascades else "cascade detector off"
        print(f"accept, 7 venues at once: {total:,} events at {rate:,.0f} events/s ({what})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
