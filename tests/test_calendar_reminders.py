"""Calendar reminders on a frozen clock, on both engines: one event per lead time, each chat hearing the
leads on its list; a move tells the chats already reminded and reschedules the rest; a cancel withdraws
what is pending; a restart mid-schedule sends what fell due while stopped late with a note, or drops it
once its event has started, never both and never twice. Merging is idempotent and a chat edit survives it.

A chat's "send" here is the outbox's own read and mark_sent (what the dispatcher does), so the test sees
exactly which rows each chat got; the dispatcher itself is tested elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.calendar import CalendarService
from bot.families import render_event
from perpwatch.calendar import CalendarEntry, Figure
from perpwatch.clock import FrozenClock
from perpwatch.events import CalendarChangeBody, CalendarReminderBody, Event
from storage import Store
from storage.models import Chat
from tests.stored import scalar
from watchers.prices import Market

pytestmark = pytest.mark.engines

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
EVENT_AT = T0 + timedelta(days=8)  # 2026-12-09 12:00 UTC


class Prices:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def market(self, coingecko_id: str, token: str | None = None) -> Market | None:
        self.asked.append(coingecko_id)
        return Market(Decimal("30.5"), circulating_supply=Decimal("330000000"))


def entry(entry_id: str = "hype-test", **over: Any) -> CalendarEntry:
    values: dict[str, Any] = {
        "id": entry_id,
        "project": "Hyperliquid",
        "token": "HYPE",
        "coingecko_id": "hyperliquid",
        "event_type": "unlock",
        "starts_at": EVENT_AT,
        "precision": "exact",
        "amount_tokens": Decimal("1000000"),
        "total_supply": Decimal("1000000000"),
        "status": "announced",
        "figure": "announced",
        "source_url": "https://example.org/hype",
        "retrieved_at": T0.date(),
    }
    values.update(over)
    return CalendarEntry.model_validate(values)


TOML = """[[event]]
id = "hype-test"
project = "Hyperliquid"
token = "HYPE"
coingecko_id = "hyperliquid"
type = "unlock"
start = "2026-12-09T12:00"
amount = "{amount}"
total_supply = "1000000000"
status = "announced"
figure = "announced"
source = "https://example.org/hype"
retrieved = 2026-12-01
"""


@asynccontextmanager
async def running(
    url: str, clock: FrozenClock, bundled: Path | None = None
) -> AsyncIterator[tuple[Store, CalendarService]]:
    async with Store(url, clock=clock) as store:

        async def withdraw(thread: str) -> int:
            return await store.outbox.withdraw(thread, reason="test")

        service = CalendarService(
            store, accept=store.outbox.accept, withdraw=withdraw, clock=clock, prices=Prices(), bundled=bundled
        )
        yield store, service


async def chat(store: Store, name: str, leads: list[str] | None = None) -> Chat:
    made = await store.chats.upsert("telegram", name, kind="private", title=None)
    await store.chats.subscribe(made.id, "unlock", venue=None, symbol=None, min_usd=None, limit=10)
    if leads is not None:
        await store.chats.set_reminder_leads(made.id, leads)
    return made


async def send(store: Store, who: Chat, clock: FrozenClock) -> list[Event]:
    """What the chat is sent now: its rows read from the log and marked sent, as the dispatcher would."""
    await store.outbox.refresh_head()
    _, due = await store.outbox.due_for_chat(who.id, clock.now(), limit=100)
    if due:
        await store.outbox.mark_sent([d.id for d in due], message_ref=f"m{due[0].id}", now=clock.now())
    return [d.event for d in due if d.event is not None]


async def read_only(store: Store, who: Chat, clock: FrozenClock) -> None:
    """The chat read the log (its rows are pending) but was not sent them yet (a rate limit, quiet hours)."""
    await store.outbox.refresh_head()
    await store.outbox.read_log(who.id, want=100, now=clock.now())


def leads(events: list[Event]) -> list[str]:
    return [e.body.lead for e in events if isinstance(e.body, CalendarReminderBody)]


async def at(clock: FrozenClock, service: CalendarService, moment: datetime) -> int:
    clock.set_wall(moment)
    return await service.fire_due()


async def test_each_lead_is_one_event_and_each_chat_hears_the_leads_on_its_list(database_url: str) -> None:
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a, b = await chat(store, "a"), await chat(store, "b", ["1h"])
        report = await service.merge([entry()], origin="bundled")
        assert report.added == 1
        assert [r[1] for r in await store.calendar.reminders("hype-test")] == ["7d", "3d", "24h", "6h", "1h"]
        assert await at(clock, service, EVENT_AT - timedelta(days=7, minutes=1)) == 0
        assert await at(clock, service, EVENT_AT - timedelta(days=7)) == 1
        [seven] = await send(store, a, clock)
        assert await send(store, b, clock) == []
        body = seven.body
        assert isinstance(body, CalendarReminderBody) and body.lead == "7d"
        assert body.value_usd == Decimal("30500000.00") and body.price_usd == Decimal("30.5")
        assert body.pct_total == Decimal("0.1") and body.pct_circulating == Decimal("0.303")
        assert body.late_note is None and seven.expires_at == EVENT_AT
        alert = render_event(seven)
        assert alert.title == "⏳ Hyperliquid (HYPE) unlock in 7 days"
        assert ("USD value", "$30.5M at 30.5 (CoinGecko)") in [(f.name, f.value) for f in alert.fields]
        assert ("Supply", "0.1% of total, 0.303% of circulating") in [(f.name, f.value) for f in alert.fields]
        assert any(f.name == "Source" and "https://example.org/hype" in f.value for f in alert.fields)
        assert await at(clock, service, EVENT_AT - timedelta(days=3)) == 1  # 3d: on nobody's list here
        assert await send(store, a, clock) == [] and await send(store, b, clock) == []
        assert await at(clock, service, EVENT_AT - timedelta(hours=24)) == 1
        assert leads(await send(store, a, clock)) == ["24h"]
        await at(clock, service, EVENT_AT - timedelta(hours=6))
        await at(clock, service, EVENT_AT - timedelta(hours=1))
        assert leads(await send(store, a, clock)) == ["1h"]
        assert leads(await send(store, b, clock)) == ["1h"]
        assert await service.fire_due() == 0  # nothing twice
        assert await scalar(store, "SELECT COUNT(*) FROM events WHERE key LIKE 'cal:hype-test:%'") == 5


async def test_a_date_known_to_the_day_or_quarter_gets_no_reminder_finer_than_that(database_url: str) -> None:
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a = await chat(store, "a", ["7d", "24h", "1h"])
        day = entry("day", starts_at=datetime(2026, 12, 20, tzinfo=UTC), precision="day")
        quarter = entry("quarter", starts_at=datetime(2027, 1, 1, tzinfo=UTC), precision="quarter", event_type="tge")
        await service.merge([day, quarter], origin="bundled")
        assert [r[1] for r in await store.calendar.reminders("day")] == ["7d", "3d", "24h"]
        assert [r[1] for r in await store.calendar.reminders("quarter")] == ["7d"]
        await store.chats.subscribe(a.id, "tge", venue=None, symbol=None, min_usd=None, limit=10)
        await at(clock, service, datetime(2026, 12, 25, tzinfo=UTC))
        sent = {e.body.entry_id: e for e in await send(store, a, clock) if isinstance(e.body, CalendarReminderBody)}
        assert set(sent) == {"quarter"}  # the day one started on the 20th: its reminders were dropped
        alert = render_event(sent["quarter"])
        assert "window opens in 7 days" in alert.title
        assert ("When", "sometime in Q1 2027") in [(f.name, f.value) for f in alert.fields]


async def test_a_moved_event_tells_the_chats_reminded_withdraws_what_waits_and_reschedules(database_url: str) -> None:
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a, b, c = await chat(store, "a"), await chat(store, "b", ["7d"]), await chat(store, "c", ["1h"])
        await service.merge([entry()], origin="bundled")
        await at(clock, service, EVENT_AT - timedelta(days=7))
        assert leads(await send(store, a, clock)) == ["7d"]
        await read_only(store, b, clock)  # b's 7d waits (rate limited): it was never sent
        clock.set_wall(T0 + timedelta(days=2))
        later = EVENT_AT + timedelta(days=4)
        report = await service.merge([entry(starts_at=later)], origin="bundled")
        assert report.moved == 1 and report.told == 1
        [notice] = await send(store, a, clock)
        assert isinstance(notice.body, CalendarChangeBody) and notice.audience == a.id
        assert (notice.body.from_at, notice.body.to_at) == (EVENT_AT, later)
        alert = render_event(notice)
        assert alert.title == "📅 Hyperliquid (HYPE) unlock: moved"
        assert [(f.name, f.value) for f in alert.fields][:2] == [
            ("From", "2026-12-09 12:00 UTC"),
            ("To", "2026-12-13 12:00 UTC"),
        ]
        assert await send(store, b, clock) == []  # its unsent old reminder was withdrawn, and it is not told
        assert await send(store, c, clock) == []
        assert await scalar(store, f"SELECT status FROM deliveries WHERE chat_id = {int(b.id)}") == "withdrawn"  # noqa: S608
        states = {(rev, lead): state for rev, lead, _, state in await store.calendar.reminders("hype-test")}
        assert states[(0, "7d")] == "accepted" and states[(0, "24h")] == "withdrawn"
        assert states[(1, "7d")] == "scheduled" and states[(1, "1h")] == "scheduled"
        await at(clock, service, later - timedelta(days=7))
        [again] = await send(store, a, clock)
        assert isinstance(again.body, CalendarReminderBody) and again.body.starts_at == later
        assert again.key == "cal:hype-test:r1:7d"
        assert leads(await send(store, b, clock)) == ["7d"]
        await at(clock, service, EVENT_AT - timedelta(hours=1))  # the old 1h time: nothing fires
        assert await send(store, c, clock) == []


async def test_a_cancelled_event_withdraws_its_reminders_and_tells_who_was_reminded(database_url: str) -> None:
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a, b = await chat(store, "a"), await chat(store, "b", ["1h"])
        await service.merge([entry()], origin="bundled")
        await at(clock, service, EVENT_AT - timedelta(days=7))
        await send(store, a, clock)
        await at(clock, service, EVENT_AT - timedelta(days=3))
        cancelled = await service.cancel("hype-test", by="telegram:42")
        assert cancelled is not None and cancelled.locked and cancelled.entry.status.value == "cancelled"
        [notice] = await send(store, a, clock)
        assert isinstance(notice.body, CalendarChangeBody) and notice.body.change == "cancelled"
        assert render_event(notice).title == "❌ Hyperliquid (HYPE) unlock: cancelled"
        assert {s for *_, s in await store.calendar.reminders("hype-test")} == {"accepted", "withdrawn"}
        for moment in (EVENT_AT - timedelta(hours=24), EVENT_AT - timedelta(hours=1)):
            assert await at(clock, service, moment) == 0
        assert await send(store, a, clock) == [] and await send(store, b, clock) == []
        kept = await service.merge([entry()], origin="bundled")  # the file still lists it: the chat's cancel stays
        assert kept.kept_chat_edits == 1
        stored = await store.calendar.get("hype-test")
        assert stored is not None and stored.entry.status.value == "cancelled"


async def test_a_restart_mid_schedule_sends_what_fell_due_while_stopped_late_once_and_drops_what_passed(
    database_url: str, tmp_path: Path
) -> None:
    bundled = tmp_path / "calendar.toml"
    bundled.write_text(TOML.format(amount="1000000"), encoding="utf-8")
    clock = FrozenClock(T0)
    async with running(database_url, clock, bundled) as (store, service):
        a = await chat(store, "a", ["7d", "3d", "24h", "6h", "1h"])
        await service.start()
        await at(clock, service, EVENT_AT - timedelta(days=7))
        assert leads(await send(store, a, clock)) == ["7d"]
    # Stopped from day 1 to 2 h after the 24 h reminder fell due: the 3d and 24h reminders fell due meanwhile.
    clock.set_wall(EVENT_AT - timedelta(hours=22))
    async with running(database_url, clock, bundled) as (store, service):
        await service.start()  # merges the file again (unchanged) and catches up
        sent = await send(store, a, clock)
        assert leads(sent) == ["3d", "24h"]
        late = [e.body.late_note for e in sent if isinstance(e.body, CalendarReminderBody)]
        assert all(note and "while the bot was not running" in note for note in late)
        assert "Late: this 24h reminder was due 2026-12-08 12:00 UTC" in (render_event(sent[1]).footer or "")
        assert await scalar(store, "SELECT COUNT(*) FROM events WHERE key = 'cal:hype-test:r0:7d'") == 1
        assert await send(store, a, clock) == []
    # Stopped again before the 6h and 1h reminders, back after the event started: both are dropped.
    clock.set_wall(EVENT_AT + timedelta(minutes=5))
    async with running(database_url, clock, bundled) as (store, service):
        await service.start()
        assert await send(store, a, clock) == []
        states = {lead: state for _, lead, _, state in await store.calendar.reminders("hype-test")}
        assert states == {"7d": "accepted", "3d": "accepted", "24h": "accepted", "6h": "dropped", "1h": "dropped"}
        assert await scalar(store, "SELECT COUNT(*) FROM events WHERE key LIKE 'cal:hype-test:r0:%h'") == 1
        assert service.dropped == 2


async def test_a_crash_between_accepting_a_reminder_and_recording_it_sends_it_once(database_url: str) -> None:
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a = await chat(store, "a")
        await service.merge([entry()], origin="bundled")
        real = store.calendar.decide

        async def crash(*args: Any) -> bool:
            raise ConnectionError("killed after the accept")

        store.calendar.decide = crash  # type: ignore[method-assign,assignment]
        clock.set_wall(EVENT_AT - timedelta(days=7))
        with pytest.raises(ConnectionError):
            await service.fire_due()
        store.calendar.decide = real  # type: ignore[method-assign]
        assert await service.fire_due() == 1
        assert leads(await send(store, a, clock)) == ["7d"]
        assert await scalar(store, "SELECT COUNT(*) FROM events WHERE key LIKE 'cal:hype-test:%'") == 1


async def test_merging_is_idempotent_and_a_chat_edit_survives_the_next_merge(database_url: str, tmp_path: Path) -> None:
    bundled = tmp_path / "calendar.toml"
    bundled.write_text(TOML.format(amount="1000000"), encoding="utf-8")
    clock = FrozenClock(T0)
    async with running(database_url, clock, bundled) as (store, service):
        first = await service.load_bundled()
        again = await service.load_bundled()
        assert (first.added, again.added, again.unchanged, again.updated) == (1, 0, 1, 0)
        assert len(await store.calendar.reminders("hype-test")) == 5
        stored = await store.calendar.get("hype-test")
        assert stored is not None
        edited = stored.entry.model_copy(update={"amount_tokens": Decimal("1200000"), "figure": Figure.ACTUAL})
        await service.put_from_chat(edited, by="telegram:42")
        bundled.write_text(TOML.format(amount="999"), encoding="utf-8")  # the next release's file differs
        merged = await service.load_bundled()
        assert merged.kept_chat_edits == 1
        kept = await store.calendar.get("hype-test")
        assert kept is not None and kept.locked and kept.entry.amount_tokens == Decimal("1200000")
        assert kept.edited_by == "telegram:42" and kept.revision == 0  # same timing: same reminders
        assert len(await store.calendar.reminders("hype-test")) == 5


async def test_leads_already_past_when_an_entry_is_added_or_moved_are_never_sent(database_url: str) -> None:
    """A 7d reminder of an event added 2 days ahead did not fall due while the bot was down: it never was
    due for that timing, so it is not sent late either (nor after a move to a nearer date)."""
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a = await chat(store, "a", ["7d", "3d", "24h", "6h", "1h"])
        await service.merge([entry(starts_at=T0 + timedelta(days=2))], origin="bundled")
        assert [r[1] for r in await store.calendar.reminders("hype-test")] == ["24h", "6h", "1h"]
        await service.merge([entry(starts_at=T0 + timedelta(hours=3))], origin="bundled")
        assert [(r[0], r[1]) for r in await store.calendar.reminders("hype-test") if r[3] == "scheduled"] == [(1, "1h")]
        assert await service.fire_due() == 0
        assert await send(store, a, clock) == []
        assert await at(clock, service, T0 + timedelta(hours=2)) == 1
        assert leads(await send(store, a, clock)) == ["1h"]


async def test_a_price_out_of_any_range_costs_the_usd_line_not_the_reminder(database_url: str) -> None:
    clock = FrozenClock(T0)
    async with running(database_url, clock) as (store, service):
        a = await chat(store, "a")

        class Broken:
            async def market(self, coingecko_id: str, token: str | None = None) -> Market:
                return Market(Decimal("1e12"), circulating_supply=Decimal(1))

        service.prices = Broken()
        await service.merge([entry()], origin="bundled")
        assert await at(clock, service, EVENT_AT - timedelta(days=7)) == 1
        [reminder] = await send(store, a, clock)
        assert isinstance(reminder.body, CalendarReminderBody)
        assert reminder.body.value_usd is None and reminder.body.amount_tokens == Decimal("1000000")
