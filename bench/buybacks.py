"""Buyback storage benchmark: a year of history for every default programme, recorded as the sources record
it, then what the reports read from it. Prints figures, asserts nothing.

    .venv/bin/python -m bench.buybacks                                      # SQLite, 365 days
    .venv/bin/python -m bench.buybacks --engine postgresql postgresql://user:pw@host/postgres
    .venv/bin/python -m bench.buybacks --days 30                            # a quick look

Every bundled programme (bot/data/buybacks.toml) gets a history, and so does a DefiLlama one added as an
operator would (none ships). The history is generated, seeded, by the programme's kind at its real cadence
(research/unlocks-buybacks-tge.md §2): the Hyperliquid Assistance Fund as a balance snapshot every 300 s
with the rise since the one before as its buy (one step, one transaction each, a few snapshots missed and
marked as gaps), Aster's buyback wallet as a few hundred fills a day in pages of 1,000, the edgeX wallet's
ERC-20 inflows (tens a day, tokens only, a page per six hours), Lighter's treasury trades (hundreds a day,
pages of 100, as the explorer serves them) and DefiLlama's holders revenue (one estimated USD figure a day,
the whole chart in one step). Every step goes through
`BuybackRepo.record`, as the sources' poller does.

Figures:
  rows stored    buys and snapshots, by programme.
  record         wall time to record each programme's steps (steps per second beside it).
  totals         `totals` (24h/7d/30d/all) of each programme: the median of `--runs` runs, at the end of
                 the history.
  chart          `days` of each programme, then `draw_cumulative` of its chart (days -> PNG): medians.
  (On PostgreSQL the tables are analyzed before the reads, as autovacuum would have done after such a
  load: plans made with no statistics read the small programmes far more slowly than a live bot would.)
  storage        what the history takes: the SQLite file (and its WAL) after the store closed, or on
                 PostgreSQL the four buyback tables' pg_total_relation_size.

On PostgreSQL the URL names a server the bench may create a database on: it creates `perpwatch_bench_…`
there, fills it, and drops it at the end, so nothing of the bot's own database is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from bot.buyback_chart import draw_cumulative
from bot.buyback_programmes import bundled
from perpwatch.buybacks import Buy, Fetched, Programme, RunningTotal, Snapshot
from perpwatch.clock import FrozenClock
from storage import Store

END = datetime(2026, 12, 1, tzinfo=UTC)
"""Where the generated history ends: fixed, so two runs store the same rows."""

SNAPSHOT_EVERY_S = 300
MISSED_SNAPSHOTS = 0.002
"""The share of Hyperliquid snapshots missed (a source down for a poll): the next one carries the gap."""

TABLES = ("buyback_programmes", "buyback_buys", "buyback_snapshots", "buyback_sources")

DEFILLAMA = Programme(
    id="hyperliquid-llama",
    kind="defillama_holders_revenue",
    token="coingecko:hyperliquid",
    symbol="HYPE",
    params={"slug": "hyperliquid"},
    source="https://api.llama.fi/summary/fees/hyperliquid?dataType=dailyHoldersRevenue",
    origin="chat",
)
"""No DefiLlama programme ships; the bench adds one as an operator would, so every kind's cadence is measured."""


def programmes() -> list[Programme]:
    """Every bundled programme (bot/data/buybacks.toml) and the DefiLlama one, in that order."""
    loaded, refused = bundled()
    if refused:
        raise SystemExit(f"bundled buyback programmes refused: {refused}")
    return [*loaded, DEFILLAMA]


Steps = Iterator[Fetched]
T = TypeVar("T")


def _amount(rng: random.Random, mean: float, places: int = 8) -> Decimal:
    return Decimal(f"{rng.uniform(0.2, 1.8) * mean:.{places}f}")


def hyperliquid_steps(rng: random.Random, start: datetime, end: datetime) -> Steps:
    """A snapshot every 300 s; each after the first yields the rise in the balance as a buy over the time
    since the snapshot before it."""
    balance, cost = Decimal("30000000"), Decimal("850000000")
    previous: datetime | None = None
    at = start
    while at <= end:
        if previous is not None and rng.random() < MISSED_SNAPSHOTS:
            at += timedelta(seconds=SNAPSHOT_EVERY_S)
            continue
        buys: list[Buy] = []
        gap = None
        if previous is not None:
            tokens = _amount(rng, 450)
            usd = (tokens * Decimal(f"{rng.uniform(25, 35):.4f}")).quantize(Decimal("0.000001"))
            balance += tokens
            cost += usd
            key = f"snapshot:{at.isoformat(timespec='milliseconds')}"
            buys.append(Buy(key=key, start=previous, end=at, tokens=tokens, usd=usd))
            span = (at - previous).total_seconds()
            gap = span if span > SNAPSHOT_EVERY_S else None
        snapshot = Snapshot(taken_at=at, balance=balance, cost_usd=cost, gap_s=gap)
        total = RunningTotal(tokens=balance, usd=cost, source="spotClearinghouseState", as_of=at)
        yield Fetched(buys=buys, cursor={"token_index": 150}, snapshot=snapshot, running_total=total)
        previous = at
        at += timedelta(seconds=SNAPSHOT_EVERY_S)


def fills(
    rng: random.Random, start: datetime, end: datetime, *, per_day: int, tokens: float, price: float | None, key: str
) -> list[Buy]:
    """Instant buys at random times, in order: fills, inflows, trades."""
    seconds = (end - start).total_seconds()
    count = round(per_day * seconds / 86400)
    moments = sorted(start + timedelta(seconds=rng.uniform(0, seconds)) for _ in range(count))
    out = []
    for i, moment in enumerate(moments):
        amount = _amount(rng, tokens)
        usd = None
        if price is not None:  # an ERC-20 transfer carries no price
            usd = (amount * Decimal(f"{rng.uniform(0.8, 1.2) * price:.6f}")).quantize(Decimal("0.000001"))
        out.append(
            Buy(key=f"{key}:{i}:{int(moment.timestamp() * 1000)}", start=moment, end=moment, tokens=amount, usd=usd)
        )
    return out


def paged(buys: list[Buy], page: int) -> Steps:
    for i in range(0, len(buys), page):
        chunk = buys[i : i + page]
        yield Fetched(buys=chunk, cursor={"after_ms": int(chunk[-1].end.timestamp() * 1000)}, more=True)


def by_period(buys: list[Buy], start: datetime, period: timedelta) -> Steps:
    """One step per block range (six hours of an EVM chain's logs), empty ones included."""
    at, i = start, 0
    while i < len(buys):
        upto = at + period
        chunk = []
        while i < len(buys) and buys[i].end < upto:
            chunk.append(buys[i])
            i += 1
        yield Fetched(buys=chunk, cursor={"to": upto.isoformat()})
        at = upto


def defillama_steps(start: datetime, end: datetime, rng: random.Random) -> Steps:
    days = []
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day + timedelta(days=1) <= end:
        usd = Decimal(f"{rng.uniform(0.8, 2.4) * 1_000_000:.2f}")
        key = day.date().isoformat()
        days.append(Buy(key=key, start=day, end=day + timedelta(days=1), tokens=None, usd=usd, basis="estimated"))
        day += timedelta(days=1)
    yield Fetched(buys=days, cursor={"last_day": days[-1].key if days else None})


def steps_for(programme: Programme, days: int, seed: int) -> Steps:
    rng = random.Random(f"{seed}:{programme.id}")
    start = END - timedelta(days=days)
    if programme.kind == "hyperliquid_spot_balance":
        return hyperliquid_steps(rng, start, END)
    if programme.kind == "aster_chain_fills":
        return paged(fills(rng, start, END, per_day=300, tokens=70_000, price=0.7, key="fill"), 1000)
    if programme.kind == "evm_erc20_inflow":
        buys = fills(rng, start, END, per_day=30, tokens=25_000, price=None, key="0xtx")
        return by_period(buys, start, timedelta(hours=6))
    if programme.kind == "lighter_account_trades":
        return paged(fills(rng, start, END, per_day=400, tokens=5_000, price=2.5, key="trade"), 100)
    return defillama_steps(start, END, rng)


@dataclass
class Result:
    engine: str
    days: int
    buys: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    record_s: dict[str, float] = field(default_factory=dict)
    totals_ms: dict[str, float] = field(default_factory=dict)
    days_ms: dict[str, float] = field(default_factory=dict)
    draw_ms: dict[str, float] = field(default_factory=dict)
    png_bytes: dict[str, int] = field(default_factory=dict)
    storage_bytes: int = 0
    all_tokens: dict[str, Decimal | None] = field(default_factory=dict)


async def _timed(work: Callable[[], Awaitable[T]], runs: int) -> tuple[float, T]:
    """The median wall time of `runs` runs in ms, and the last run's result."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


@contextlib.asynccontextmanager
async def _database(server: str | None) -> AsyncIterator[tuple[str, Path | None]]:
    """(URL, SQLite file or None): a fresh SQLite file in a temp folder, or a fresh database on the server."""
    if server is None:
        with tempfile.TemporaryDirectory(prefix="perpwatch-bench-") as folder:
            path = Path(folder) / "buybacks.db"
            yield f"sqlite:///{path}", path
        return
    import asyncpg

    name = f"perpwatch_bench_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}")), None
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(*, days: int = 365, server: str | None = None, runs: int = 5, seed: int = 1) -> Result:
    """Generate, record and read back `days` of every programme; `server` a PostgreSQL URL, else SQLite."""
    result = Result(engine="sqlite" if server is None else "postgresql", days=days)
    chosen = programmes()
    clock = FrozenClock(END)
    async with _database(server) as (url, path):
        async with Store(url, clock=clock) as store:
            repo = store.buybacks
            await repo.merge_bundled([p for p in chosen if p.origin == "bundled"])
            for programme in chosen:
                if programme.origin == "chat":
                    await repo.add(programme)
            for programme in chosen:
                steps = buys = 0
                started = time.perf_counter()
                for fetched in steps_for(programme, days, seed):
                    at = fetched.snapshot.taken_at if fetched.snapshot else END
                    buys += await repo.record(programme.id, fetched, at=at)
                    steps += 1
                    await store.db.make_room()
                result.record_s[programme.id] = time.perf_counter() - started
                result.steps[programme.id] = steps
                result.buys[programme.id] = buys
                result.snapshots[programme.id] = await repo.snapshot_count(programme.id)
            if server is not None:  # as autovacuum would have by now: plans made without statistics mislead
                for table in TABLES:
                    await store.db.execute(f"ANALYZE {table}")
            for programme in chosen:
                pid = programme.id
                result.totals_ms[pid], totals = await _timed(partial(repo.totals, pid, END), runs)
                result.all_tokens[pid] = totals[-1].tokens if totals[-1].tokens_known else None
                result.days_ms[pid], points = await _timed(partial(repo.days, pid), runs)
                draw = partial(
                    asyncio.to_thread,
                    draw_cumulative,
                    [(pid, points)],
                    title=f"{programme.symbol} buybacks",
                    token_symbol=programme.symbol,
                )
                result.draw_ms[pid], png = await _timed(draw, max(1, min(runs, 3)))
                result.png_bytes[pid] = len(png)
            if path is None:
                [row] = await store.db.fetch("SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in TABLES))
                result.storage_bytes = int(row[0])
        if path is not None:
            result.storage_bytes = await asyncio.to_thread(_file_bytes, path)
    return result


def report(result: Result) -> list[str]:
    lines = [f"engine: {result.engine}, {result.days} days of history ending {END.date()}"]
    header = f"{'programme':<18} {'steps':>8} {'buys':>9} {'snapshots':>9} {'record s':>9} {'steps/s':>8}"
    header += f" {'totals ms':>9} {'days ms':>8} {'draw ms':>8} {'PNG KiB':>8}"
    lines += [header, "-" * len(header)]
    for pid in result.buys:
        record_s = result.record_s[pid]
        lines.append(
            f"{pid:<18} {result.steps[pid]:>8,} {result.buys[pid]:>9,} {result.snapshots[pid]:>9,} "
            f"{record_s:>9.2f} {result.steps[pid] / record_s if record_s else 0:>8,.0f} "
            f"{result.totals_ms[pid]:>9.1f} {result.days_ms[pid]:>8.1f} {result.draw_ms[pid]:>8.0f} "
            f"{result.png_bytes[pid] / 1024:>8.0f}"
        )
    rows = sum(result.buys.values()) + sum(result.snapshots.values())
    lines.append(
        f"rows stored: {sum(result.buys.values()):,} buys + {sum(result.snapshots.values()):,} snapshots; "
        f"recorded in {sum(result.record_s.values()):.1f} s"
    )
    storage = result.storage_bytes
    what = "SQLite file and WAL" if result.engine == "sqlite" else "pg_total_relation_size of the buyback tables"
    lines.append(f"storage: {storage / 2**20:.1f} MiB ({what}), {storage / max(rows, 1):.0f} bytes a row")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--engine",
        nargs="+",
        default=["sqlite"],
        metavar="ENGINE [URL]",
        help="sqlite (a temp file), or postgresql and a server URL the bench may create a database on",
    )
    parser.add_argument("--days", type=int, default=365, help="days of history to generate")
    parser.add_argument("--runs", type=int, default=5, help="runs of each read, for its median")
    args = parser.parse_args()
    engine, *rest = args.engine
    if engine == "sqlite" and not rest:
        server = None
    elif engine == "postgresql" and len(rest) == 1:
        server = rest[0]
    else:
        parser.error("--engine sqlite, or --engine postgresql postgresql://user:password@host:port/db")
    if args.days < 1:
        parser.error("--days must be at least 1")
    print("\n".join(report(asyncio.run(run(days=args.days, server=server, runs=args.runs)))), flush=True)


if __name__ == "__main__":
    main()
