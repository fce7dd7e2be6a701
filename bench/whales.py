"""Whale watcher benchmark: many watched wallets through the real watcher, on loopback. Prints figures,
asserts nothing.

    .venv/bin/python -m bench.whales                                  # 1,000 wallets, 60 s, 20 frames/s
    .venv/bin/python -m bench.whales --weight-per-min 1000 --seconds 180
    .venv/bin/python -m bench.whales --wallets 100 --seconds 10       # a quick look

The watcher is built as the bot builds it (`REGISTRY["hyperliquid_whales"]`, its own trades connection) with
its durable state in a fresh SQLite store, and hands its events to a real `Pipeline` over that store. The
`/info` it polls is the loopback fake (`tests.fakes.hyperliquid_info`), answering `clearinghouseState` for
every wallet (an ETH long of a size derived from the address, moved by the trades the bench streams, so a
reconcile agrees with the trades already told) and counting weight as the docs give it. The `trades`
stream is the loopback websocket: `--frames-per-s` frames, each of `--trades-per-frame` ETH trades of
which `--watched-per-frame` name a random watched wallet (as buyer or seller) against an unwatched
address; the rest are between unwatched addresses. The trades are small: no whale-trade alerts.

Figures:
  weight/min     the most weight the fake counted in any 60 s window (the whole run if shorter): of the
                 reconcile's requests against the watcher's share (`--weight-per-min`,
                 PERPWATCH_WHALE_WEIGHT_PER_MIN), and of every request against the host's 1,200.
  frame→commit   per position alert: the frame's push onto the socket to the pipeline's commit of the event
                 (`on_accepted`), matched by the trade id in the key `hl:pos:{wallet}:{coin}:{tid}:{tid}`.
                 Only wallets already seeded alert (the seeding snapshot holds what came before), so the
                 count of trades naming a seeded wallet is printed beside it.
  staleness      sampled every second for every wallet: time since its last completed reconcile (the book's
                 `checked_ms`); a wallet not yet seeded counts from the start of the run. Seeding: when
                 the last wallet was first reconciled, or how far it got.
  loop hold      the longest a 10 ms sleeper was held past its time: how busy the one event loop (watcher,
                 pipeline and both fakes) was; and the process's CPU time over the run.
  peak RSS       of the whole process (fakes included).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import logging
import random
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bot.pipeline import Pipeline
from bot.settings import load_settings
from perpwatch.clock import SYSTEM_CLOCK
from perpwatch.events import Event
from storage import Store
from storage.models import AcceptResult
from tests.fakes.hyperliquid_info import FakeInfo
from tests.fakes.rest import FakeRest
from tests.fakes.venue_ws import FakeVenueStream
from watchers import hl_account
from watchers.hyperliquid_whales import HyperliquidWhaleWatcher
from watchers.registry import REGISTRY
from watchers.runtime import Runtime
from watchers.whale_book import WalletBook

HOST_LIMIT = hl_account.WEIGHT_PER_MIN
PING = '{"method":"ping"}'
PONG = '{"channel":"pong"}'
PX = Decimal(3000)
SHARE_KINDS = frozenset({"clearinghouseState", "perpDexs", "userFillsByTime", "userNonFundingLedgerUpdates"})
"""What the reconcile asks, within the watcher's share; the rest (meta, vaultDetails: the trades connection's
reference data) draws on the host's budget only."""


def wallets(n: int) -> list[str]:
    return ["0x" + hashlib.sha256(f"bench wallet {i}".encode()).hexdigest()[:40] for i in range(n)]


def starting_size(wallet: str) -> Decimal:
    """An ETH long of 10 to 109, derived from the address."""
    return Decimal(10 + int(wallet[2:6], 16) % 100)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def max_in_window(stamps: Sequence[tuple[float, int]], window_s: float) -> int:
    """The most weight in any window of `window_s` starting at a request (two pointers: stamps are in order)."""
    best = total = 0
    end = 0
    for start in range(len(stamps)):
        while end < len(stamps) and stamps[end][0] < stamps[start][0] + window_s:
            total += stamps[end][1]
            end += 1
        best = max(best, total)
        total -= stamps[start][1]
    return best


@dataclass
class Result:
    wallets: int
    seconds: float
    weight_per_min: int
    frames_target: int = 0
    frames_pushed: int = 0
    trades_watched: int = 0
    trades_seeded: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    other_events: int = 0
    unmatched: int = 0
    staleness_s: list[float] = field(default_factory=list)
    staleness_seeded_s: list[float] = field(default_factory=list)
    final_staleness_s: list[float] = field(default_factory=list)
    watch_list_loaded_s: float | None = None
    first_seeded_s: float | None = None
    all_seeded_s: float | None = None
    seeded_at_end: int = 0
    max_weight_60s: int = 0
    max_share_60s: int = 0
    weight_total: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    reconcile_errors: int = 0
    loop_hold_ms: float = 0.0
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    cpu_s: float = 0.0
    interval_s: float = 0.0
    commits: int = 0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(
    *,
    n_wallets: int = 1000,
    seconds: float = 60.0,
    frames_per_s: float = 20.0,
    trades_per_frame: int = 4,
    watched_per_frame: int = 2,
    weight_per_min: int = 600,
    seed: int = 1,
) -> Result:
    result = Result(wallets=n_wallets, seconds=seconds, weight_per_min=weight_per_min, rss_start_mib=_rss_mib())
    rng = random.Random(seed)
    watched = wallets(n_wallets)
    watched_set = set(watched)
    held = {w: starting_size(w) for w in watched}
    info = FakeInfo(sizes=lambda user: held[user])
    pushed_at: dict[int, float] = {}
    """trade id -> perf_counter when its frame was pushed."""

    def accepted(events: Sequence[Event], results: Sequence[AcceptResult]) -> None:
        now = time.perf_counter()
        for event in events:
            parts = event.key.split(":")
            if parts[:2] != ["hl", "pos"] or parts[4] == "snap":
                result.other_events += 1
                continue
            stamp = pushed_at.get(int(parts[4]))
            if stamp is None:
                result.unmatched += 1
            else:
                result.latencies_ms.append((now - stamp) * 1000)

    async def watched_source() -> set[str]:
        return set(watched_set)

    with tempfile.TemporaryDirectory() as folder:
        async with (
            Store(f"sqlite:///{folder}/bench.db") as store,
            FakeRest(SYSTEM_CLOCK) as rest,
            FakeVenueStream({PING: PONG}) as ws,
        ):
            rest.answer_posts("/info", info)
            settings = load_settings(
                hyperliquid_ws_url=ws.url,
                hyperliquid_info_url=rest.url("/info"),
                whale_weight_per_min=weight_per_min,
            )
            pipeline = Pipeline(store.outbox, on_accepted=accepted)
            runtime = Runtime(clock=SYSTEM_CLOCK, kv=store.watchers, watched=watched_source)
            watcher = REGISTRY["hyperliquid_whales"].build(settings, runtime.context("hyperliquid_whales"))
            assert isinstance(watcher, HyperliquidWhaleWatcher)
            started = time.perf_counter()
            started_ms = time.time() * 1000
            cpu_before = _cpu_s()
            task = asyncio.create_task(watcher.run(pipeline))
            stop = asyncio.Event()

            async def loop_monitor() -> None:
                while not stop.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.01)
                    result.loop_hold_ms = max(result.loop_hold_ms, (time.perf_counter() - before - 0.01) * 1000)

            def sample(into_all: list[float], into_seeded: list[float] | None) -> int:
                now_ms = time.time() * 1000
                seeded = 0
                for wallet in watched:
                    book = watcher.books.get(wallet)
                    checked = book.checked_ms if book is not None else None
                    if checked is None:
                        into_all.append((now_ms - started_ms) / 1000)
                    else:
                        seeded += 1
                        into_all.append((now_ms - checked) / 1000)
                        if into_seeded is not None:
                            into_seeded.append((now_ms - checked) / 1000)
                return seeded

            async def sampler() -> None:
                while not stop.is_set():
                    if result.watch_list_loaded_s is None and len(watcher.books) == n_wallets:
                        result.watch_list_loaded_s = time.perf_counter() - started
                    seeded = sample(result.staleness_s, result.staleness_seeded_s)
                    if seeded and result.first_seeded_s is None:
                        result.first_seeded_s = time.perf_counter() - started
                    if seeded == n_wallets and result.all_seeded_s is None:
                        result.all_seeded_s = time.perf_counter() - started
                    await asyncio.sleep(1.0)

            async def pusher() -> None:
                await ws.until(lambda: bool(ws.received()))  # subscribed
                tids = itertools.count(10**15)
                others = itertools.count()
                begin = time.perf_counter()
                for n in itertools.count():
                    due = begin + n / frames_per_s
                    if due - started >= seconds:
                        return
                    result.frames_target += 1
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    now_ms = int(time.time() * 1000)
                    data = []
                    tids_here = []
                    for i in range(trades_per_frame):
                        tid = next(tids)
                        stranger = f"0x{next(others):040x}"
                        buyer, seller = stranger, f"0x{next(others):040x}"
                        sz = Decimal(rng.randint(1, 10)) / 10
                        if i < watched_per_frame:
                            wallet = rng.choice(watched)
                            buys = rng.random() < 0.5
                            buyer, seller = (wallet, stranger) if buys else (stranger, wallet)
                            held[wallet] += sz if buys else -sz  # the venue's account moves with the trade
                            result.trades_watched += 1
                            book = watcher.books.get(wallet)
                            if book is not None and book.seeded:
                                result.trades_seeded += 1
                            tids_here.append(tid)
                        data.append(
                            {
                                "coin": "ETH",
                                "side": rng.choice("AB"),
                                "px": str(PX),
                                "sz": str(sz),
                                "time": now_ms,
                                "hash": f"0x{tid:064x}",
                                "tid": tid,
                                "users": [buyer, seller],
                            }
                        )
                    text = json.dumps({"channel": "trades", "data": data})
                    stamp = time.perf_counter()
                    for tid in tids_here:
                        pushed_at[tid] = stamp
                    await ws.push(text)
                    result.frames_pushed += 1

            helpers = [asyncio.create_task(f()) for f in (loop_monitor, sampler)]
            try:
                push = asyncio.create_task(pusher())
                end = started + seconds
                await asyncio.wait([push, task], timeout=max(0.0, end - time.perf_counter()))
                if task.done():
                    task.result()  # the watcher died: say why
                await asyncio.sleep(min(1.0, max(0.0, end - time.perf_counter())) + 0.5)  # the last alerts land
                result.seeded_at_end = sample(result.final_staleness_s, None)
                result.cpu_s = _cpu_s() - cpu_before
            finally:
                stop.set()
                for t in (push, task, *helpers):
                    t.cancel()
                await asyncio.gather(push, task, *helpers, return_exceptions=True)
                await pipeline.drain()
                await runtime.close()
            result.reconcile_errors = watcher.health.parse_errors
            result.interval_s = watcher._interval_s(WalletBook(watched[0]))  # a wallet not near liquidation
            result.commits = pipeline.stats.commits
    stamps = sorted(info.weights)
    result.max_weight_60s = max_in_window(stamps, 60.0)
    result.max_share_60s = max_in_window(sorted((t, w) for t, kind, w in info.requests if kind in SHARE_KINDS), 60.0)
    result.weight_total = sum(w for _, w in stamps)
    for _, kind, _ in info.requests:
        result.requests[kind] = result.requests.get(kind, 0) + 1
    result.rss_peak_mib = _rss_mib()
    return result


def report(r: Result) -> None:
    span = "any 60 s window" if r.seconds >= 60 else f"the whole {r.seconds:.0f} s run"
    print(
        f"whales: {r.wallets:,} watched wallets, {r.seconds:.0f} s, share {r.weight_per_min} weight/min "
        f"(host limit {HOST_LIMIT:,})"
    )
    print(
        f"weight: max {r.max_share_60s:,} of the reconcile's in {span} ({r.max_share_60s / r.weight_per_min:.0%} "
        f"of the share); max {r.max_weight_60s:,} of all requests ({r.max_weight_60s / HOST_LIMIT:.0%} of the "
        f"host limit); {r.weight_total:,} in all; requests "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(r.requests.items()))
    )
    print(
        f"frames: {r.frames_pushed:,} pushed of {r.frames_target:,} due; {r.trades_watched:,} trades named a watched "
        f"wallet, {r.trades_seeded:,} of them one already seeded"
    )
    lat = r.latencies_ms
    print(
        f"frame→commit: {len(lat):,} position alerts, p50 {percentile(lat, 50):.1f} ms, "
        f"p99 {percentile(lat, 99):.1f} ms, max {max(lat, default=float('nan')):.1f} ms; "
        f"{r.commits:,} pipeline commits; {r.other_events:,} other events, {r.unmatched:,} unmatched"
    )
    loaded = "not done" if r.watch_list_loaded_s is None else f"{r.watch_list_loaded_s:.1f} s"
    first = "none" if r.first_seeded_s is None else f"{r.first_seeded_s:.1f} s"
    if r.all_seeded_s is not None:
        seeding = f"all {r.wallets:,} seeded by {r.all_seeded_s:.1f} s"
    else:
        per_min = r.weight_per_min / hl_account.weight("clearinghouseState")  # one dex here
        left = (r.wallets - r.seeded_at_end) / per_min * 60
        seeding = (
            f"NOT all seeded: {r.seeded_at_end:,} of {r.wallets:,} at the end; at the share's {per_min:,.0f} "
            f"wallets/min (in bursts, as its trailing 60 s window frees) the rest need about {left:.0f} s more, "
            f"~{r.wallets / per_min * 60:.0f} s from the start in all"
        )
    print(f"seeding: watch list loaded in {loaded}, first wallet seeded at {first}, {seeding}")
    print(
        f"staleness (all wallets, unseeded counted from the start): p99 {percentile(r.staleness_s, 99):.1f} s, "
        f"max {max(r.staleness_s, default=float('nan')):.1f} s; at the end p99 "
        f"{percentile(r.final_staleness_s, 99):.1f} s, max {max(r.final_staleness_s, default=float('nan')):.1f} s"
    )
    print(
        f"staleness (seeded wallets only): p99 {percentile(r.staleness_seeded_s, 99):.1f} s, "
        f"max {max(r.staleness_seeded_s, default=float('nan')):.1f} s; reconcile errors {r.reconcile_errors}; "
        f"the watcher's interval per wallet at this size {r.interval_s:.0f} s (steady-state staleness needs a run "
        f"past seeding plus that)"
    )
    print(
        f"loop hold: max {r.loop_hold_ms:.1f} ms; CPU {r.cpu_s:.1f} s over the run "
        f"({r.cpu_s / r.seconds:.0%} of one core, watcher, pipeline and both fakes)"
    )
    print(f"peak RSS: {r.rss_peak_mib:.0f} MiB (at start {r.rss_start_mib:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wallets", type=int, default=1000, help="watched wallets")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the run")
    parser.add_argument("--frames-per-s", type=float, default=20.0, help="trades frames pushed per second")
    parser.add_argument("--trades-per-frame", type=int, default=4, help="trades in each frame")
    parser.add_argument("--watched-per-frame", type=int, default=2, help="of those, trades naming a watched wallet")
    parser.add_argument(
        "--weight-per-min", type=int, default=600, help="the watcher's share (PERPWATCH_WHALE_WEIGHT_PER_MIN, 20-1000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed for the frames")
    args = parser.parse_args()
    if not 20 <= args.weight_per_min <= HOST_LIMIT:
        parser.error(f"--weight-per-min must be within 20 and {HOST_LIMIT}")
    if not 0 <= args.watched_per_frame <= args.trades_per_frame:
        parser.error("--watched-per-frame must be within 0 and --trades-per-frame")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    result = asyncio.run(
        run(
            n_wallets=args.wallets,
            seconds=args.seconds,
            frames_per_s=args.frames_per_s,
            trades_per_frame=args.trades_per_frame,
            watched_per_frame=args.watched_per_frame,
            weight_per_min=args.weight_per_min,
            seed=args.seed,
        )
    )
    report(result)


if __name__ == "__main__":
    main()
