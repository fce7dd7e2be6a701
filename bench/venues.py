"""Venue benchmark: frames parsed per second per venue, events per second through accept with all seven
venues producing at once, and events per second end to end with all seven streaming at once from loopback
fakes through the real watchers. Prints figures, asserts nothing but that every pushed frame arrived.

    .venv/bin/python -m bench.venues                 # 20,000 frames, 3,000 events, 1,000 socket frames per venue
    .venv/bin/python -m bench.venues --frames 5000 --events 1000 --socket-events 200

Parse: each venue's documented sample frame (from `../shared/payloads`, shaped into a liquidation the way
its tests do), as the text a socket delivers, decoded and parsed by the venue module, with a fresh timestamp
or id per frame so nothing is cached. Accept: seven producers (one per venue) each hand their venue's parsed
events to one `Pipeline` (with the cascade detector) over a fresh SQLite file, one event per call, as a
stream does; the figure is events committed per second.

Sockets: the same frames pushed by seven loopback fakes at once (`tests.fakes`: a `FakeVenueStream` with its
markets on a `FakeRest` for each topic venue, a `FakeForceOrderServer` each for Binance and Aster), one
pushing task per venue, read by the real watchers (`TopicVenueWatcher`, `ForceOrderWatcher`) built on one
`Runtime` as the app builds it, into one `Pipeline` with the cascade detector over a fresh SQLite file.
The clock runs from the first frame pushed to the commit of the last event; every pushed frame must arrive
as one event, and the counts are printed. The fakes share the bot's process and loop, so their sending is
billed to the figure: a floor, not the watchers' ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.cascades import CascadeDetector, CascadeSettings, Thresholds
from bot.pipeline import Pipeline
from perpwatch.clock import SYSTEM_CLOCK
from perpwatch.events import Event, Venue
from storage import Store
from storage.models import AcceptResult
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.rest import FakeRest
from tests.fakes.venue_ws import FakeVenueStream
from watchers import bybit, forceorder, hyperliquid, lighter, okx, pacifica
from watchers.base import Watcher
from watchers.forceorder import ForceOrderWatcher
from watchers.runtime import Runtime, SharedSession
from watchers.venue_stream import TopicVenueWatcher, VenueStream
from watchers.ws import WsTuning

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
LIQUIDATOR = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"
"""A child of HLP in the documented `vaultDetails` sample, named a liquidator by `hyperliquid_info`."""
TRADER = "0x005844b2ffb2e122cf4244be7dbcb4f84924907c"


def _load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


def _load_plain(name: str) -> Any:
    """A sample as a loopback REST fake serves it (plain JSON numbers, no Decimal)."""
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


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


def _detector() -> CascadeDetector:
    return CascadeDetector(
        CascadeSettings(
            window=timedelta(seconds=60),
            symbol=Thresholds(10, Decimal(1_000_000)),
            market=Thresholds(50, Decimal(5_000_000)),
        )
    )


async def accept_rate(streams: dict[str, list[Event]], *, cascades: bool = True) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        async with Store(f"sqlite:///{folder}/bench.db") as store:
            pipeline = Pipeline(store.outbox, cascades=_detector() if cascades else None)

            async def produce(events: list[Event]) -> None:
                for event in events:
                    await pipeline.accept([event])

            started = time.perf_counter()
            await asyncio.gather(*(produce(events) for events in streams.values()))
            elapsed = time.perf_counter() - started
            total = sum(len(events) for events in streams.values())
            return total / elapsed, pipeline.stats.cascade_revisions


SOCKET_TUNING = WsTuning(
    probe_after_s=30, probe_timeout_s=10, max_lifetime_s=86400, backoff_initial_s=0.05, backoff_max_s=0.2
)
"""The tests' tuning: no probe, heartbeat or planned reconnect falls inside a run."""

STALL_S = 10.0
"""A run in which nothing more is committed for this long after the last push ends short (and says so)."""


def hyperliquid_info(request: Any) -> Any:
    """`/info` for `meta` and `vaultDetails` from the documented samples; HLP's children answer as children,
    `LIQUIDATOR` named as one (as `tests/test_venue_reconnects.py` answers them)."""
    if request == {"type": "meta"}:
        return _load_plain("hyperliquid_metaAndAssetCtxs_docs.json")[0]
    if request == {"type": "perpDexs"}:
        return [None]  # the main dex alone (research §8.5)
    body = _load_plain("hyperliquid_vaultDetails_docs.json")
    if request.get("vaultAddress") != hyperliquid.HLP_VAULT:
        name = "HLP Liquidator" if request.get("vaultAddress") == LIQUIDATOR else "HLP Strategy"
        body.update(vaultAddress=request.get("vaultAddress"), name=name, relationship={"type": "child"})
    return body


def _bybit_instruments() -> Any:
    """The documented instruments page, listing the symbol of the documented liquidation frame."""
    body = _load_plain("bybit_instrumentsInfo_docs.json")
    body["result"]["list"][0]["symbol"] = "ROSEUSDT"
    return body


@dataclass(frozen=True, slots=True)
class TopicFake:
    """One topic venue on loopback: its stream, the REST path of its markets, how that path is answered,
    and its ping -> pong."""

    stream: VenueStream[Any]
    path: str
    body: Callable[[], Any] | None
    """The markets' body; None: POSTs are answered by `hyperliquid_info`."""
    pongs: dict[str, str] = field(default_factory=dict)


TOPIC_FAKES: dict[str, TopicFake] = {
    "bybit": TopicFake(bybit.STREAM, "/v5/market/instruments-info", _bybit_instruments),
    "okx": TopicFake(
        okx.STREAM, "/api/v5/public/instruments", lambda: _load_plain("okx_instruments_ccxt.json"), {"ping": "pong"}
    ),
    "lighter": TopicFake(lighter.STREAM, "/api/v1/orderBooks", lambda: _load_plain("lighter_orderBooks_real.json")),
    "pacifica": TopicFake(pacifica.STREAM, "/api/v1/info", lambda: _load_plain("pacifica_info_docs.json")),
    "hyperliquid": TopicFake(hyperliquid.STREAM, "/info", None, {'{"method":"ping"}': '{"channel":"pong"}'}),
}


@dataclass
class SocketRun:
    """What one socket run pushed, what reached the store, and how fast."""

    pushed: dict[str, int]
    arrived: dict[str, int]
    """Per venue, the events its watcher handed to the pipeline and the pipeline took (committed or known)."""
    refused: dict[str, int]
    """Per venue, frames it could not read plus events it refused."""
    accepted: int
    """New events the pipeline committed (`PipelineStats.accepted`)."""
    duplicates: int
    revisions: int
    elapsed_s: float

    @property
    def total(self) -> int:
        return sum(self.pushed.values())


async def socket_rate(per_venue: int) -> SocketRun:
    """All seven venues streaming `per_venue` frames each at once, from their fakes through the real watchers
    into one pipeline; timed from the first frame pushed to the commit of the last event."""
    makers = {name: make for name, (make, _) in sample_streams().items()}
    texts = {name: [make(n) for n in range(per_venue)] for name, make in makers.items()}
    total = per_venue * len(texts)
    with tempfile.TemporaryDirectory() as folder:
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(Store(f"sqlite:///{folder}/bench.db"))
            committed = asyncio.Event()
            finished_at = 0.0

            def on_accepted(_events: Sequence[Event], _results: Sequence[AcceptResult]) -> None:
                nonlocal finished_at
                if pipeline.stats.accepted >= total and not finished_at:
                    finished_at = time.perf_counter()
                committed.set()

            pipeline = Pipeline(store.outbox, cascades=_detector(), on_accepted=on_accepted)
            runtime = Runtime(clock=SYSTEM_CLOCK, kv=store.watchers, session=SharedSession(), sink=pipeline)
            stack.push_async_callback(runtime.close)
            pushers: dict[str, Callable[[str], Any]] = {}
            watchers: dict[str, Watcher] = {}
            ready: list[Awaitable[None]] = []
            for name, fake in TOPIC_FAKES.items():
                venue = await stack.enter_async_context(FakeVenueStream(fake.pongs))
                # One REST fake per venue, as each venue is its own host: a shared one would put every venue
                # under the tightest venue's request budget (Lighter's), and Hyperliquid's 20-weight
                # reference requests would wait minutes.
                rest = await stack.enter_async_context(FakeRest(SYSTEM_CLOCK))
                path = fake.path
                if fake.body is None:
                    rest.answer_posts(path, hyperliquid_info)
                else:
                    rest.serve(path, fake.body())
                topic_watcher = TopicVenueWatcher(
                    fake.stream, venue.url, rest.url(path), SOCKET_TUNING, runtime.context(name)
                )
                watchers[name], pushers[name] = topic_watcher, venue.push
                ready.append(_subscribed(topic_watcher, fake.stream, venue))
            for forceorder_venue in forceorder.VENUES:
                server = await stack.enter_async_context(FakeForceOrderServer())
                context = runtime.context(forceorder_venue.value)
                watchers[forceorder_venue.value] = ForceOrderWatcher(
                    forceorder_venue, server.url, SOCKET_TUNING, clock=context.clock, session=context.session
                )
                pushers[forceorder_venue.value] = server.push
                ready.append(server.wait_connected(1))
            arrived = dict.fromkeys(watchers, 0)

            def counted(name: str) -> Callable[[Sequence[Event]], Awaitable[None]]:
                async def sink(events: Sequence[Event]) -> None:
                    await pipeline(events)
                    arrived[name] += len(events)

                return sink

            tasks = [asyncio.create_task(w.run(counted(n)), name=f"bench:{n}") for n, w in watchers.items()]

            async def stop() -> None:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await pipeline.drain()

            stack.push_async_callback(stop)
            await asyncio.gather(*ready)

            pushed = dict.fromkeys(texts, 0)

            async def push(name: str) -> None:
                send = pushers[name]
                for text in texts[name]:
                    await send(text)
                    pushed[name] += 1
                    await asyncio.sleep(0)  # the seven venues interleave, as on separate connections

            started = time.perf_counter()
            await asyncio.gather(*(push(name) for name in texts))
            while not finished_at:
                before = pipeline.stats.accepted + pipeline.stats.duplicates
                committed.clear()
                try:
                    async with asyncio.timeout(STALL_S):
                        await committed.wait()
                except TimeoutError:
                    if pipeline.stats.accepted + pipeline.stats.duplicates == before:
                        break
            elapsed = (finished_at or time.perf_counter()) - started
            return SocketRun(
                pushed=pushed,
                arrived=arrived,
                refused={name: w.health.parse_errors + sum(w.health.rejected.values()) for name, w in watchers.items()},
                accepted=pipeline.stats.accepted,
                duplicates=pipeline.stats.duplicates,
                revisions=pipeline.stats.cascade_revisions,
                elapsed_s=elapsed,
            )


async def _subscribed(watcher: TopicVenueWatcher[Any], stream: VenueStream[Any], venue: FakeVenueStream) -> None:
    """Until the fake holds one connection that sent exactly the venue's subscribe frames for its markets."""
    markets = await watcher.markets.ready()
    expected = sorted(stream.subscribe_frames(stream.topics_for(markets)))
    await venue.until(lambda: sorted(venue.received()) == expected)
    if len(venue.live) != 1:
        raise SystemExit(f"{stream.venue.value}: {len(venue.live)} connections; the bench pushes as if one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20_000, help="frames parsed per venue")
    parser.add_argument("--events", type=int, default=3_000, help="events accepted per venue")
    parser.add_argument("--socket-events", type=int, default=1_000, help="frames pushed per venue on its socket")
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
    run = asyncio.run(socket_rate(args.socket_events))
    print(
        f"sockets, 7 venues at once, pushed -> committed: {run.accepted:,} events at "
        f"{run.accepted / run.elapsed_s:,.0f} events/s ({run.revisions:,} cascade revisions)"
    )
    arrived = sum(run.arrived.values())
    print(
        f"sockets: pushed {run.total:,}, arrived {arrived:,}, committed {run.accepted:,} new"
        f" + {run.duplicates:,} duplicates, refused {sum(run.refused.values()):,}"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if not run.total == arrived == run.accepted:
        for name, count in run.pushed.items():
            print(f"  {name:<12} pushed {count:,} arrived {run.arrived[name]:,} refused {run.refused[name]:,}")
        raise SystemExit("sockets: not every pushed frame arrived as one event")


if __name__ == "__main__":
    main()
