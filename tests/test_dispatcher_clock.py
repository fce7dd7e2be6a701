"""The dispatcher on a frozen clock: the worst window under each published limit, merging that follows the
backlog, answers paced with alerts, edits of a thread's message, and rows that must not jam a chat."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from bot.dispatch.dispatcher import Dispatcher
from bot.pipeline import Pipeline
from bot.platforms.delivery import Limits, Message, MessageRef, Rate, RetryLater, Unauthorized
from bot.render import Alert, Reply
from perpwatch.clock import FrozenClock
from perpwatch.events import Event
from perpwatch.sink import SinkUnavailable
from storage import StorageUnavailable, Store
from storage.models import Chat
from tests.factories import liquidation
from tests.fakes.recording_platform import RecordingPlatform, Sent
from tests.stored import delivery_rows, sent_latencies, spoil_body

# SQLite alone: these tests step a frozen clock and let tasks settle between steps, which holds only when
# every statement completes without real I/O waits. PostgreSQL's round trips take real time while frozen
# time moves on, so the same figures would measure the test, not the dispatcher. The outbox under these
# tests is engine-agnostic and is tested on both engines in test_storage.py and test_outbox_v2.py.

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@dataclass
class Rig:
    clock: FrozenClock
    store: Store
    pipeline: Pipeline
    dispatcher: Dispatcher
    platform: RecordingPlatform

    async def chat(self, name: str, *, group: bool = False) -> Chat:
        chat = await self.store.chats.upsert("telegram", name, kind="group" if group else "private", title=None)
        await self.store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
        return chat

    async def run(self, seconds: float, *, step: float = 0.01) -> None:
        for _ in range(round(seconds / step)):
            await self.clock.advance(step)

    async def latencies(self) -> list[float]:
        return await sent_latencies(self.store)


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    clock = FrozenClock(T0)
    async with Store(database_url, clock=clock) as store:
        platform = RecordingPlatform(clock)
        dispatcher = Dispatcher(store.outbox, store.chats, [platform], clock=clock, rand=lambda: 1.0)
        pipeline = Pipeline(store.outbox, on_accepted=dispatcher.accepted, on_uncertain=dispatcher.forget_hints)
        task = asyncio.create_task(dispatcher.run())
        await clock.advance(0)
        yield Rig(clock, store, pipeline, dispatcher, platform)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def worst_window(times: Sequence[float], period_s: float) -> int:
    """Most sends inside any window of `period_s` seconds (a window starting at each send is enough)."""
    ordered = sorted(times)
    worst = 0
    end = 0
    for start, t in enumerate(ordered):
        while end < len(ordered) and ordered[end] < t + period_s:
            end += 1
        worst = max(worst, end - start)
    return worst


def _events(prefix: str, n: int) -> list[Event]:
    return [liquidation(key=f"{prefix}-{i}", usd=str(1000 + i)) for i in range(n)]


async def test_a_group_never_gets_more_than_20_in_any_minute_at_one_event_a_second(rig: Rig) -> None:
    await rig.chat("-100", group=True)
    for event in _events("g", 75):
        await rig.pipeline.accept([event])
        await rig.run(1.0, step=0.05)
    await rig.run(10, step=0.05)
    times = [s.at for s in rig.platform.sent]
    assert worst_window(times, 60.0) <= 20
    assert min(b - a for a, b in itertools.pairwise(times)) >= 3.0  # the steady spacing, with its margin
    assert max(await rig.latencies()) <= 5.0  # every event represented within 5 s


async def test_per_chat_sends_keep_a_margin_over_one_a_second(rig: Rig) -> None:
    await rig.chat("7")
    for event in _events("p", 10):
        await rig.pipeline.accept([event])
        await rig.run(0.5, step=0.01)
    await rig.run(5)
    times = [s.at for s in rig.platform.sent]
    assert len(times) >= 3
    assert min(b - a for a, b in itertools.pairwise(times)) > 1.0


async def test_sixty_chats_at_once_stay_under_the_overall_cap(rig: Rig) -> None:
    for n in range(60):
        await rig.chat(str(1000 + n))
    await rig.pipeline.accept(_events("burst", 3))
    await rig.run(6, step=0.01)
    times = [s.at for s in rig.platform.sent]
    assert len(times) >= 60  # every chat heard of it
    assert worst_window(times, 1.0) <= 30


async def test_a_steady_flow_into_a_group_is_represented_within_five_seconds(rig: Rig) -> None:
    await rig.chat("-200", group=True)
    for tick in range(30 * 20):  # 20 a second for 30 s
        await rig.pipeline.accept([liquidation(key=f"s-{tick}", usd=str(500 + tick))])
        await rig.clock.advance(0.05)
    await rig.run(6, step=0.05)
    latencies = await rig.latencies()
    assert len(latencies) == 600  # every event is in some message
    assert max(latencies) <= 5.0
    assert rig.platform.sent[0].at - 1000.0 <= 0.1  # the first alert of the burst goes out at once
    assert worst_window([s.at for s in rig.platform.sent], 60.0) <= 20


async def test_a_burst_is_sent_first_then_merged_at_the_next_opportunity(rig: Rig) -> None:
    await rig.chat("-300", group=True)
    await rig.pipeline.accept(_events("b1", 1))
    await rig.pipeline.accept(_events("b2", 493))
    await rig.run(8, step=0.05)
    sent = rig.platform.sent
    assert len(sent) <= 3 and max(await rig.latencies()) <= 5.0
    assert isinstance(sent[-1].message, Alert) and "493" in sent[-1].message.title


async def test_answers_are_paced_merged_and_held_by_a_429_with_the_alerts(rig: Rig) -> None:
    chat = await rig.chat("9")
    for n in range(500):
        await rig.dispatcher.reply(chat, Reply.of(f"Subscribed #{n}"), None)
    await rig.run(3, step=0.01)
    answers = [s for s in rig.platform.sent if isinstance(s.message, Reply)]
    assert 1 <= len(answers) <= 3
    assert sum(line.startswith("Subscribed") for s in answers for line in s.message.lines) == 500  # type: ignore[union-attr]

    # A 429 on an answer holds the chat's alerts too, and the answer waits instead of being dropped.
    refused: list[Sent] = []

    def flood(sent: Sent) -> Exception | None:
        if not refused:
            refused.append(sent)
            return RetryLater(20.0)
        return None

    rig.platform.fail = flood
    before = len(rig.platform.sent)
    await rig.dispatcher.reply(chat, Reply.of("List"), None)
    await rig.pipeline.accept(_events("held", 1))
    await rig.run(19, step=0.1)
    assert len(rig.platform.sent) == before  # nothing during the hold
    await rig.run(5, step=0.1)
    after = rig.platform.sent[before:]
    assert [type(s.message).__name__ for s in after] == ["Reply", "Alert"]
    assert after[0].at - refused[0].at >= 20.0


async def test_a_newer_revision_edits_the_message_its_thread_sent(rig: Rig) -> None:
    await rig.chat("11")
    base = liquidation(key="c1", usd="1000")
    first = Event.model_validate({**base.model_dump(), "thread": "cascade:1", "revision": 1})
    await rig.pipeline.accept([first])
    await rig.run(2)
    second = Event.model_validate({**base.model_dump(), "key": "c2", "thread": "cascade:1", "revision": 2})
    await rig.pipeline.accept([second])
    await rig.run(2)
    assert [s.edit_of for s in rig.platform.sent] == [None, "1"]
    assert rig.dispatcher.stats.edited == 1


async def test_a_sweep_by_id_ranges_finds_every_chat_behind_the_log(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ranges of four ids, pages of two chats: seven chats behind take two ranges, each with a full page.
    monkeypatch.setattr("bot.dispatch.dispatcher.SWEEP_SPAN", 4)
    monkeypatch.setattr("bot.dispatch.dispatcher.SWEEP_PAGE", 2)
    chats = [await rig.chat(f"s{n}") for n in range(7)]
    await rig.run(0.5)  # each new subscription indexed and its chat read to the head
    await rig.store.outbox.accept(_events("behind", 1))  # stored; no chat woken
    rig.dispatcher.notify()  # a sweep, as after a restart
    await rig.run(3)
    assert sorted(s.chat for s in rig.platform.sent) == sorted(c.platform_chat_id for c in chats)


async def test_a_sweep_queues_a_few_pages_at_a_time_and_reaches_every_chat(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker and 100 ms a send: the chats a sweep finds wait in the queue. Pages of two chats, at most
    # four waiting before the sweep pauses: it goes on as they get a worker, through chats with rows due
    # and chats behind the log alike, and the queue never holds every chat at once.
    monkeypatch.setattr("bot.dispatch.dispatcher.SWEEP_PAGE", 2)
    monkeypatch.setattr("bot.dispatch.dispatcher.SWEEP_AHEAD", 4)
    clock = FrozenClock(T0)
    async with Store(database_url, clock=clock) as store:
        chats = []
        for n in range(14):  # made before the dispatcher, as at a restart: none is woken
            chat = await store.chats.upsert("telegram", f"q{n}", kind="private", title=None)
            await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
            chats.append(chat)
        await store.outbox.accept(_events("stored", 1))
        for chat in chats[:7]:  # half have their row written (due now), half are behind the log
            await store.outbox.read_log(chat.id, want=10)
        platform = _SlowPlatform(clock)
        dispatcher = Dispatcher(store.outbox, store.chats, [platform], clock=clock, rand=lambda: 1.0, max_workers=1)
        task = asyncio.create_task(dispatcher.run())
        most_waiting = 0
        for _ in range(400):
            await clock.advance(0.01)
            most_waiting = max(most_waiting, len(dispatcher._queue))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(s.chat for s in platform.sent) == sorted(c.platform_chat_id for c in chats)
    assert 4 <= most_waiting <= 4 + 2  # paused at four waiting; a page more at most


async def test_an_undecodable_row_is_parked_and_the_chat_goes_on(rig: Rig) -> None:
    chat = await rig.chat("12")
    await rig.store.outbox.accept(_events("x", 1) + _events("y", 1))  # stored; the dispatcher not yet told
    await spoil_body(rig.store, "x-0")  # a body no release can read
    rig.dispatcher.notify([chat.id])
    await rig.run(3)
    rows = await delivery_rows(rig.store)
    assert rows[0][1] == "parked" and "does not decode" in str(rows[0][2])
    assert rows[1][1] == "sent"
    assert rig.dispatcher.stats.dropped["undecodable"] == 1


async def test_an_expired_alert_is_dropped_with_a_counted_reason(rig: Rig) -> None:
    await rig.chat("13")
    rig.platform.fail = lambda _s: RetryLater(120.0)
    await rig.pipeline.accept([liquidation(key="first")])
    await rig.run(0.2)
    stale = Event.model_validate({**liquidation(key="stale").model_dump(), "expires_at": T0 + timedelta(seconds=60)})
    await rig.pipeline.accept([stale])
    rig.platform.fail = lambda _s: None
    await rig.run(125, step=0.5)
    rows = await delivery_rows(rig.store)
    assert sorted((r[0], r[1]) for r in rows) == [("first", "sent"), ("stale", "expired")]
    assert rig.dispatcher.stats.dropped["expired"] == 1


async def test_a_revoked_token_stops_that_platform_and_keeps_the_rows(rig: Rig) -> None:
    await rig.chat("14")
    rig.platform.fail = lambda _s: Unauthorized("TELEGRAM_BOT_TOKEN")
    await rig.pipeline.accept(_events("u", 3))
    await rig.run(5)
    assert "TELEGRAM_BOT_TOKEN" in rig.dispatcher.disabled["telegram"]
    rows = await delivery_rows(rig.store)
    assert [(r[1], r[3]) for r in rows] == [("pending", 0)] * 3


async def test_a_reminder_due_later_goes_out_when_it_falls_due(rig: Rig) -> None:
    await rig.chat("15")
    due = T0 + timedelta(minutes=10)
    await rig.pipeline.accept([Event.model_validate({**liquidation(key="r").model_dump(), "due_at": due})])
    await rig.run(590, step=1.0)
    assert rig.platform.sent == []
    await rig.run(15, step=0.5)
    assert len(rig.platform.sent) == 1


@pytest.mark.sqlite_only
async def test_sending_resumes_within_a_probe_of_the_lock_being_released(rig: Rig, database_url: str) -> None:
    """Issue 10.10: after a 10 s lock, sending resumed 18 s after the lock was released (a pause ladder up
    to 30 s). Now a write probe each second notices the database is back."""
    import sqlite3

    await rig.chat("16")
    other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)  # an operator's shell

    def lock_on_first_send(sent: Sent) -> Exception | None:
        if not other.in_transaction:
            other.execute("BEGIN IMMEDIATE")  # the platform has the message; the outbox cannot record it
        return None

    rig.platform.fail = lock_on_first_send
    await rig.pipeline.accept(_events("locked", 1))
    await rig.run(10, step=0.5)  # a 10 s lock
    assert rig.dispatcher.outage.paused() and len(rig.platform.sent) == 1
    other.execute("COMMIT")
    other.close()
    rig.platform.fail = lambda _s: None
    await rig.run(1.5, step=0.1)
    assert not rig.dispatcher.outage.paused()
    assert [r[1] for r in await delivery_rows(rig.store)] == ["sent"]
    assert len(rig.platform.sent) == 1  # recorded, never sent again


async def test_a_chat_that_hears_nothing_of_a_flood_is_not_read_and_its_cursor_still_moves_on(rig: Rig) -> None:
    """The index wakes only the chats an event may concern; the sweep moves the others' cursors to the head
    without a read, so the log behind them can be pruned and a restart has nothing to read for them."""
    everything = await rig.chat("all")
    eth_only = await rig.store.chats.upsert("telegram", "eth", kind="private", title=None)
    await rig.store.chats.subscribe(eth_only.id, "liquidation", venue=None, symbol="ETH", min_usd=None, limit=10)
    await rig.run(0.1)
    reads: list[int] = []
    real_read = rig.store.outbox.read_log

    async def counting(chat_id: int, **kw: Any) -> tuple[int, int]:
        reads.append(chat_id)
        return await real_read(chat_id, **kw)

    rig.store.outbox.read_log = counting  # type: ignore[method-assign]
    for event in _events("btc", 30):  # BTCUSDT: nothing for the ETH chat
        await rig.pipeline.accept([event])
    await rig.run(40.0, step=0.5)
    assert eth_only.id not in reads and everything.id in reads
    await rig.run(rig.dispatcher.idle_poll_s, step=1.0)  # one safety sweep later
    chats = {
        c.id: c for c in [await rig.store.chats.by_id(everything.id), await rig.store.chats.by_id(eth_only.id)] if c
    }
    assert chats[eth_only.id].log_cursor == rig.store.outbox.head == chats[everything.id].log_cursor
    assert eth_only.id not in reads  # moved on without a read
    await rig.pipeline.accept([liquidation(key="eth-1", symbol="ETHUSDT")])
    await rig.run(2.0)
    assert [s.chat for s in rig.platform.sent].count(eth_only.platform_chat_id) == 1


async def test_a_subscription_made_while_running_hears_the_next_event(rig: Rig) -> None:
    late = await rig.store.chats.upsert("telegram", "late", kind="private", title=None)
    await rig.run(0.1)
    await rig.store.chats.subscribe(late.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
    await rig.run(0.1)  # the index takes the change in
    await rig.pipeline.accept([liquidation(key="after")])
    await rig.run(2.0)
    assert [s.chat for s in rig.platform.sent] == [late.platform_chat_id]


async def test_a_flood_ban_on_many_chats_is_one_log_line_not_one_per_chat(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(40):
        await rig.chat(f"c{n}")
    rig.platform.fail = lambda _s: RetryLater(30.0)
    with caplog.at_level(logging.WARNING, logger="bot.dispatch.dispatcher"):
        await rig.pipeline.accept(_events("ban", 1))
        await rig.run(5.0, step=0.1)
    assert rig.dispatcher.stats.rate_limited == 40
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rate limited")]
    assert "more_since_last_line=0" in line


class _SlowPlatform(RecordingPlatform):
    """Each call takes 100 ms and only the per-chat limit applies: few workers make a queue of chats."""

    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0))

    async def send(self, chat: Chat, message: Message, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        await self.clock.sleep(0.1)
        return await super().send(chat, message, nonce=nonce, reply_to=reply_to)


async def test_a_chat_back_from_a_429_goes_before_chats_not_yet_tried(database_url: str) -> None:
    # Every chat's first send is refused for 1 s and four workers take 1.5 s to try all 60 once: the chats
    # refused first are retried as their holds end, not after every other chat's first try.
    clock = FrozenClock(T0)
    async with Store(database_url, clock=clock) as store:
        platform = _SlowPlatform(clock)
        dispatcher = Dispatcher(store.outbox, store.chats, [platform], clock=clock, rand=lambda: 1.0, max_workers=4)
        pipeline = Pipeline(store.outbox, on_accepted=dispatcher.accepted)
        task = asyncio.create_task(dispatcher.run())
        rig = Rig(clock, store, pipeline, dispatcher, platform)
        chats = 60
        for n in range(chats):
            await rig.chat(f"c{n}")
        tries: list[str] = []

        def refuse_first(sent: Sent) -> Exception | None:
            tries.append(sent.chat)
            return RetryLater(1.0) if tries.count(sent.chat) == 1 else None

        platform.fail = refuse_first
        await pipeline.accept(_events("flood", 1))
        await rig.run(6.0, step=0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(set(tries)) == chats and len(tries) == 2 * chats  # each refused once, then sent once
    first_retry = next(i for i, chat in enumerate(tries) if chat in tries[:i])
    last_first_try = max(tries.index(chat) for chat in set(tries))
    assert first_retry < last_first_try


async def test_a_new_alert_is_not_held_back_by_a_reminder_due_hours_later(rig: Rig) -> None:
    chat = await rig.chat("r")
    remind = Event.model_validate({**liquidation(key="reminder").model_dump(), "due_at": T0 + timedelta(hours=6)})
    await rig.pipeline.accept([remind])
    await rig.run(1.0)  # read: its row waits on a timer six hours out
    await rig.pipeline.accept([liquidation(key="now")])
    await rig.run(2.0)
    assert [s.chat for s in rig.platform.sent] == [chat.platform_chat_id]


# --- regressions a review of the event-log design found ------------------------------------------------


def _later(key: str, due: timedelta) -> Event:
    return Event.model_validate({**liquidation(key=key).model_dump(), "due_at": T0 + due})


async def test_many_reminders_due_later_leave_room_to_read_what_is_due_now(rig: Rig) -> None:
    await rig.chat("s")
    await rig.pipeline.accept([_later(f"later-{i}", timedelta(days=2)) for i in range(101)])
    await rig.run(2.0)
    await rig.pipeline.accept([liquidation(key="live")])
    await rig.run(5.0)
    assert len(rig.platform.sent) == 1


async def test_after_a_restart_a_chat_waiting_on_a_reminder_still_reads_what_came_before_the_crash(
    database_url: str,
) -> None:
    clock = FrozenClock(T0)
    async with Store(database_url, clock=clock) as store:
        chat = await store.chats.upsert("telegram", "1", kind="private", title=None)
        await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
        await store.outbox.accept([_later("r", timedelta(hours=6))])
        await store.outbox.read_log(chat.id, want=101)  # the reminder's row waits, due in 6 h
        await store.outbox.accept([liquidation(key="live", usd="900")])  # no worker read it before the crash
    async with Store(database_url, clock=clock) as store:
        platform = RecordingPlatform(clock)
        dispatcher = Dispatcher(store.outbox, store.chats, [platform], clock=clock, rand=lambda: 1.0)
        task = asyncio.create_task(dispatcher.run())
        for _ in range(20):
            await clock.advance(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(platform.sent) == 1


async def test_a_sweep_while_a_subscription_is_being_indexed_moves_no_cursor_past_what_it_now_hears(
    rig: Rig,
) -> None:
    chats = rig.store.chats
    chat = await chats.upsert("telegram", "c", kind="private", title=None)
    await chats.subscribe(chat.id, "liquidation", venue=None, symbol="BTC", min_usd=None, limit=10)
    await rig.run(1.0)
    real, gate = chats.interests, asyncio.Event()

    async def slow(**kw: Any) -> Any:  # the refresh's query is slow (PostgreSQL under load)
        got = await real(**kw)
        await gate.wait()
        return got

    chats.interests = slow  # type: ignore[method-assign]
    await chats.subscribe(chat.id, "liquidation", venue=None, symbol="ETH", min_usd=None, limit=10)
    rig.dispatcher.notify([chat.id])  # its worker reads to the head meanwhile
    await rig.run(1.0)
    await rig.pipeline.accept([liquidation(key="eth-1", symbol="ETHUSDT")])  # the old index does not wake it
    await rig.run(rig.dispatcher.idle_poll_s, step=0.5)  # a sweep inside the window
    gate.set()
    chats.interests = real  # type: ignore[method-assign]
    await rig.run(5.0, step=0.5)
    assert len(rig.platform.sent) == 1


async def test_two_changes_indexed_out_of_order_end_with_the_newest(rig: Rig) -> None:
    chats = rig.store.chats
    chat = await chats.upsert("telegram", "c", kind="private", title=None)
    await rig.run(1.0)
    real, first = chats.interests, asyncio.Event()
    calls = 0

    async def first_slow(**kw: Any) -> Any:
        nonlocal calls
        calls += 1
        got = await real(**kw)
        if calls == 1:
            await first.wait()  # the first refresh reads before the second change, answers after it
        return got

    chats.interests = first_slow  # type: ignore[method-assign]
    await chats.subscribe(chat.id, "liquidation", venue=None, symbol="BTC", min_usd=None, limit=10)
    await rig.run(0.1)
    await chats.subscribe(chat.id, "liquidation", venue=None, symbol="ETH", min_usd=None, limit=10)
    await rig.run(0.1)
    first.set()
    await rig.run(1.0)
    chats.interests = real  # type: ignore[method-assign]
    for key in ("eth-1", "eth-2"):
        await rig.pipeline.accept([liquidation(key=key, symbol="ETHUSDT")])
        await rig.run(rig.dispatcher.idle_poll_s, step=0.5)
    assert len(rig.platform.sent) == 2


async def test_a_commit_whose_answer_was_lost_is_neither_skipped_nor_left_behind(rig: Rig) -> None:
    """The commit reached the server but its answer did not (a dropped connection): the pipeline reports the
    events as unavailable, the watcher's retry is a replay, and the dispatcher never saw the event."""
    await rig.chat("c")
    await rig.run(1.0)
    real_accept = rig.store.outbox.accept
    lost = True

    async def commits_then_fails(events: Any) -> Any:
        nonlocal lost
        results = await real_accept(events)
        if lost:
            lost = False
            raise StorageUnavailable("postgresql unreachable: ConnectionResetError")
        return results

    rig.store.outbox.accept = commits_then_fails  # type: ignore[method-assign,assignment]
    first = liquidation(key="first", usd="500")
    with pytest.raises(SinkUnavailable):
        await rig.pipeline.accept([first])
    assert [r.new for r in await rig.pipeline.accept([first])] == [False]  # the watcher's retry
    await rig.pipeline.accept([liquidation(key="second", usd="600")])
    await rig.run(5.0)
    await rig.run(rig.dispatcher.idle_poll_s, step=1.0)
    keys = sorted(str(s.message) for s in rig.platform.sent)
    assert len(rig.platform.sent) >= 1 and any("'first'" in k for k in keys) and any("'second'" in k for k in keys)


class _GatedPlatform(RecordingPlatform):
    """Every send waits at one gate, then is refused: the 429s of a flood arrive in one pass of the loop."""

    limits: ClassVar[Limits] = Limits(per_chat=Rate(1, 1.0))

    def __init__(self, clock: FrozenClock) -> None:
        super().__init__(clock)
        self.gate = asyncio.Event()
        self.waiting = 0

    async def send(self, chat: Chat, message: Message, *, nonce: str, reply_to: str | None = None) -> MessageRef:
        self.waiting += 1
        await self.gate.wait()
        raise RetryLater(30.0)


async def test_the_holds_of_a_429_flood_take_turns_in_the_loops_slices(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each hold is a write. Forty answers landing together must not all be written in one pass of the loop,
    # which they were when a hold, unlike a send's record, did not wait for its turn. The dispatcher's
    # clock for slices is stepped by the writes themselves (1 ms each), so the bound does not depend on
    # how fast this machine is.
    from bot.dispatch import dispatcher as dispatcher_module

    slice_clock = [0.0]
    monkeypatch.setattr(
        dispatcher_module, "time", type("T", (), {"perf_counter": staticmethod(lambda: slice_clock[0])})
    )
    passes = [0]

    def count_passes() -> None:
        passes[0] += 1
        asyncio.get_running_loop().call_soon(count_passes)

    clock = FrozenClock(T0)
    async with Store(database_url, clock=clock) as store:
        platform = _GatedPlatform(clock)
        dispatcher = Dispatcher(store.outbox, store.chats, [platform], clock=clock, rand=lambda: 1.0)
        pipeline = Pipeline(store.outbox, on_accepted=dispatcher.accepted)
        task = asyncio.create_task(dispatcher.run())
        rig = Rig(clock, store, pipeline, dispatcher, platform)
        chats = 40
        for n in range(chats):
            await rig.chat(f"c{n}")
        hold_chat = store.outbox.hold_chat
        held_in_pass: list[int] = []

        async def timed_hold(chat_id: int, **kwargs: Any) -> None:
            held_in_pass.append(passes[0])
            slice_clock[0] += 0.001
            await hold_chat(chat_id, **kwargs)

        monkeypatch.setattr(store.outbox, "hold_chat", timed_hold)
        await pipeline.accept(_events("flood", 1))
        async with asyncio.timeout(10):  # a hang guard only
            while platform.waiting < chats:
                await clock.advance(0.01)
            asyncio.get_running_loop().call_soon(count_passes)
            platform.gate.set()
            while len(held_in_pass) < chats:  # noqa: ASYNC110
                await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    most_in_one_pass = max(held_in_pass.count(p) for p in set(held_in_pass))
    assert most_in_one_pass <= round(dispatcher_module.SLICE_S / 0.001) + 1  # a slice, and the one that spent it
