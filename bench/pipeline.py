"""Pipeline benchmark at scale, on either engine: prints figures, asserts nothing.

    .venv/bin/python -m bench.pipeline                                   # SQLite, 1,000 chats, every scenario
    .venv/bin/python -m bench.pipeline --chats 1000,10000,100000         # the three sizes
    .venv/bin/python -m bench.pipeline --database-url postgresql://user:pw@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.pipeline --quick                           # smaller counts, same shape
    .venv/bin/python -m bench.pipeline --profile --scenarios due1-429    # what held the loop (bench/loop_profile.py)

Sizes (full / --quick): accept 10,000 / 3,000 events; drain bursts of 2,000 / 500 events (at 100,000 chats a
burst of 20,000 would be tens of millions of alerts); ~1,000,000 / 100,000 pending rows for /status; 10 / 3 s
of latency. A drain not done by `--deadline` seconds is cut and reported as such (drained False).

Every scenario runs in a process of its own (the bench re-invokes itself with `--only SCENARIO`), so peak
RSS is per scenario and per chat count; the parent prints one table at the end (and each row as it comes).

Databases. `--database-url` absent: a fresh SQLite file in a temporary folder per scenario. `sqlite:///path`:
that file, which must not exist; it is created for the scenario and removed after. `postgresql://…`: an
ADMIN url (any database the user may connect to, e.g. `…/postgres`; the user needs CREATEDB): each scenario
creates a fresh database `pwbench_<pid>` beside it, runs on it, and drops it after.

Chats are bulk-inserted through the storage contract (`store.db.transaction()` + `tx.executemany`), one
subscription each, drawn from a mix (typical: floors; broad: a quarter take everything). The dispatcher's
interest index is loaded from the database as `Dispatcher.run()` does (its sweep).

A loop-stall monitor (a task sleeping 1 ms in a loop) records the longest the loop was held beyond that
sleep in each phase: "max hold".

Scenarios (N = `--chats`):
  accept-<mix>-<1|7>  events/s through `Pipeline.accept` into the log, producers shaped like watcher streams
                      (one event per frame through a `Handoff`); `on_accepted` is the real
                      `Dispatcher.accepted` (interest index lookups, wake-up bookkeeping) with the dispatcher
                      not sending, so the cost of waking N chats is in the figure.
  drain-<mix>         a burst of events accepted, then a real `Dispatcher` (pacing ON, a fake platform whose
                      send returns at once, limits 1 message/s per chat and nothing else) runs until every
                      alert each chat hears is represented in a sent message (summaries merge backlogs:
                      "alerts" counts the deliveries marked sent, "expected" the (event, chat) matches).
  due1                N chats each holding one due alert (bulk-inserted rows), a dispatcher started on them:
                      the issue's "100,000 chats each holding one due alert".
  due1-429            the same, the platform answering each chat's first message with a 429 (retry after
                      1 s): "warn lines" counts what the dispatcher logged at WARNING or above.
  status              `Outbox.backlog()` (what /status runs) with ~1,000,000 pending rows.
  latency             frame-to-send at 200 events/s through the real bot (watcher → pipeline → outbox →
                      dispatcher → python-telegram-bot → loopback Bot API at 50 ms/call), 100 chats, pacing off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from bench.loop_profile import LoopProfile, scheduler_ns
from bot.app import PerpwatchApp
from bot.dispatch.dispatcher import Dispatcher
from bot.pipeline import Pipeline
from bot.platforms.delivery import Limits, Message, MessageRef, Platform, Rate, RetryLater
from bot.platforms.telegram_http import AiohttpRequest
from bot.render import Alert
from bot.settings import Settings
from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from storage import Store, open_engine
from storage.models import Chat, to_cents
from watchers.base import WatcherHealth
from watchers.handoff import Handoff

SYMBOLS = [f"SYM{i}USDT" for i in range(100)]
TOKEN = "123456:BENCH-TOKEN"
API_LATENCY_S = 0.05
BULK_CHUNK = 10_000
"""Rows per bulk-insert transaction while setting up."""


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


MIXES: dict[str, dict[str, list[Any]]] = {
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

Sub = tuple[str | None, str | None, int]
"""(venue, symbol, minimum in USD) of one chat's one subscription."""


# --- measuring ---------------------------------------------------------------------------------------
class StallMonitor:
    """Sleeps 1 ms in a loop; any gap beyond that is time the loop was held by someone else.

    A hold is the loop's own work, or time its thread could not run: no CPU free on the machine, the
    hypervisor running someone else on our CPUs (steal), or the thread asleep in the kernel (a read from
    disk). Each hold over 25 ms is kept with when it began, how much of it the loop's thread spent on a
    CPU, the steal the machine saw meanwhile, and what the thread read from disk in it (its block reads
    and major page faults, `getrusage`), so a figure can say whose it was."""

    TICK_S = 0.001
    LONG_S = 0.025

    def __init__(self) -> None:
        self.max_s = 0.0
        self.long: list[tuple[float, float, float, float, int, int]] = []
        """(hold, seconds into the phase it began, the loop thread's CPU time in it, the machine's steal in
        it, the thread's disk reads in KiB and its major page faults in it); times in seconds."""
        self._phase_started = time.perf_counter()
        self._task: asyncio.Task[None] | None = None
        self._stat = _StealClock()
        self._steal_at_reset = self._stat.read()
        self._waited_at_reset = _waited_for_cpu_ms()

    def reset(self) -> None:
        self.max_s = 0.0
        self.long = []
        self._phase_started = time.perf_counter()
        self._steal_at_reset = self._stat.read()
        self._waited_at_reset = _waited_for_cpu_ms()

    def phase(self) -> dict[str, Any]:
        """The figures since the last reset, and reset."""
        result = {
            "max_hold_ms": round(self.max_s * 1000, 1),
            "holds_over_25ms": len(self.long),
            "long_holds": [
                {
                    "ms": round(hold * 1000, 1),
                    "at_s": round(at, 1),
                    "loop_cpu_ms": round(cpu * 1000, 1),
                    "steal_ms": round(steal * 1000),
                    "read_kib": read_kib,
                    "major_faults": faults,
                }
                for hold, at, cpu, steal, read_kib, faults in sorted(self.long, reverse=True)[:10]
            ],
            "steal_ms": round((self._stat.read() - self._steal_at_reset) * 1000),
            "loop_waited_for_cpu_ms": round(_waited_for_cpu_ms() - self._waited_at_reset),
        }
        self.reset()
        return result

    async def _run(self) -> None:
        last, last_cpu, last_steal, last_disk = time.perf_counter(), time.thread_time(), self._stat.read(), _disk()
        while True:
            await asyncio.sleep(self.TICK_S)
            now, cpu, steal, disk = time.perf_counter(), time.thread_time(), self._stat.read(), _disk()
            gap = now - last - self.TICK_S
            if gap > self.max_s:
                self.max_s = gap
            if gap > self.LONG_S:
                at = last - self._phase_started
                read_kib, faults = (disk[0] - last_disk[0]) // 2, disk[1] - last_disk[1]  # 512-byte blocks
                self.long.append((gap, at, cpu - last_cpu, steal - last_steal, read_kib, faults))
            last, last_cpu, last_steal, last_disk = now, cpu, steal, disk

    profile: ClassVar[LoopProfile | None] = None
    """Set by `--profile`: recorded while any monitor runs (the measured phases)."""

    async def __aenter__(self) -> StallMonitor:
        if StallMonitor.profile is not None:
            StallMonitor.profile.start()
        self._task = asyncio.create_task(self._run(), name="bench:stall-monitor")
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if StallMonitor.profile is not None:
            StallMonitor.profile.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._stat.close()


class _StealClock:
    """The machine's steal time over all CPUs, in seconds (Linux `/proc/stat`, in clock ticks; 0 elsewhere).
    Read every tick of the monitor, so the file stays open and only its first line is read."""

    def __init__(self) -> None:
        self._tick_s = 1 / os.sysconf("SC_CLK_TCK")
        try:
            self._file: BinaryIO | None = open("/proc/stat", "rb", buffering=0)  # closed by close()
        except OSError:
            self._file = None

    def read(self) -> float:
        if self._file is None:
            return 0.0
        self._file.seek(0)
        fields = self._file.read(256).split(b"\n", 1)[0].split()
        return int(fields[8]) * self._tick_s if len(fields) > 8 else 0.0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _disk() -> tuple[int, int]:
    """This thread's reads from disk so far: blocks of 512 bytes, and major page faults (0 off Linux, which
    counts them per process only)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    if who is None:
        return 0, 0
    usage = resource.getrusage(who)
    return usage.ru_inblock, usage.ru_majflt


def _waited_for_cpu_ms() -> float:
    """How long this thread was ready to run with no CPU free (0 off Linux)."""
    return scheduler_ns(Path("/proc/thread-self"))[1] / 1e6


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FloodPlatform(Platform):
    """Answers each chat's first message with a 429 (retry after 1 s), then takes everything."""

    name: ClassVar[str] = "telegram"
    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0))

    def __init__(self) -> None:
        self.sends = 0
        self.refused: set[int] = set()
        self.repeats = 0

    async def send(self, chat: Chat, message: Message, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        if chat.id not in self.refused:
            self.refused.add(chat.id)
            raise RetryLater(1.0, "Too Many Requests")
        self.sends += 1
        return MessageRef(ids=(str(self.sends),))

    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        return ref


class FastPlatform(Platform):
    """Takes every message at once. Its only limit is Telegram's per-chat one (1 message/s), so pacing is on
    and a chat's burst is merged into summaries as in production, but nothing waits on an overall limit."""

    name: ClassVar[str] = "telegram"
    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0))

    def __init__(self) -> None:
        self.sends = 0
        self.edits = 0
        self.nonces: set[int] = set()
        self.repeats = 0
        """Sends whose nonce (the rows they carry) was sent before: the same alerts shown twice."""

    async def send(self, chat: Chat, message: Message, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        self.sends += 1
        key = hash(nonce)
        if key in self.nonces:
            self.repeats += 1
        self.nonces.add(key)
        return MessageRef(ids=(str(self.sends),))

    async def edit(self, chat: Chat, ref: MessageRef, alert: Alert) -> MessageRef:
        self.edits += 1
        return ref


# --- databases ---------------------------------------------------------------------------------------
def _sqlite_path(url: str) -> Path:
    path = Path(url[len("sqlite:///") :] if url.startswith("sqlite:///") else url)
    if path.exists():
        raise SystemExit(f"{path} exists: the bench needs a path it may create and remove")
    return path


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def _admin(url: str, sql: str) -> None:
    """One statement on the server the admin URL names, outside a transaction (CREATE/DROP DATABASE)."""
    engine = open_engine(url)
    await engine.open(migrate=False)
    try:
        await engine.execute(sql)
    finally:
        await engine.close()


@asynccontextmanager
async def fresh_database(url: str | None) -> AsyncIterator[str]:
    """A URL of an empty database for one scenario, removed after (see the module's docstring)."""
    if url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    if not url.startswith(("postgresql://", "postgres://")):
        path = _sqlite_path(url)
        try:
            yield f"sqlite:///{path}"
        finally:
            _remove_sqlite(path)
        return
    name = f"pwbench_{os.getpid()}"
    await _admin(url, f'DROP DATABASE IF EXISTS "{name}"')
    await _admin(url, f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def bulk(store: Store, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    for at in range(0, len(rows), BULK_CHUNK):
        async with store.db.transaction() as tx:
            await tx.executemany(sql, rows[at : at + BULK_CHUNK])
        await store.db.make_room()


async def make_chats(store: Store, chats: int, mix_name: str, *, seed: int = 1) -> list[Sub]:
    """N active chats with one liquidation subscription each, bulk-inserted; their subscriptions returned."""
    rng = random.Random(seed)
    mix = MIXES[mix_name]
    now = datetime.now(UTC)
    await bulk(
        store,
        "INSERT INTO chats (id, platform, platform_chat_id, kind, title, created_at, log_cursor) "
        "VALUES (?, 'telegram', ?, 'private', NULL, ?, 0)",
        [(c + 1, str(10_000 + c), now) for c in range(chats)],
    )
    subs: list[Sub] = [
        (rng.choice(mix["venue"]), rng.choice(mix["symbol"]), rng.choice(mix["min"])) for _ in range(chats)
    ]
    await bulk(
        store,
        "INSERT INTO subscriptions (chat_id, topic, venue, symbol, scope, min_usd, min_usd_cents, params, "
        "created_at, since_event) VALUES (?, 'liquidation', ?, ?, 'all', ?, ?, '{}', ?, 0)",
        [
            (c + 1, venue or "*", symbol or "*", str(minimum), to_cents(Decimal(minimum)), now)
            for c, (venue, symbol, minimum) in enumerate(subs)
        ],
    )
    if store.db.kind == "postgresql":  # explicit ids were given: move the identities past them
        await store.db.execute("SELECT setval(pg_get_serial_sequence('chats', 'id'), (SELECT MAX(id) FROM chats))")
        await store.db.execute("ANALYZE")
    return subs


def expected_matches(subs: Sequence[Sub], events: Sequence[Event]) -> int:
    """(event, chat) pairs the outbox's matching makes: the alerts a full drain represents."""
    groups: dict[Sub, int] = {}
    for sub in subs:
        groups[sub] = groups.get(sub, 0) + 1
    total = 0
    for event in events:
        venue = event.venue.value if event.venue else None
        cents = to_cents(event.usd) if event.usd is not None else 0
        for (s_venue, s_symbol, s_min), count in groups.items():
            if s_venue not in (None, venue) or s_symbol not in (None, event.symbol):
                continue
            if to_cents(Decimal(s_min)) <= cents:
                total += count
        # event.usd is never None here
    return total


def _dispatcher(store: Store, platform: Platform) -> Dispatcher:
    return Dispatcher(store.outbox, store.chats, [platform], pacing=True, max_workers=256)


def _count_worker_failures() -> list[int]:
    """[workers that died on an exception ('dispatch worker failed'), any dispatcher log line at WARNING or
    above]: what the dispatcher logs, counted (and kept off stderr)."""
    counter = [0, 0]

    class Counting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("dispatch worker failed"):
                counter[0] += 1
            if record.levelno >= logging.WARNING:
                counter[1] += 1

    logging.getLogger("bot.dispatch.dispatcher").addHandler(Counting())
    return counter


def _count_marked_sent(store: Store) -> list[int]:
    """Ids handed to `mark_sent` (each one alert represented, alone or in a summary), counted as they go: a
    cheap trigger for the check of the database in `_drain_until` (an id recorded twice counts twice)."""
    counter = [0]
    original = store.outbox.mark_sent

    async def counting(ids: Sequence[int], *, message_ref: str | None, now: datetime) -> None:
        await original(ids, message_ref=message_ref, now=now)
        counter[0] += len(ids)

    store.outbox.mark_sent = counting  # type: ignore[method-assign]
    return counter


async def _sent_rows(store: Store) -> int:
    rows = await store.db.fetch_slow("SELECT COUNT(*) FROM deliveries WHERE status = 'sent'")
    return int(rows[0][0])


async def _drain_until(
    store: Store, dispatcher: Dispatcher, counter: list[int], expected: int, deadline_s: float
) -> tuple[float, int]:
    """Run the dispatcher until `expected` deliveries are sent in the database (or the deadline): (seconds,
    rows sent). The database is asked (off the loop) only once the counter says it may be done."""
    start = time.perf_counter()
    sent = 0
    runner = asyncio.create_task(dispatcher.run(), name="bench:dispatcher")
    try:
        while time.perf_counter() - start < deadline_s:
            await asyncio.sleep(0.02)
            if counter[0] >= expected:
                sent = await _sent_rows(store)
                if sent >= expected:
                    break
                await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - start
    finally:
        runner.cancel()
        try:
            await runner
        except asyncio.CancelledError:
            pass
    return elapsed, sent if sent >= expected else await _sent_rows(store)


# --- scenarios ---------------------------------------------------------------------------------------
async def run_accept(url: str, chats: int, mix_name: str, producers: int, events: int) -> dict[str, Any]:
    rng = random.Random(2)
    async with Store(url) as store:
        t0 = time.perf_counter()
        await make_chats(store, chats, mix_name)
        setup_s = time.perf_counter() - t0
        dispatcher = _dispatcher(store, FastPlatform())
        t0 = time.perf_counter()
        await dispatcher.interest.load()
        index_s = time.perf_counter() - t0
        dispatcher._stopping = True  # wakes computed (index lookups, bookkeeping), no worker started
        pipeline = Pipeline(store.outbox, on_accepted=dispatcher.accepted)
        batch = [_event(i, rng) for i in range(events)]

        async def stream(share: list[Event], name: str) -> None:
            async with Handoff(pipeline, WatcherHealth(name=name), label=name) as handoff:
                for event in share:  # one event per frame, as the forceOrder stream sends them
                    await handoff.put([event])
                    await asyncio.sleep(0)  # the next frame is another read from the socket
                await handoff.settled()

        async with StallMonitor() as monitor:
            monitor.reset()
            start = time.perf_counter()
            cpu0 = time.process_time()
            await asyncio.gather(*(stream(batch[p::producers], f"p{p}") for p in range(producers)))
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            hold = monitor.phase()
    assert pipeline.stats.accepted == events, "every event must be accepted once"
    return {
        "events": events,
        "events_per_s": round(events / wall),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "events_per_commit": round(events / max(pipeline.stats.commits, 1), 1),
        "woken_chats": len(dispatcher._first_match),
        "setup_s": round(setup_s, 1),
        "index_load_s": round(index_s, 2),
        **hold,
    }


async def run_drain(url: str, chats: int, mix_name: str, events: int, deadline_s: float) -> dict[str, Any]:
    rng = random.Random(3)
    async with Store(url) as store:
        subs = await make_chats(store, chats, mix_name)
        batch = [_event(i, rng) for i in range(events)]
        pipeline = Pipeline(store.outbox)
        for at in range(0, events, 100):
            await pipeline.accept(batch[at : at + 100])
        expected = expected_matches(subs, batch)
        if store.db.kind == "postgresql":
            await store.db.execute("ANALYZE")
        platform = FastPlatform()
        dispatcher = _dispatcher(store, platform)
        counter = _count_marked_sent(store)
        dispatcher_failures = _count_worker_failures()
        async with StallMonitor() as monitor:
            monitor.reset()
            cpu0 = time.process_time()
            elapsed, sent = await _drain_until(store, dispatcher, counter, expected, deadline_s)
            cpu = time.process_time() - cpu0
            hold = monitor.phase()
        pending = await store.db.fetch_slow("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
    return {
        "events": events,
        "expected_alerts": expected,
        "alerts_sent": sent,
        "mark_sent_ids": counter[0],
        "messages": platform.sends,
        "repeated_sends": platform.repeats,
        "worker_failures": dispatcher_failures[0],
        "dispatcher_log_lines": dispatcher_failures[1],
        "drained": sent >= expected,
        "drain_s": round(elapsed, 1),
        "messages_per_s": round(platform.sends / elapsed),
        "alerts_per_s": round(sent / elapsed),
        "cpu_s": round(cpu, 1),
        "left_pending": int(pending[0][0]),
        **hold,
    }


async def run_due1(url: str, chats: int, deadline_s: float, *, flood: bool = False) -> dict[str, Any]:
    """Every chat holds one due alert (rows bulk-inserted, cursors at the head), then a dispatcher starts."""
    async with Store(url) as store:
        await make_chats(store, chats, "typical")
        await store.outbox.accept([_event(0, random.Random(4))])
        head = await store.outbox.refresh_head()
        now = datetime.now(UTC)
        await bulk(
            store,
            "INSERT INTO deliveries (event_id, chat_id, due_at, next_attempt_at, created_at) VALUES (?,?,?,?,?)",
            [(head, c + 1, now, now, now) for c in range(chats)],
        )
        await store.db.execute("UPDATE chats SET log_cursor = ?", (head,))
        if store.db.kind == "postgresql":
            await store.db.execute("ANALYZE")
        platform: FastPlatform | FloodPlatform = FloodPlatform() if flood else FastPlatform()
        dispatcher = _dispatcher(store, platform)
        counter = _count_marked_sent(store)
        dispatcher_failures = _count_worker_failures()
        async with StallMonitor() as monitor:
            monitor.reset()
            elapsed, sent = await _drain_until(store, dispatcher, counter, chats, deadline_s)
            hold = monitor.phase()
    return {
        "expected_alerts": chats,
        "alerts_sent": sent,
        "mark_sent_ids": counter[0],
        "messages": platform.sends,
        "repeated_sends": platform.repeats,
        "worker_failures": dispatcher_failures[0],
        "dispatcher_log_lines": dispatcher_failures[1],
        "drained": sent >= chats,
        "drain_s": round(elapsed, 1),
        "messages_per_s": round(platform.sends / elapsed),
        **hold,
    }


async def run_status(url: str, chats: int, rows: int) -> dict[str, Any]:
    """~`rows` pending deliveries (events × chats, one statement), then `Outbox.backlog()` as /status runs it."""
    per_chat = max(1, -(-rows // chats))
    rng = random.Random(5)
    async with Store(url) as store:
        await make_chats(store, chats, "typical")
        await store.outbox.accept([_event(i, rng) for i in range(per_chat)])
        head = await store.outbox.refresh_head()
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        stamp = "CAST(:now AS TIMESTAMPTZ)" if store.db.kind == "postgresql" else ":now"
        limit = f"LIMIT {int(rows)}"
        await store.db.execute(
            "INSERT INTO deliveries (event_id, chat_id, due_at, next_attempt_at, created_at) "  # noqa: S608 - fixed
            f"SELECT e.id, c.id, {stamp}, {stamp}, {stamp} FROM events e CROSS JOIN chats c "
            f"ORDER BY e.id, c.id {limit}",
            {"now": now},
        )
        insert_s = time.perf_counter() - t0
        await store.db.execute("UPDATE chats SET log_cursor = ?", (head,))
        if store.db.kind == "postgresql":
            await store.db.execute("VACUUM ANALYZE deliveries")
        timings: list[float] = []
        async with StallMonitor() as monitor:
            monitor.reset()
            for _ in range(3):
                t0 = time.perf_counter()
                backlog = await store.outbox.backlog()
                timings.append(time.perf_counter() - t0)
            hold = monitor.phase()
            t0 = time.perf_counter()
            page = await store.outbox.pending_chats(after=0, limit=500)
            page_s = time.perf_counter() - t0
            sweep_hold = monitor.phase()
    return {
        "pending_rows": backlog.pending,
        "insert_s": round(insert_s, 1),
        "backlog_s": round(min(timings), 3),
        "backlog_max_s": round(max(timings), 3),
        "sweep_page_ms": round(page_s * 1000, 1),
        "sweep_page_chats": len(page),
        "sweep_page_hold_ms": sweep_hold["max_hold_ms"],
        **hold,
    }


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


async def run_latency(url: str, seconds: float, rate: float, chats: int, fanout: int) -> dict[str, Any]:
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
        settings = Settings(
            _env_file=None,
            telegram_bot_token=TOKEN,
            telegram_api_url=api_url,
            binance_ws_url=venue_url,
            watchers="binance",
            calendar_sources="none",  # the calendar's pollers would reach for DefiLlama: no internet here
            database_url=url,
            log_level="WARNING",
        )
        async with Store(settings.database_url) as store:
            for c in range(chats):
                chat = await store.chats.upsert("telegram", str(1000 + c), kind="private", title=None)
                await store.chats.subscribe(
                    chat.id, "liquidation", venue=None, symbol=symbols[c % len(symbols)], min_usd=None, limit=10
                )
        async with PerpwatchApp(settings, pacing=False) as app, aiohttp.ClientSession() as http, StallMonitor() as mon:
            health = app.supervisor.watchers["binance"].health
            while health.connected_since is None:  # noqa: ASYNC110 - the watcher's own flag
                await asyncio.sleep(0.01)
            mon.reset()
            cpu0 = time.process_time()
            query = {"total": str(total), "rate": str(rate), "symbols": ",".join(symbols)}
            async with http.post(f"{control}/push", params=query) as resp:
                resp.raise_for_status()
            deadline = time.monotonic() + seconds + 60
            want = total * fanout
            while time.monotonic() < deadline and (  # noqa: ASYNC110 - polls the bot's own counters
                app.pipeline.stats.accepted < total or app.dispatcher.stats.sent < want
            ):
                await asyncio.sleep(0.05)
            cpu = time.process_time() - cpu0
            hold = mon.phase()
            async with http.get(f"{control}/records") as resp:
                recorded = await resp.json()
    finally:
        restore()
        fakes.terminate()
        await fakes.wait()
    pushed_at = {int(k): float(v) for k, v in recorded["pushed"].items()}
    size = re.compile(r"Size: <b>([\d,]+) ")
    latencies: list[float] = []
    for _chat_id, text, at in recorded["sends"]:
        match = size.search(text)
        if match:
            latencies.append((at - pushed_at[int(match.group(1).replace(",", ""))]) * 1000)
    latencies.sort()
    in_bot = sorted(
        (at - pushed_at[int(m.group(1).replace(",", ""))]) * 1000 for text, at in starts if (m := size.search(text))
    )
    return {
        "sends": len(latencies),
        "p50_ms": round(_pct(latencies, 50), 1),
        "p99_ms": round(_pct(latencies, 99), 1),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "in_bot_p50_ms": round(_pct(in_bot, 50), 1),
        "in_bot_p99_ms": round(_pct(in_bot, 99), 1),
        "cpu_share": round(cpu / seconds, 2),
        **hold,
    }


def _pct(values: list[float], pct: int) -> float:
    return values[max(0, round(len(values) * pct / 100) - 1)] if values else float("nan")


# --- orchestration -----------------------------------------------------------------------------------
SCENARIOS = [
    "accept-typical-1",
    "accept-typical-7",
    "accept-broad-1",
    "accept-broad-7",
    "drain-typical",
    "drain-broad",
    "due1",
    "due1-429",
    "status",
    "latency",
]


@dataclass
class Sizes:
    accept_events: int
    drain_events: int
    status_rows: int
    latency_s: float
    deadline_s: float


def _sizes(quick: bool, deadline_s: float) -> Sizes:
    if quick:
        return Sizes(accept_events=3000, drain_events=500, status_rows=100_000, latency_s=3, deadline_s=deadline_s)
    return Sizes(accept_events=10_000, drain_events=2_000, status_rows=1_000_000, latency_s=10, deadline_s=deadline_s)


async def run_one(scenario: str, url: str | None, chats: int, sizes: Sizes) -> dict[str, Any]:
    async with fresh_database(url) as db_url:
        if scenario.startswith("accept-"):
            _, mix, producers = scenario.split("-")
            return await run_accept(db_url, chats, mix, int(producers), sizes.accept_events)
        if scenario.startswith("drain-"):
            return await run_drain(db_url, chats, scenario.split("-")[1], sizes.drain_events, sizes.deadline_s)
        if scenario in ("due1", "due1-429"):
            return await run_due1(db_url, chats, sizes.deadline_s, flood=scenario == "due1-429")
        if scenario == "status":
            return await run_status(db_url, chats, sizes.status_rows)
        if scenario == "latency":
            return await run_latency(db_url, sizes.latency_s, 200, 100, 1)
    raise SystemExit(f"unknown scenario {scenario!r}: one of {', '.join(SCENARIOS)}")


_COLUMNS = [
    ("scenario", "scenario"),
    ("chats", "chats"),
    ("events_per_s", "events/s"),
    ("events_per_commit", "ev/commit"),
    ("expected_alerts", "alerts expected"),
    ("alerts_sent", "alerts sent"),
    ("messages", "messages"),
    ("drain_s", "drain s"),
    ("messages_per_s", "msgs/s"),
    ("alerts_per_s", "alerts/s"),
    ("backlog_s", "backlog() s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_hold_ms", "max hold ms"),
    ("holds_over_25ms", ">25ms"),
    ("steal_ms", "steal ms"),
    ("loop_waited_for_cpu_ms", "no CPU ms"),
    ("worker_failures", "worker fails"),
    ("dispatcher_log_lines", "warn lines"),
    ("rss_mib", "peak RSS MiB"),
]


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for _, h in _COLUMNS]]
    for row in rows:
        cells.append(
            [
                ""
                if row.get(k) is None
                else f"{row[k]:,}"
                if isinstance(row[k], int) and not isinstance(row[k], bool)
                else str(row[k])
                for k, _ in _COLUMNS
            ]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(_COLUMNS))]
    lines = [
        " | ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _yardstick(n: int = 5_000_000) -> float:
    """Millions of pure-Python additions a second, best of three: machines of one kind differed by two times
    in a day, so figures from two runs compare only beside this."""
    best = float("inf")
    for _ in range(3):
        started, total = time.perf_counter(), 0
        for i in range(n):
            total += i
        best = min(best, time.perf_counter() - started)
    return n / best / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts, same shape")
    parser.add_argument("--database-url", default=None, help="sqlite:///path or a PostgreSQL admin URL")
    parser.add_argument("--chats", default="1000", help="chat counts, comma-separated (e.g. 1000,10000,100000)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds a drain may take before it is cut")
    parser.add_argument("--profile", action="store_true", help="what held the loop (bench/loop_profile.py)")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = _sizes(args.quick, args.deadline)
    counts = [int(c) for c in args.chats.split(",")]
    if args.only is not None:  # one scenario in this process: one JSON line for the parent
        StallMonitor.profile = LoopProfile() if args.profile else None
        result = asyncio.run(run_one(args.only, args.database_url, counts[0], sizes))
        result.update(scenario=args.only, chats=counts[0], rss_mib=round(_peak_rss_mib()))
        if StallMonitor.profile is not None:
            result["profile"] = StallMonitor.profile.report()
        print("RESULT " + json.dumps(result), flush=True)
        return
    engine = "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite"
    print(
        f"python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d %H:%M}, engine {engine}, sizes {sizes}, "
        f"this machine's yardstick {_yardstick():.1f} M additions/s"
    )
    rows: list[dict[str, Any]] = []
    for chats in counts:
        for scenario in args.scenarios.split(","):
            if scenario == "latency" and chats != counts[0]:
                continue  # 100 chats whatever --chats says: once per run
            command = [sys.executable, "-m", "bench.pipeline", "--only", scenario, "--chats", str(chats)]
            command += ["--deadline", str(args.deadline)] + (["--quick"] if args.quick else [])
            command += ["--profile"] if args.profile else []
            if args.database_url:
                command += ["--database-url", args.database_url]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
            log_lines = done.stderr.splitlines()
            if log_lines:
                first = next((line for line in log_lines if line.strip()), "")
                print(f"  {scenario} chats={chats}: {len(log_lines)} stderr lines, first: {first[:200]}", flush=True)
            results = [line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not results:
                print(f"{scenario} at {chats} chats failed (exit {done.returncode})", flush=True)
                continue
            row = json.loads(results[-1])
            row["log_lines"] = len(log_lines)
            rows.append(row)
            print(f"{scenario} chats={chats} ({time.perf_counter() - started:.0f}s): {json.dumps(row)}", flush=True)
    print()
    print(_table(rows))


if __name__ == "__main__":
    main()
