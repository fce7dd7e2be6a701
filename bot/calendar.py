"""The calendar service: merges the bundled file, model schedules and chat edits; schedules, fires, moves
and cancels reminders; catches up after a restart.

Merging is idempotent: an entry whose fingerprint is unchanged costs a read and nothing else, so every
start merges the whole bundled file again. An entry edited in chat is `locked` and no later merge of the
file or of a model refresh touches it: the operator who fixed a date in chat knows better than the file
shipped with the release.

Reminders follow `storage.calendar`: one row per (entry, revision, lead) waits there until due, then becomes
one event in the log (its key `cal:<id>:r<rev>:<lead>` dedupes a replay after a crash between the accept
and the row's update). Each chat hears the leads on its own list (/leads) because the event's `level` is
its lead. A reminder that fell due while the bot was stopped is accepted late with a note saying so, or,
once its event has started, dropped as expired: one or the other, never both, never twice.

A move (new start or precision) or a cancel bumps the entry's revision: reminders of the older revision
still scheduled are withdrawn in the same transaction, ones already in the log are withdrawn there
(`Outbox.withdraw`: a chat that has not been sent one yet never is), and every chat that *was* sent one is
told, by an event for that chat alone (`audience`), as a new message rather than a silent edit. The new
timing's reminders are scheduled for the leads still ahead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from bot.calendar_file import LoadReport, bundled_path, load_file
from perpwatch.calendar import LEAD_SPAN, CalendarEntry, Status, leads_for
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import SUBJECT_PATTERN, SYMBOL_PATTERN, CalendarChangeBody, CalendarReminderBody, Event
from storage import Store
from storage.calendar import DueReminder, StoredEntry, reminder_thread
from storage.models import AcceptResult
from watchers import defillama_emissions, polymarket
from watchers.base import Watcher
from watchers.runtime import Runtime

log = logging.getLogger(__name__)

LATE_AFTER = timedelta(minutes=10)
"""A reminder accepted this long after it fell due says it is late: the service looks every `TICK_S`, so
less than this is on time."""

TICK_S = 30.0
REFRESH_EVERY = timedelta(hours=6)
"""How often recurring lines are expanded again (the horizon moves on) and a model refresh is merged."""

MODEL_WATCHER = "defillama_emissions"
"""Whose durable state holds the last good model schedule (watchers/defillama_emissions.py)."""

ACTIVE = (Status.RUMOURED, Status.ANNOUNCED, Status.CONFIRMED)


class MarketLookup(Protocol):
    """A price source (watchers/prices.py): USD price, circulating supply and the price's source (`source`)
    of the token keyed by a CoinGecko id; `token` (the ticker) lets a venue's mark be matched to it."""

    async def market(self, coingecko_id: str, token: str | None = None) -> Any | None: ...


Accept = Callable[[Sequence[Event]], Awaitable[list[AcceptResult]]]
Withdraw = Callable[[str], Awaitable[int]]


@dataclass
class MergeReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    cancelled: int = 0
    unchanged: int = 0
    kept_chat_edits: int = 0
    told: int = 0
    """Change notices accepted (one per chat that had been reminded)."""
    ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, cancelled {self.cancelled}, "
            f"unchanged {self.unchanged}, chat edits kept {self.kept_chat_edits}"
        )


def _active(entry: CalendarEntry) -> bool:
    return entry.status in ACTIVE


def _pct(part: Decimal, whole: Decimal) -> Decimal:
    return (part * 100 / whole).quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN).normalize()


class CalendarService:
    def __init__(
        self,
        store: Store,
        *,
        accept: Accept,
        withdraw: Withdraw,
        clock: Clock = SYSTEM_CLOCK,
        prices: MarketLookup | None = None,
        bundled: Path | None = None,
    ) -> None:
        self.store = store
        self.repo = store.calendar
        self._accept = accept
        self._withdraw = withdraw
        self.clock = clock
        self.prices = prices
        self.bundled = bundled or bundled_path()
        self.report = LoadReport()
        self._model_seen: str | None = None
        self._refreshed_at: datetime | None = None
        self.fired = 0
        self.dropped = 0

    # --- merging ------------------------------------------------------------------------------------
    async def load_bundled(self) -> MergeReport:
        """Read and merge the bundled file; rejected lines are logged with the file, line and reason."""
        self.report = load_file(self.bundled)
        for rejected in self.report.rejected:
            log.warning("calendar line rejected %s", rejected)
        merged = await self.merge(self.report.entries(self.clock.now()), origin="bundled")
        log.info("calendar merged file=%s %s rejected=%d", self.bundled.name, merged, len(self.report.rejected))
        return merged

    async def merge(self, entries: Sequence[CalendarEntry], *, origin: str) -> MergeReport:
        report = MergeReport()
        for entry in entries:
            await self._apply(entry, origin=origin, locked=False, by=None, report=report)
        return report

    async def put_from_chat(self, entry: CalendarEntry, *, by: str) -> MergeReport:
        """An operator's add or edit: stored locked, so later merges keep it."""
        report = MergeReport()
        await self._apply(entry, origin="chat", locked=True, by=by, report=report)
        return report

    async def _apply(
        self, entry: CalendarEntry, *, origin: str, locked: bool, by: str | None, report: MergeReport
    ) -> None:
        now = self.clock.now()
        old = await self.repo.get(entry.id)
        if old is None:
            await self.repo.put(
                entry, origin=origin, revision=0, locked=locked, edited_by=by, schedule=self._ladder(entry, now)
            )
            report.added += 1
            report.ids.append(entry.id)
            return
        if old.locked and not locked:
            report.kept_chat_edits += 1
            return
        if old.fingerprint == entry.fingerprint() and old.locked == locked:
            report.unchanged += 1
            return
        keep_origin = old.origin if origin == "chat" and old.origin != "chat" else origin
        moved = old.entry.timing() != entry.timing()
        flipped = _active(old.entry) != _active(entry)
        if not moved and not flipped:  # same timing: reminders still to fire read the new figures then
            await self.repo.put(entry, origin=keep_origin, revision=old.revision, locked=locked, edited_by=by)
            report.updated += 1
            return
        revision = old.revision + 1
        schedule = self._ladder(entry, now) if _active(entry) else []
        accepted = await self.repo.put(
            entry,
            origin=keep_origin,
            revision=revision,
            locked=locked,
            edited_by=by,
            schedule=schedule,
            withdraw_before=revision,
        )
        reason = "its calendar entry moved" if _active(entry) else f"its calendar entry is {entry.status.value}"
        for old_revision, lead in accepted:
            await self._withdraw(reminder_thread(entry.id, old_revision, lead))
        if _active(old.entry) and (entry.status is Status.CANCELLED or (moved and _active(entry))):
            report.told += await self._tell(old, entry, revision)
        if entry.status is Status.CANCELLED:
            report.cancelled += 1
        elif moved:
            report.moved += 1
        else:
            report.updated += 1
        log.info("calendar entry changed id=%s revision=%d (%s)", entry.id, revision, reason)

    def _ladder(self, entry: CalendarEntry, now: datetime) -> list[tuple[str, datetime]]:
        """The leads still ahead, at the entry's precision. A lead already past when the entry is (re)timed
        is not sent: it did not fall due while the bot was down, it never was due for this timing."""
        if not _active(entry):
            return []
        return [
            (lead, entry.starts_at - LEAD_SPAN[lead])
            for lead in leads_for(entry.precision)
            if entry.starts_at - LEAD_SPAN[lead] > now
        ]

    async def _tell(self, old: StoredEntry, new: CalendarEntry, revision: int) -> int:
        chats = await self.repo.reminded_chats(new.id)
        if not chats:
            return 0
        now = self.clock.now()
        cancelled = new.status is Status.CANCELLED
        body = CalendarChangeBody(
            change="cancelled" if cancelled else "moved",
            entry_id=new.id,
            project=new.project,
            token=new.token,
            token_key=new.token_key,
            event_type=new.event_type.value,
            title=new.title,
            from_at=old.entry.starts_at,
            from_precision=old.entry.precision.value,
            to_at=None if cancelled else new.starts_at,
            to_precision=None if cancelled else new.precision.value,
            source_url=new.source_url,
        )
        events = [
            Event(
                key=f"cal:{new.id}:change:r{revision}:c{chat}",
                topic=new.topic,
                source="calendar",
                symbol=_symbol(new),
                subject=_subject(new),
                occurred_at=now,
                body=body,
                link=new.source_url,
                audience=chat,
            )
            for chat in chats
        ]
        await self._accept(events)
        return len(events)

    async def cancel(self, entry_id: str, *, by: str) -> StoredEntry | None:
        stored = await self.repo.get(entry_id)
        if stored is None:
            return None
        await self.put_from_chat(stored.entry.model_copy(update={"status": Status.CANCELLED}), by=by)
        return await self.repo.get(entry_id)

    # --- model schedules (DefiLlama) ----------------------------------------------------------------
    async def merge_model(self) -> MergeReport | None:
        """Merge the model watcher's last good schedule when it changed since the last merge. A failed
        refresh writes nothing there, so the bundled calendar stays in force (and /status shows the error)."""
        value = await self.store.watchers.get_value(MODEL_WATCHER, "entries")
        if not isinstance(value, dict) or value.get("fetched_at") == self._model_seen:
            return None
        entries: list[CalendarEntry] = []
        for raw in value.get("entries", []):
            try:
                entries.append(CalendarEntry.model_validate(raw))
            except ValidationError as exc:
                log.warning("model calendar entry refused error=%s", str(exc).splitlines()[0])
        self._model_seen = str(value.get("fetched_at"))
        return await self.merge(entries, origin="defillama")

    # --- firing -------------------------------------------------------------------------------------
    async def fire_due(self) -> int:
        """Accept every reminder now due (late ones with a note), drop the ones whose event has started;
        the number accepted."""
        now = self.clock.now()
        accepted = 0
        for reminder in await self.repo.due(now):
            stored = await self.repo.get(reminder.entry_id)
            if stored is None or stored.revision != reminder.revision or not _active(stored.entry):
                await self.repo.decide(reminder, "withdrawn")
                continue
            entry = stored.entry
            if now >= entry.starts_at:
                if await self.repo.decide(reminder, "dropped"):
                    self.dropped += 1
                    log.info(
                        "calendar reminder dropped: its event has started id=%s lead=%s due=%s",
                        entry.id,
                        reminder.lead,
                        reminder.due_at,
                    )
                continue
            try:
                event = await self._reminder(entry, reminder, now)
            except ValueError as exc:  # a figure out of any range (a price source's bug): never jam the rest
                log.warning("calendar reminder without market figures id=%s error=%s", entry.id, str(exc)[:200])
                event = await self._reminder(entry, reminder, now, priced=False)
            await self._accept([event])
            if await self.repo.decide(reminder, "accepted"):
                accepted += 1
        self.fired += accepted
        return accepted

    async def _reminder(
        self, entry: CalendarEntry, reminder: DueReminder, now: datetime, *, priced: bool = True
    ) -> Event:
        price = circulating = price_source = None
        if priced and self.prices is not None and entry.coingecko_id is not None:
            try:
                market = await self.prices.market(entry.coingecko_id, entry.token)
            except Exception as exc:  # a price is a nicety: the reminder goes without it
                log.warning("price lookup failed id=%s error=%r", entry.coingecko_id, exc)
                market = None
            if market is not None:
                price, circulating = market.price_usd, market.circulating_supply
                price_source = getattr(market, "source", None)
        amount = entry.amount_tokens
        value = (amount * price).quantize(Decimal("0.01")) if amount is not None and price is not None else None
        pct_total = entry.pct_supply
        if pct_total is None and amount is not None and entry.total_supply:
            pct_total = _pct(amount, entry.total_supply)
        pct_circulating = _pct(amount, circulating) if amount is not None and circulating else None
        late = None
        if now - reminder.due_at > LATE_AFTER:
            late = (
                f"Late: this {reminder.lead} reminder was due {reminder.due_at:%Y-%m-%d %H:%M} UTC, while the bot "
                "was not running."
            )
        body = CalendarReminderBody(
            lead=reminder.lead,
            entry_id=entry.id,
            project=entry.project,
            token=entry.token,
            token_key=entry.token_key,
            event_type=entry.event_type.value,
            title=entry.title,
            starts_at=entry.starts_at,
            precision=entry.precision.value,
            amount_tokens=amount,
            price_usd=price,
            price_source=price_source if price is not None else None,
            value_usd=value,
            pct_total=pct_total,
            pct_circulating=pct_circulating,
            status=entry.status.value,
            figure=entry.figure.value,
            source_url=entry.source_url,
            retrieved_at=entry.retrieved_at.isoformat(),
            note=entry.note,
            late_note=late,
        )
        return Event(
            key=f"cal:{entry.id}:r{reminder.revision}:{reminder.lead}",
            topic=entry.topic,
            source="calendar",
            symbol=_symbol(entry),
            subject=_subject(entry),
            usd=value if value else None,
            occurred_at=now,
            body=body,
            link=entry.source_url,
            thread=reminder_thread(entry.id, reminder.revision, reminder.lead),
            revision=reminder.revision,
            expires_at=entry.starts_at,
        )

    # --- the job ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """At start: merge the bundled file and the last model schedule, then catch up on what fell due
        while the bot was stopped (before any new reminder: the order they were due in)."""
        await self.load_bundled()
        await self.merge_model()
        self._refreshed_at = self.clock.now()
        await self.fire_due()

    async def run(self, every_s: float = TICK_S) -> None:
        while True:
            await self.clock.sleep(every_s)
            try:
                now = self.clock.now()
                if self._refreshed_at is None or now - self._refreshed_at >= REFRESH_EVERY:
                    await self.merge(self.report.entries(now), origin="bundled")
                    self._refreshed_at = now
                await self.merge_model()
                await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage away: the next tick catches up, nothing was decided
                log.warning("calendar tick failed; will try again error=%s", type(exc).__name__)


def _symbol(entry: CalendarEntry) -> str | None:
    """The ticker as the event's symbol, so `/subscribe unlock symbol=HYPE` can narrow a chat's reminders;
    the key that tells tokens apart is the subject."""
    return entry.token if entry.token and SYMBOL_PATTERN.match(entry.token) else None


def _subject(entry: CalendarEntry) -> str | None:
    key = entry.token_key
    return key if SUBJECT_PATTERN.match(key) else None


def calendar_watchers(settings: Any, runtime: Runtime) -> list[Watcher]:
    """The calendar's sources that poll (`PERPWATCH_CALENDAR_SOURCES`), run by the supervisor beside the
    venue watchers so /status shows their health: DefiLlama's model cliffs, Polymarket's launch markets."""
    built: list[Watcher] = []
    for name in settings.calendar_sources:
        if name == defillama_emissions.NAME:
            built.append(defillama_emissions.DefiLlamaEmissionsWatcher(settings, runtime.context(name)))
        elif name == polymarket.NAME:
            built.append(polymarket.PolymarketHintsWatcher(settings, runtime.context(name)))
    return built
