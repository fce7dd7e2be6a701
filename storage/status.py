"""What the metrics and the status page read from the database, and only that.

Each read visits many rows (every waiting delivery, a day of liquidations), so all of them run off the
loop's thread (`Engine.fetch_slow`), and the page and the scrape each see a handful of rows back: counts per
platform, per venue and hour, and the last few alerts. Callers asking at once share one count, and one
younger than `max_age_s` is answered again, so a scrape every few seconds and a reloaded page cost one read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Generic, TypeVar

from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Event, Topic
from storage.engine import Engine, as_time
from storage.outbox import decode_event

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PlatformBacklog:
    platform: str
    pending: int
    """Due now or overdue, not yet sent."""
    parked: int
    """Given up on (chat gone, message refused), kept for the operator to see."""


@dataclass(frozen=True, slots=True)
class SentAlert:
    """One alert as the page lists it: the event, when it first went out, and where it went.

    Which chats it went to is kept as (platform, kind) only, one pair per chat: the page must never show a
    chat's id, and it decides from the kinds whether it may show what the alert said."""

    event: Event
    sent_at: datetime
    audience: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class HourBucket:
    venue: str
    hour_start: datetime
    count: int
    usd: Decimal


_BACKLOG = """
SELECT c.platform AS platform,
       COUNT(*) FILTER (WHERE d.status = 'pending' AND d.due_at <= :now) AS pending,
       COUNT(*) FILTER (WHERE d.status = 'parked') AS parked
FROM deliveries d JOIN chats c ON c.id = d.chat_id
WHERE d.status IN ('pending', 'parked')
GROUP BY c.platform ORDER BY c.platform
"""

_SENT = """
SELECT d.event_id, d.sent_at, c.platform, c.kind, e.body, e.body_version
FROM deliveries d JOIN chats c ON c.id = d.chat_id JOIN events e ON e.id = d.event_id
WHERE d.status = 'sent' ORDER BY d.id DESC LIMIT :rows
"""


def _hourly_sql(hours: int) -> str:
    """A day of one topic grouped by venue and hour, bucketed by comparison with the hour boundaries passed
    in, which both engines read the same way (their date functions differ, and SQLite keeps times as text)."""
    bucket = " + ".join(f"CASE WHEN occurred_at >= :b{i} THEN 1 ELSE 0 END" for i in range(1, hours))
    return (
        f"SELECT venue, {bucket or '0'} AS bucket, COUNT(*) AS n, COALESCE(SUM(usd_cents), 0) AS cents "  # noqa: S608
        "FROM events WHERE topic = :topic AND occurred_at >= :b0 AND occurred_at < :end AND venue IS NOT NULL "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )


class _Shared(Generic[T]):
    """One read at a time, its answer kept for a while: concurrent and repeated asks share it.

    Only the latest key is kept (the chart's key moves on every hour): memory stays one answer."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._kept: tuple[object, float, T] | None = None
        self._running: tuple[object, asyncio.Future[T]] | None = None

    def forget(self) -> None:
        self._kept = None

    async def get(self, key: object, read: Callable[[], Awaitable[T]], max_age_s: float) -> T:
        mono = self.clock.monotonic()
        kept = self._kept
        if kept is not None and kept[0] == key and max_age_s > 0 and mono - kept[1] <= max_age_s:
            return kept[2]
        if self._running is None or self._running[0] != key or self._running[1].done():

            async def run() -> T:
                return await read()

            future = asyncio.ensure_future(run())
            # A caller that gave up waiting (a scrape's timeout) must not leave the failure unretrieved.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._running = (key, future)
        value = await asyncio.shield(self._running[1])
        self._kept = (key, mono, value)
        return value


class StatusReads:
    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self._backlog: _Shared[list[PlatformBacklog]] = _Shared(clock)
        self._sent: _Shared[list[SentAlert]] = _Shared(clock)
        self._hourly: _Shared[list[HourBucket]] = _Shared(clock)

    def forget(self) -> None:
        """Drop the kept answers: the next read of each counts again."""
        for shared in (self._backlog, self._sent, self._hourly):
            shared.forget()

    async def backlog_by_platform(self, *, max_age_s: float = 0.0) -> list[PlatformBacklog]:
        """Pending (due now) and parked deliveries per platform; a platform with none is absent."""

        async def read() -> list[PlatformBacklog]:
            rows = await self.db.fetch_slow(_BACKLOG, {"now": self.clock.now()})
            return [PlatformBacklog(str(r["platform"]), int(r["pending"]), int(r["parked"])) for r in rows]

        return await self._backlog.get("all", read, max_age_s)

    async def recent_alerts(self, *, limit: int = 15, max_age_s: float = 0.0) -> list[SentAlert]:
        """The last alerts sent, newest first, one entry per event however many chats heard it. Reads the
        newest sent rows (a few per alert) and groups them here; a body that no longer decodes is left out."""

        async def read() -> list[SentAlert]:
            rows = await self.db.fetch_slow(_SENT, {"rows": limit * 20})
            grouped: dict[int, list[tuple[datetime, str, str, str, int]]] = {}
            for r in rows:
                sent_at = as_time(r["sent_at"]) if r["sent_at"] is not None else self.clock.now()
                grouped.setdefault(int(r["event_id"]), []).append(
                    (sent_at, str(r["platform"]), str(r["kind"]), str(r["body"]), int(r["body_version"]))
                )
            out: list[SentAlert] = []
            for rows_of in grouped.values():
                if len(out) >= limit:
                    break
                try:
                    event = decode_event(rows_of[0][3], rows_of[0][4])
                except Exception:  # noqa: S112 - an old body the page can skip: the outbox counts it
                    continue
                out.append(
                    SentAlert(
                        event=event,
                        sent_at=min(r[0] for r in rows_of),
                        audience=tuple(sorted((r[1], r[2]) for r in rows_of)),
                    )
                )
            return out

        return await self._sent.get(limit, read, max_age_s)

    async def liquidations_by_hour(self, *, end: datetime, hours: int = 24, max_age_s: float = 0.0) -> list[HourBucket]:
        """Liquidations per venue in each of the `hours` hours before `end` (its hour rounded up), by the
        time they occurred: the page's chart."""
        top = end.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        starts = [top - timedelta(hours=hours - i) for i in range(hours)]

        async def read() -> list[HourBucket]:
            params: dict[str, object] = {f"b{i}": start for i, start in enumerate(starts)}
            params.update(topic=Topic.LIQUIDATION.value, end=top)
            rows = await self.db.fetch_slow(_hourly_sql(hours), params)
            return [
                HourBucket(
                    venue=str(r["venue"]),
                    hour_start=starts[int(r["bucket"])],
                    count=int(r["n"]),
                    usd=Decimal(int(r["cents"])) / 100,
                )
                for r in rows
            ]

        return await self._hourly.get((top, hours), read, max_age_s)
