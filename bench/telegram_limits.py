"""The real bot under Telegram's real flood limits: prints figures, asserts nothing.

    .venv/bin/python -m bench.telegram_limits            # full run (~2.5 min)
    .venv/bin/python -m bench.telegram_limits --quick    # shorter steady and trickle runs (~1 min)

Each scenario starts the real bot (`PerpwatchApp`, pacing on, the real forceOrder watcher, real
python-telegram-bot) on a fresh database with one supergroup (chat id -100…, registered as a group, as
the Telegram front end registers a supergroup) subscribed to every liquidation. A loopback venue and a
loopback Bot API run in their own process (`bench.strict_bot_api`): the API answers in 50 ms and judges
Telegram's limits strictly on arrival (1 message per chat per second, 20 per group per 60 s, 30 per second
overall, sliding windows), answering 429 with `retry_after` to any message that would break one.

1. steady: 20 liquidations a second for 30 s;
2. burst: 494 liquidations at once, then quiet;
3. trickle: one a second for 75 s (the fault run's case for the per-minute group limit).

Per event, "represented latency" runs from its frame leaving the venue to the arrival at the Bot API of the
message that carried it, a single alert or a summary. Which message carried which events is read from the
bot's outbox after the run: the rows one send marked sent share `sent_at` (a single's `message_ref` is the
message id), and the k-th send into the chat is the k-th message the API accepted; each message's own count
(1, or the summary's "N … alerts") is checked against its rows. The outbox's `created_at` splits that
latency into frame → committed and committed → at the API.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import resource
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import PerpwatchApp
from bot.settings import Settings
from storage import Store
from storage.engine import as_time

TOKEN = "123456:BENCH-TOKEN"
API_LATENCY_S = 0.05
GROUP_ID = -1001234567890
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]
GOAL_P99_S = 5.0
GOAL_FIRST_MS = 100.0
_SUMMARY = re.compile(r"(\d+) liquidation alerts in one message")


@dataclass(frozen=True)
class Scenario:
    name: str
    total: int
    rate: float  # events a second; 0 means all at once
    what: str

    @property
    def push_s(self) -> float:
        return 0.0 if self.rate <= 0 else self.total / self.rate


@dataclass(frozen=True)
class Message:
    message_id: int
    at: float  # monotonic arrival at the fake API
    text: str

    @property
    def carries(self) -> int:
        match = _SUMMARY.search(self.text)
        return int(match.group(1)) if match else 1


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * pct / 100) - 1)] if ordered else float("nan")


def _worst_window(times: list[float], span_s: float) -> int:
    """Most arrivals in any window of `span_s` seconds (half-open, as the judge counts)."""
    ordered, worst, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - span_s:
            lo += 1
        worst = max(worst, hi - lo + 1)
    return worst


def _outbox_rows(db: Path, chat_platform_id: str) -> list[tuple[str, str | None, str, str | None, str]]:
    """(status, sent_at, created_at, message_ref, event key) of every delivery into the chat, by id."""
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute(
                "SELECT d.status, d.sent_at, d.created_at, d.message_ref, e.key FROM deliveries d "
                "JOIN events e ON e.id = d.event_id JOIN chats c ON c.id = d.chat_id "
                "WHERE c.platform = 'telegram' AND c.platform_chat_id = ? ORDER BY d.id",
                (chat_platform_id,),
            )
        )


def _frame_number(event_key: str) -> int:
    """The frame's quantity (its number, see `bench.fake_bot_api.frame`) from the forceOrder event key."""
    return int(Decimal(event_key.split(":")[5]))


async def run(scenario: Scenario) -> None:
    fakes = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.strict_bot_api", TOKEN, str(API_LATENCY_S), stdout=asyncio.subprocess.PIPE
    )
    assert fakes.stdout is not None
    api_url, venue_url, control = (await fakes.stdout.readline()).decode().split()
    wall_minus_mono = time.time() - time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "limits.db"
            settings = Settings(
                _env_file=None,
                telegram_bot_token=TOKEN,
                telegram_api_url=api_url,
                binance_ws_url=venue_url,
                watchers="binance",
                database_url=f"sqlite:///{db}",
                log_level="WARNING",
            )
            async with Store(settings.database_url) as store:
                chat = await store.chats.upsert("telegram", str(GROUP_ID), kind="group", title="bench supergroup")
                await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
            async with PerpwatchApp(settings, pacing=True) as app, aiohttp.ClientSession() as http:
                health = app.supervisor.watchers["binance"].health
                while health.connected_since is None:  # noqa: ASYNC110 - the watcher's own flag
                    await asyncio.sleep(0.01)
                cpu0, wall0 = time.process_time(), time.monotonic()
                query = {"total": str(scenario.total), "rate": str(scenario.rate or 1e9), "symbols": ",".join(SYMBOLS)}
                async with http.post(f"{control}/push", params=query) as resp:
                    resp.raise_for_status()
                deadline = wall0 + scenario.push_s + 60
                while time.monotonic() < deadline:
                    if app.pipeline.stats.accepted >= scenario.total and await app.dispatcher.idle():
                        break
                    await asyncio.sleep(0.05)
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                bot_429s = app.dispatcher.stats.rate_limited
                async with http.get(f"{control}/records") as resp:
                    recorded: dict[str, Any] = await resp.json()
            rows = _outbox_rows(db, str(GROUP_ID))
    finally:
        fakes.terminate()
        await fakes.wait()
    report(scenario, recorded, rows, cpu=cpu, wall=wall, bot_429s=bot_429s, wall_minus_mono=wall_minus_mono)


def report(
    scenario: Scenario,
    recorded: dict[str, Any],
    rows: list[tuple[str, str | None, str, str | None, str]],
    *,
    cpu: float,
    wall: float,
    bot_429s: int,
    wall_minus_mono: float,
) -> None:
    pushed = {int(k): float(v) for k, v in recorded["pushed"].items()}
    refused = recorded["report"]["refused"]
    messages = sorted(
        (
            Message(int(mid), float(at), str(text))
            for chat_id, _, mid, at, text in recorded["accepted"]
            if chat_id == GROUP_ID
        ),
        key=lambda m: m.message_id,
    )
    sends: dict[str, list[tuple[str | None, str, str]]] = defaultdict(list)  # sent_at → (ref, created_at, key)
    statuses: dict[str, int] = defaultdict(int)
    for status, sent_at, created_at, ref, key in rows:
        statuses[status] += 1
        if status == "sent" and sent_at is not None:
            sends[sent_at].append((ref, created_at, key))
    ordered = [sends[k] for k in sorted(sends, key=as_time)]
    mismatched = abs(len(ordered) - len(messages))
    latency: list[float] = []
    in_bot: list[float] = []  # frame → committed to the outbox
    waiting: list[float] = []  # committed → message at the API
    for group, message in zip(ordered, messages, strict=False):
        refs = {ref for ref, _, _ in group if ref is not None}
        if message.carries != len(group) or (refs and refs != {str(message.message_id)}):
            mismatched += 1
        for _, created_at, key in group:
            frame_at = pushed[_frame_number(key)]
            committed = as_time(created_at).timestamp() - wall_minus_mono
            latency.append(message.at - frame_at)
            in_bot.append(committed - frame_at)
            waiting.append(message.at - committed)
    first_frame = min(pushed.values())
    first_alert_ms = (messages[0].at - first_frame) * 1000 if messages else float("nan")
    arrivals = [m.at for m in messages]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    largest = max((m.carries for m in messages), default=0)
    unsent = sum(n for s, n in statuses.items() if s != "sent")
    p99, worst = _pct(latency, 99), max(latency, default=float("nan"))
    print(f"\n{scenario.name}: {scenario.what}")
    print(
        f"  events pushed {len(pushed)}, accepted into the outbox {len(rows)}, represented {len(latency)}, "
        f"not sent {unsent} {dict(statuses) if unsent else ''}".rstrip()
    )
    print(
        f"  messages accepted by the API {len(messages)} (largest carried {largest}), "
        f"429s {len(refused)} (the bot saw {bot_429s}){_rules(refused)}"
    )
    print(
        f"  worst 60 s window into the group {_worst_window(arrivals, 60.0)} messages (limit 20), "
        f"worst 1 s window {_worst_window(arrivals, 1.0)}, closest two sends {min(gaps, default=float('nan')):.3f} s"
    )
    print(
        f"  first frame → first alert {first_alert_ms:.1f} ms (it carried {messages[0].carries if messages else 0} "
        f"event(s)); outbox ↔ API mapping mismatches {mismatched}"
    )
    print(
        f"  represented latency p50 {_pct(latency, 50):.2f} s, p99 {p99:.2f} s, max {worst:.2f} s; "
        f"frame → committed p50 {_pct(in_bot, 50) * 1000:.1f} ms, p99 {_pct(in_bot, 99) * 1000:.1f} ms; "
        f"committed → at the API p50 {_pct(waiting, 50):.2f} s, p99 {_pct(waiting, 99):.2f} s"
    )
    print(
        "  sends (s after the first frame: events carried): "
        + ", ".join(f"{m.at - first_frame:.2f}:{m.carries}" for m in messages)
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"  bot CPU {cpu:.2f} s over {wall:.1f} s ({cpu / wall:.0%} of a core); "
        f"bot process peak RSS so far {rss_mb:.0f} MiB"
    )
    missed = []
    if p99 > GOAL_P99_S:
        missed.append(f"p99 {p99:.2f} s > {GOAL_P99_S:.0f} s")
    if refused:
        missed.append(f"{len(refused)} 429(s)")
    if not first_alert_ms <= GOAL_FIRST_MS:
        missed.append(f"first alert {first_alert_ms:.0f} ms > {GOAL_FIRST_MS:.0f} ms")
    if unsent or len(latency) < len(pushed):
        missed.append(f"{len(pushed) - len(latency)} event(s) not represented")
    print(
        f"  goals (p99 ≤ 5 s, no 429, first alert ≤ 100 ms): {'met' if not missed else 'MISSED: ' + '; '.join(missed)}"
    )


def _rules(refused: list[dict[str, Any]]) -> str:
    if not refused:
        return ""
    by_rule: dict[str, int] = defaultdict(int)
    for r in refused:
        by_rule[r["rule"]] += 1
    return " by rule " + ", ".join(f"{rule} ×{n}" for rule, n in sorted(by_rule.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steady_s = 10 if args.quick else 30
    trickle_s = 25 if args.quick else 75
    scenarios = [
        Scenario("steady", 20 * steady_s, 20, f"20 liquidations/s for {steady_s} s into one supergroup"),
        Scenario("burst", 494, 0, "494 liquidations at once into one supergroup, then quiet"),
        Scenario("trickle", trickle_s, 1, f"1 liquidation/s for {trickle_s} s into one supergroup"),
    ]
    print(
        f"python {sys.version.split()[0]}, {datetime.now(UTC):%Y-%m-%d}; real bot, pacing on; loopback venue and "
        f"Bot API in their own process, API {API_LATENCY_S * 1000:.0f} ms/call, strict Telegram limits "
        "(1/s per chat, 20/60 s per group, 30/s overall, sliding, on arrival)"
    )
    for scenario in scenarios:
        asyncio.run(run(scenario))


if __name__ == "__main__":
    main()
