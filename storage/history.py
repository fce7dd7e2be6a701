"""What the log says happened: the totals `/liqs` answers with, read from the stored events.

The events a chat was alerted of are also the bot's memory of the market, kept for the retention period.
Reading a window visits every event in it (an hour of a cascade is tens of thousands), so both reads run
off the loop (`Engine.fetch_slow`) and sum in the database: the loop sees one row per venue and side and
the few largest events, never the window itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from perpwatch.events import Event, Topic
from storage.engine import Engine, as_time
from storage.outbox import decode_event


@dataclass(frozen=True, slots=True)
class SideTotal:
    venue: str
    side: str
    count: int
    usd: Decimal


@dataclass(frozen=True, slots=True)
class LiquidationReport:
    since: datetime
    totals: tuple[SideTotal, ...]
    largest: tuple[Event, ...]

    @property
    def count(self) -> int:
        return sum(t.count for t in self.totals)

    @property
    def usd(self) -> Decimal:
        return sum((t.usd for t in self.totals), Decimal(0))


# Symbol filter: the venue's symbol or its base asset, as a subscription's `symbol=` matches (BTC matches
# BTCUSDT and BTC-USDT-SWAP). usd_cents is exact (integer cents), so sums are exact on both engines.
_WHERE = "topic = :topic AND occurred_at >= :since AND (:symbol = '*' OR UPPER(symbol) = :symbol OR base = :symbol)"

_TOTALS = f"""
SELECT venue, side, COUNT(*) AS n, COALESCE(SUM(usd_cents), 0) AS cents
FROM events WHERE {_WHERE} AND venue IS NOT NULL AND side IS NOT NULL
GROUP BY venue, side ORDER BY venue, side
"""  # noqa: S608 (a constant)

_LARGEST = f"""
SELECT body, body_version FROM events WHERE {_WHERE} AND usd_cents IS NOT NULL
ORDER BY usd_cents DESC, id LIMIT :largest
"""  # noqa: S608 (a constant)


class History:
    def __init__(self, db: Engine) -> None:
        self.db = db

    async def liquidations(self, *, since: datetime, symbol: str | None = None, largest: int = 5) -> LiquidationReport:
        """Liquidations that occurred since `since`, summed by venue and side, with the `largest` by USD."""
        params = {"topic": Topic.LIQUIDATION.value, "since": since, "symbol": (symbol or "*").upper()}
        rows = await self.db.fetch_slow(_TOTALS, params)
        top = await self.db.fetch_slow(_LARGEST, {**params, "largest": largest})
        totals = tuple(
            SideTotal(venue=str(r["venue"]), side=str(r["side"]), count=int(r["n"]), usd=Decimal(int(r["cents"])) / 100)
            for r in rows
        )
        return LiquidationReport(
            since=since,
            totals=totals,
            largest=tuple(decode_event(str(r["body"]), int(r["body_version"])) for r in top),
        )

    async def since(self, topic: str, *, occurred_after: datetime, limit: int = 100_000) -> list[Event]:
        """A topic's events that occurred after a moment, oldest first: what a restart rebuilds a window from."""
        rows = await self.db.fetch_slow(
            "SELECT body, body_version FROM events WHERE topic = ? AND occurred_at >= ? ORDER BY occurred_at, id "
            "LIMIT ?",
            (topic, occurred_after, limit),
        )
        return [decode_event(str(r["body"]), int(r["body_version"])) for r in rows]

    async def newest_revisions(self, topic: str, *, accepted_after: datetime) -> list[Event]:
        """The newest revision of each thread of a topic accepted after a moment: where a restart finds
        what its threads said last (an open cascade, say)."""
        rows = await self.db.fetch_slow(
            "SELECT e.body, e.body_version FROM events e WHERE e.topic = ? AND e.thread IS NOT NULL "
            "AND e.accepted_at >= ? AND NOT EXISTS (SELECT 1 FROM events n WHERE n.thread = e.thread "
            "AND n.revision > e.revision) ORDER BY e.id",
            (topic, accepted_after),
        )
        return [decode_event(str(r["body"]), int(r["body_version"])) for r in rows]

    async def accepted_after(self, topic: str, key: str, *, within: timedelta, limit: int = 100_000) -> list[Event]:
        """A topic's events stored after the event `key` and at most `within` after it, in the order stored:
        what a thread's newest revision had not yet stated when the bot stopped."""
        anchor = await self.db.fetchone("SELECT id, accepted_at FROM events WHERE key = ?", (key,))
        if anchor is None:
            return []
        rows = await self.db.fetch_slow(
            "SELECT body, body_version FROM events WHERE topic = ? AND id > ? AND accepted_at <= ? ORDER BY id LIMIT ?",
            (topic, int(anchor["id"]), as_time(anchor["accepted_at"]) + within, limit),
        )
        return [decode_event(str(r["body"]), int(r["body_version"])) for r in rows]
