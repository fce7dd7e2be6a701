"""PostgreSQL drivers for the bot, asyncpg against psycopg 3, used the way the bot would use them: prints
figures, asserts nothing.

    .venv/bin/python -m bench.pg_drivers --database-url postgresql://user:password@127.0.0.1:5432/db
    .venv/bin/python -m bench.pg_drivers --database-url ... --quick     # smaller counts, same shape

Needs `asyncpg`, `psycopg[binary]` and `psycopg-pool` installed beside the bot (they are not its dependencies).
Both drivers run on one asyncio loop, as the bot holds its storage: asyncpg through `asyncpg.create_pool` and a
connection (`$1` parameters; its statement cache prepares every statement), psycopg 3 through `AsyncConnection`
and `psycopg_pool.AsyncConnectionPool` (`%s` parameters; `prepare_threshold=0`, so every statement is prepared on
its first use; autocommit, so a transaction is an explicit BEGIN … COMMIT). Pools hold 8 connections.

1. round trip: `SELECT $1::bigint` 5,000 times, on one held connection and through the pool (acquire, query,
   release): µs p50 / p99. asyncpg's pool also with `reset=` a no-op: by default its release costs one more
   round trip (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`);
2. accept: transactions of the bot's accept shape, BEGIN; 100 × INSERT INTO events … ON CONFLICT (key) DO
   NOTHING RETURNING id; COMMIT, in three ways: one statement after another (what today's SQLite accept does),
   the driver's executemany that returns the ids (asyncpg `fetchmany`, psycopg `executemany(returning=True)`,
   both pipelined), and one multi-row `INSERT … SELECT * FROM unnest($1::text[], …)`, psycopg's also with `%b`
   (binary) parameters, since its text form quotes every array element in Python. Events/s with 1 producer and
   with 7 producer tasks sharing the pool; every key is new;
3. fetch: 100 rows × 15 columns (text, bigint, timestamptz, boolean) on a held connection: µs per fetch and CPU
   per row; psycopg also with binary results (`binary=True`);
4. CPU: `time.process_time()` over each run divided by its statements, events or rows: the time the bot's
   event loop can do nothing else (the server's own CPU is not in it);
5. import time (asyncio already imported, as in the bot) and RSS after one connection and after a pool of 8,
   each in a fresh interpreter.

Every measurement runs 3 times, the drivers taking turns; the table shows the median and, in brackets, the
smallest and largest of the three. On a small shared machine the round-trip latencies swing the most (the
client and the server take turns on the same few cores); CPU per statement is the steadier figure. The
benchmark keeps its tables in a schema of its own (`bench_pg_drivers`), dropped at the end. The password is
handed to the fresh interpreters in the environment, not on their command line.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the drivers are not the bot's dependencies: mypy passes with or without them installed
    import psycopg  # type: ignore[import-not-found, unused-ignore]
    import psycopg_pool  # type: ignore[import-not-found, unused-ignore]

REPEATS = 3
POOL_SIZE = 8
PRODUCERS = 7
BATCH = 100
SCHEMA = "bench_pg_drivers"
APPROACHES = ("one by one", "executemany", "unnest")
BINARY_UNNEST = "unnest, %b"  # psycopg only: the same statement with binary parameters
URL_ENV = "PG_DRIVERS_BENCH_URL"

_INSERT = (
    "INSERT INTO bench_pg_drivers.events (key, topic, body, occurred_at, usd_cents) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT (key) DO NOTHING RETURNING id"
)
# Many rows in one statement: which keys were new must come back with the ids, since a conflict returns no row.
_UNNEST = (
    "INSERT INTO bench_pg_drivers.events (key, topic, body, occurred_at, usd_cents) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[]) "
    "ON CONFLICT (key) DO NOTHING RETURNING id, key"
)
_P_INSERT = re.sub(r"\$\d", "%s", _INSERT)  # psycopg's placeholders, same statements
_P_UNNEST = re.sub(r"\$\d", "%s", _UNNEST)
_P_UNNEST_BINARY = re.sub(r"\$\d", "%b", _UNNEST)  # %b: psycopg sends the arrays in binary
_FETCH = (
    "SELECT id, t1, t2, t3, t4, b1, b2, b3, ts1, ts2, ts3, ts4, f1, f2, f3 "
    "FROM bench_pg_drivers.fetch_rows ORDER BY id LIMIT 100"
)
_SETUP = [
    f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
    f"CREATE SCHEMA {SCHEMA}",
    # The shape of the bot's events table where it matters: an identity id, a unique key, the recent-index.
    f"""CREATE TABLE {SCHEMA}.events (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key         text NOT NULL UNIQUE,
        topic       text NOT NULL,
        body        text NOT NULL,
        occurred_at timestamptz NOT NULL,
        usd_cents   bigint
    )""",
    f"CREATE INDEX events_recent ON {SCHEMA}.events (topic, occurred_at)",
    f"""CREATE TABLE {SCHEMA}.fetch_rows (
        id bigint PRIMARY KEY,
        t1 text NOT NULL, t2 text NOT NULL, t3 text, t4 text,
        b1 bigint NOT NULL, b2 bigint NOT NULL, b3 bigint,
        ts1 timestamptz NOT NULL, ts2 timestamptz NOT NULL, ts3 timestamptz, ts4 timestamptz,
        f1 boolean NOT NULL, f2 boolean NOT NULL, f3 boolean
    )""",
    """INSERT INTO bench_pg_drivers.fetch_rows
        SELECT g, 'telegram', '-100' || (1234567890 + g), 'pending', 'liquidation:binance:BTCUSDT:' || g,
               g * 1000, g * 7, CASE WHEN g % 3 = 0 THEN NULL ELSE g END,
               now() - g * interval '1 minute', now(), CASE WHEN g % 2 = 0 THEN NULL ELSE now() END,
               now() + g * interval '1 second',
               g % 2 = 0, g % 3 = 0, CASE WHEN g % 5 = 0 THEN NULL ELSE true END
        FROM generate_series(1, 100) AS g""",
    f"ANALYZE {SCHEMA}.fetch_rows",
]

Row = tuple[str, str, str, datetime, int]


def load_asyncpg() -> Any:
    """asyncpg, imported only when used, so a fresh interpreter measures its import alone (it has no types)."""
    import asyncpg  # type: ignore[import-untyped, import-not-found, unused-ignore]

    return asyncpg


@dataclass(frozen=True)
class Batch:
    """One accept's events, as rows and as the columns the unnest form takes."""

    rows: list[Row]

    def columns(self) -> tuple[list[str], list[str], list[str], list[datetime], list[int]]:
        return (
            [r[0] for r in self.rows],
            [r[1] for r in self.rows],
            [r[2] for r in self.rows],
            [r[3] for r in self.rows],
            [r[4] for r in self.rows],
        )


def make_batch(tag: str) -> Batch:
    """100 new events shaped like the bot's: a ~350-byte JSON body, a key nothing else uses."""
    start = datetime(2026, 12, 2, tzinfo=UTC)
    rows: list[Row] = []
    for i in range(BATCH):
        key = f"liquidation:binance:{tag}:{i}"
        usd = 1_000 + 37 * i
        body = json.dumps(
            {
                "key": key,
                "topic": "liquidation",
                "source": "binance",
                "venue": "binance",
                "symbol": "BTCUSDT",
                "usd": str(usd),
                "occurred_at": (start + timedelta(seconds=i)).isoformat(),
                "body": {
                    "kind": "liquidation",
                    "side": "long",
                    "size": "1",
                    "price": str(usd),
                    "notional_usd": str(usd),
                },
                "link": None,
                "subject": None,
                "thread": None,
                "revision": 0,
                "due_at": None,
                "expires_at": None,
            },
            separators=(",", ":"),
        )
        rows.append((key, "liquidation", body, start + timedelta(seconds=i), usd * 100))
    return Batch(rows)


class Driver(abc.ABC):
    name: str
    pool_kinds: tuple[str, ...] = ("pool",)
    approaches: tuple[str, ...] = APPROACHES
    fetch_kinds: tuple[str, ...] = ("",)

    @abc.abstractmethod
    async def open(self, url: str) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def admin(self, sql: str) -> None:
        """Run a statement outside any measurement, on the held connection."""

    @abc.abstractmethod
    async def select_held(self, i: int) -> int: ...

    @abc.abstractmethod
    async def select_pooled(self, kind: str, i: int) -> int: ...

    @abc.abstractmethod
    async def accept(self, approach: str, batch: Batch) -> int:
        """One transaction storing the batch through a pooled connection; returns how many ids came back."""

    @abc.abstractmethod
    async def fetch(self, kind: str) -> int: ...


async def _no_reset(_conn: Any) -> None:
    """asyncpg's pool runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release,
    one more round trip; a storage layer that leaves no session state behind may skip it with this."""


class Asyncpg(Driver):
    name = "asyncpg"
    pool_kinds = ("pool", "pool, reset=no-op")

    def __init__(self) -> None:
        self._conn: Any = None
        self._pool: Any = None
        self._pool_no_reset: Any = None

    async def open(self, url: str) -> None:
        asyncpg = load_asyncpg()
        self._conn = await asyncpg.connect(url)
        self._pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        self._pool_no_reset = await asyncpg.create_pool(url, min_size=1, max_size=1, reset=_no_reset)

    async def close(self) -> None:
        await self._pool_no_reset.close()
        await self._pool.close()
        await self._conn.close()

    async def admin(self, sql: str) -> None:
        await self._conn.execute(sql)

    async def select_held(self, i: int) -> int:
        return int(await self._conn.fetchval("SELECT $1::bigint", i))

    async def select_pooled(self, kind: str, i: int) -> int:
        async with (self._pool if kind == "pool" else self._pool_no_reset).acquire() as conn:
            return int(await conn.fetchval("SELECT $1::bigint", i))

    async def accept(self, approach: str, batch: Batch) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if approach == "one by one":
                new = 0
                for row in batch.rows:
                    if await conn.fetchval(_INSERT, *row) is not None:
                        new += 1
                return new
            if approach == "executemany":
                # fetchmany (asyncpg >= 0.30) returns the rows of all the executions as one flat list.
                return len(await conn.fetchmany(_INSERT, batch.rows))
            return len(await conn.fetch(_UNNEST, *batch.columns()))

    async def fetch(self, kind: str) -> int:
        return len(await self._conn.fetch(_FETCH))


class Psycopg(Driver):
    name = "psycopg"
    approaches = (*APPROACHES, BINARY_UNNEST)
    fetch_kinds = ("", "binary")

    def __init__(self) -> None:
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] | None = None

    @property
    def conn(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        assert self._conn is not None
        return self._conn

    @property
    def pool(self) -> psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]:
        assert self._pool is not None
        return self._pool

    async def open(self, url: str) -> None:
        import psycopg  # type: ignore[import-not-found, unused-ignore]
        import psycopg_pool  # type: ignore[import-not-found, unused-ignore]

        self._conn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0)
        self._pool = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True, "prepare_threshold": 0},
            open=False,
        )
        await self._pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()
        await self.conn.close()

    async def admin(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def select_held(self, i: int) -> int:
        cur = await self.conn.execute("SELECT %s::bigint", (i,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def select_pooled(self, kind: str, i: int) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT %s::bigint", (i,))
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def accept(self, approach: str, batch: Batch) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            if approach == "one by one":
                new = 0
                for row in batch.rows:
                    cur = await conn.execute(_P_INSERT, row)
                    if await cur.fetchone() is not None:
                        new += 1
                return new
            if approach == "executemany":
                new = 0
                async with conn.cursor() as cur:
                    # One result set per execution, in order: a conflict is an empty set, not a missing one.
                    await cur.executemany(_P_INSERT, batch.rows, returning=True)
                    async for result in cur.results():
                        if await result.fetchone() is not None:
                            new += 1
                return new
            unnest = _P_UNNEST_BINARY if approach == BINARY_UNNEST else _P_UNNEST
            cur = await conn.execute(unnest, batch.columns())
            return len(await cur.fetchall())

    async def fetch(self, kind: str) -> int:
        cur = await self.conn.execute(_FETCH, binary=kind == "binary")
        return len(await cur.fetchall())


DRIVERS: dict[str, Callable[[], Driver]] = {"asyncpg": Asyncpg, "psycopg": Psycopg}


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float
    samples: list[float]  # seconds per operation


def pct(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


async def timed(op: Callable[[int], Awaitable[object]], n: int) -> Timed:
    samples: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        samples.append(time.perf_counter() - t)
    return Timed(time.perf_counter() - wall0, time.process_time() - cpu0, samples)


async def run_accept(driver: Driver, approach: str, batches: list[list[Batch]]) -> Timed:
    """Each producer stores its batches one transaction after another; the producers run as tasks together."""
    samples: list[float] = []

    async def producer(mine: list[Batch]) -> None:
        for batch in mine:
            t = time.perf_counter()
            stored = await driver.accept(approach, batch)
            samples.append(time.perf_counter() - t)
            if stored != BATCH:
                raise RuntimeError(f"{driver.name} {approach}: {stored} ids for {BATCH} new events")

    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for mine in batches:
            tg.create_task(producer(mine))
    return Timed(time.perf_counter() - wall0, time.process_time() - cpu0, samples)


Figures = dict[str, dict[str, list[float]]]  # metric → driver → one figure per repeat


def record(figures: Figures, metric: str, driver: str, value: float) -> None:
    figures.setdefault(metric, {}).setdefault(driver, []).append(value)


@dataclass(frozen=True)
class Counts:
    selects: int
    txns_one: int  # transactions for the single producer
    txns_each: int  # transactions for each of the 7 producers
    fetches: int


def fetcher(driver: Driver, kind: str) -> Callable[[int], Awaitable[int]]:
    async def op(_i: int) -> int:
        return await driver.fetch(kind)

    return op


def pooled(driver: Driver, kind: str) -> Callable[[int], Awaitable[int]]:
    async def op(i: int) -> int:
        return await driver.select_pooled(kind, i)

    return op


async def measure(driver: Driver, counts: Counts, rep: int, figures: Figures) -> None:
    name = driver.name
    selects = [("held", driver.select_held)] + [(kind, pooled(driver, kind)) for kind in driver.pool_kinds]
    for label, op in selects:
        await timed(op, 300)  # warm: statements prepared, the pool's connections in use
        t = await timed(op, counts.selects)
        record(figures, f"select {label} p50", name, pct(t.samples, 0.50) * 1e6)
        record(figures, f"select {label} p99", name, pct(t.samples, 0.99) * 1e6)
        record(figures, f"select {label} cpu", name, t.cpu_s / counts.selects * 1e6)

    for approach in driver.approaches:
        for producers, txns in ((1, counts.txns_one), (PRODUCERS, counts.txns_each)):
            tag = f"{name}:{rep}:{approach}:{producers}"
            # Warm every pooled connection's prepared statements with one transaction each, then start empty.
            await run_accept(driver, approach, [[make_batch(f"{tag}:warm:{p}")] for p in range(POOL_SIZE)])
            await driver.admin(f"TRUNCATE {SCHEMA}.events")
            batches = [[make_batch(f"{tag}:{p}:{i}") for i in range(txns)] for p in range(producers)]
            t = await run_accept(driver, approach, batches)
            events = producers * txns * BATCH
            key = f"accept {approach} x{producers}"
            record(figures, f"{key} events/s", name, events / t.wall_s)
            record(figures, f"{key} txn p50", name, pct(t.samples, 0.50) * 1e3)
            record(figures, f"{key} cpu", name, t.cpu_s / events * 1e6)
            record(figures, f"{key} core", name, t.cpu_s / t.wall_s * 100)

    for kind in driver.fetch_kinds:
        label = f"{name} {kind}".strip()
        fetch_op = fetcher(driver, kind)
        await timed(fetch_op, 200)
        t = await timed(fetch_op, counts.fetches)
        record(figures, "fetch p50", label, pct(t.samples, 0.50) * 1e6)
        record(figures, "fetch p99", label, pct(t.samples, 0.99) * 1e6)
        record(figures, "fetch cpu/row", label, t.cpu_s / (counts.fetches * 100) * 1e6)
        record(figures, "fetch cpu/fetch", label, t.cpu_s / counts.fetches * 1e6)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


async def probe(name: str, url: str) -> dict[str, float]:
    """In a fresh interpreter: import the driver, connect once, open a pool of 8. Prints JSON."""
    base = rss_mib()
    t0 = time.perf_counter()
    if name == "asyncpg":
        asyncpg = load_asyncpg()

        import_ms = (time.perf_counter() - t0) * 1e3
        conn = await asyncpg.connect(url)
        one = rss_mib()
        pool = await asyncpg.create_pool(url, min_size=POOL_SIZE, max_size=POOL_SIZE)
        pooled = rss_mib()
        await pool.close()
        await conn.close()
    else:
        import psycopg  # type: ignore[import-not-found, unused-ignore]
        import psycopg_pool  # type: ignore[import-not-found, unused-ignore]

        import_ms = (time.perf_counter() - t0) * 1e3
        pconn = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=0)
        one = rss_mib()
        ppool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]] = (
            psycopg_pool.AsyncConnectionPool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False)
        )
        await ppool.open(wait=True)
        pooled = rss_mib()
        await ppool.close()
        await pconn.close()
    return {"import_ms": import_ms, "rss_base": base, "rss_one": one, "rss_pool": pooled}


def run_probes(url: str, figures: Figures) -> None:
    env = {**os.environ, URL_ENV: url}
    for rep in range(REPEATS):
        for name in DRIVERS if rep % 2 == 0 else reversed(DRIVERS):
            out = subprocess.run(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "bench.pg_drivers", "--probe", name],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            got = json.loads(out)
            record(figures, "import ms", name, got["import_ms"])
            record(figures, "rss base", name, got["rss_base"])
            record(figures, "rss one", name, got["rss_one"])
            record(figures, "rss pool", name, got["rss_pool"])
            record(figures, "rss one delta", name, got["rss_one"] - got["rss_base"])
            record(figures, "rss pool delta", name, got["rss_pool"] - got["rss_base"])


async def describe(url: str) -> list[str]:
    asyncpg = load_asyncpg()
    import psycopg  # type: ignore[import-not-found, unused-ignore]
    import psycopg_pool  # type: ignore[import-not-found, unused-ignore]

    conn = await asyncpg.connect(url)
    try:
        server = await conn.fetchval("SHOW server_version")
        settings = {s: await conn.fetchval(f"SHOW {s}") for s in ("fsync", "synchronous_commit", "wal_sync_method")}
    finally:
        await conn.close()
    return [
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, asyncio's default loop; PostgreSQL {server} "
        + ", ".join(f"{k}={v}" for k, v in settings.items()),
        f"asyncpg {asyncpg.__version__}; psycopg {psycopg.__version__} ({psycopg.pq.__impl__}, libpq "
        f"{psycopg.pq.version()}), psycopg-pool {psycopg_pool.__version__}",
    ]


async def bench(url: str, counts: Counts) -> tuple[list[str], Figures]:
    figures: Figures = {}
    about = await describe(url)
    setup = Asyncpg()
    await setup.open(url)
    try:
        for sql in _SETUP:
            await setup.admin(sql)
    finally:
        await setup.close()
    try:
        for rep in range(REPEATS):
            for name in DRIVERS if rep % 2 == 0 else reversed(DRIVERS):
                driver = DRIVERS[name]()
                await driver.open(url)
                try:
                    await measure(driver, counts, rep, figures)
                finally:
                    await driver.close()
                print(f"  repeat {rep + 1}/{REPEATS}: {name} done", file=sys.stderr)
    finally:
        cleanup = Asyncpg()
        await cleanup.open(url)
        try:
            await cleanup.admin(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        finally:
            await cleanup.close()
    return about, figures


def table(figures: Figures, counts: Counts) -> list[str]:
    def med(metric: str, driver: str) -> float:
        return statistics.median(figures[metric][driver])

    rows: list[tuple[str, str, str, str]] = []

    def cell(metric: str, driver: str, fmt: str) -> str:
        values = figures[metric][driver]
        return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"

    def add(label: str, metric: str, fmt: str, *, a_metric: str = "", p_driver: str = "psycopg") -> None:
        """One row: asyncpg's `a_metric` (default: the same metric) beside psycopg's `metric`."""
        a_metric = a_metric or metric
        a, p = med(a_metric, "asyncpg"), med(metric, p_driver)
        rows.append((label, cell(a_metric, "asyncpg", fmt), cell(metric, p_driver, fmt), f"{p / a:.2f}" if a else "-"))

    def section(title: str) -> None:
        rows.append((title, "", "", ""))

    section(f"SELECT $1::bigint, {counts.selects:,} round trips")
    for kind, label in (("held", "held connection"), ("pool", "pool acquire+query+release")):
        add(f"  {label}: µs p50", f"select {kind} p50", ".0f")
        add(f"  {label}: µs p99", f"select {kind} p99", ".0f")
        add(f"  {label}: CPU µs / statement", f"select {kind} cpu", ".1f")
    label = "pool, asyncpg reset=no-op (psycopg as above)"
    add(f"  {label}: µs p50", "select pool p50", ".0f", a_metric="select pool, reset=no-op p50")
    add(f"  {label}: µs p99", "select pool p99", ".0f", a_metric="select pool, reset=no-op p99")
    add(f"  {label}: CPU µs / statement", "select pool cpu", ".1f", a_metric="select pool, reset=no-op cpu")
    for approach in (*APPROACHES, BINARY_UNNEST):
        if approach == BINARY_UNNEST:
            section("accept, unnest: asyncpg as above, psycopg with %b (binary) parameters")
        else:
            section(f"accept, {BATCH} events / transaction, {approach}")
        for producers in (1, PRODUCERS):
            key = f"accept {approach} x{producers}"
            a_key = f"accept unnest x{producers}" if approach == BINARY_UNNEST else key
            who = "1 producer" if producers == 1 else f"{producers} producers"
            add(f"  {who}: events/s", f"{key} events/s", ",.0f", a_metric=f"{a_key} events/s")
            add(f"  {who}: ms / transaction p50", f"{key} txn p50", ".2f", a_metric=f"{a_key} txn p50")
            add(f"  {who}: CPU µs / event", f"{key} cpu", ".1f", a_metric=f"{a_key} cpu")
            add(f"  {who}: % of a core (client)", f"{key} core", ".0f", a_metric=f"{a_key} core")
    section(f"fetch 100 rows × 15 columns, {counts.fetches:,} fetches, held connection")
    add("  µs / fetch p50", "fetch p50", ".0f")
    add("  µs / fetch p99", "fetch p99", ".0f")
    add("  CPU µs / fetch", "fetch cpu/fetch", ".0f")
    add("  CPU µs / row", "fetch cpu/row", ".2f")
    add("  psycopg binary=True: µs / fetch p50", "fetch p50", ".0f", p_driver="psycopg binary")
    add("  psycopg binary=True: CPU µs / row", "fetch cpu/row", ".2f", p_driver="psycopg binary")
    section("import and memory (fresh interpreter, asyncio imported)")
    add("  import ms", "import ms", ".1f")
    add("  RSS after 1 connection, MiB", "rss one", ".1f")
    add("  RSS after 1 connection + pool of 8, MiB", "rss pool", ".1f")
    add("  … of it added by driver + connections, MiB", "rss pool delta", ".1f")

    header = ("median of 3 (min–max)", "asyncpg", "psycopg", "psycopg/asyncpg")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="postgresql://user:password@host:port/database")
    parser.add_argument("--quick", action="store_true", help="smaller counts, same shape")
    parser.add_argument("--probe", choices=sorted(DRIVERS), help=argparse.SUPPRESS)  # the fresh interpreter
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(probe(args.probe, os.environ[URL_ENV]))))
        return
    if not args.database_url:
        parser.error("--database-url is required")
    missing = [name for name in ("asyncpg", "psycopg", "psycopg_pool") if importlib.util.find_spec(name) is None]
    if missing:
        parser.error(
            f"{', '.join(missing)} not installed: .venv/bin/pip install asyncpg 'psycopg[binary]' psycopg-pool"
        )
    counts = (
        Counts(selects=1_000, txns_one=10, txns_each=4, fetches=500)
        if args.quick
        else Counts(selects=5_000, txns_one=100, txns_each=40, fetches=2_000)
    )
    figures: Figures = {}
    run_probes(args.database_url, figures)
    about, measured = asyncio.run(bench(args.database_url, counts))
    figures.update(measured)
    print("\n".join([*about, *table(figures, counts)]), flush=True)


if __name__ == "__main__":
    main()
