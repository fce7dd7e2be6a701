"""Pacing under a frozen clock: the fault run's scenarios, judged by the worst window of recorded send times.

Every check counts sends in every window over the times a send actually started, so a limiter whose burst
rides on top of its rate (a leaky bucket) fails here, not only one that ignores its rate.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import pytest

from bot.dispatch.pacing import DEFAULT_MARGIN_S, Pacer, SlidingWindow
from bot.platforms.delivery import Limits, Rate
from perpwatch.clock import FrozenClock

TELEGRAM = Limits(per_chat=Rate(1, 1.0), per_group=Rate(20, 60.0), overall=Rate(30, 1.0))
GROUP, PRIVATE = -100200, 42
CHAT_SPAN = 1.0 + DEFAULT_MARGIN_S
GROUP_SPAN = 60.0 + DEFAULT_MARGIN_S
OVERALL_SPAN = 1.0 + DEFAULT_MARGIN_S


def worst_window(times: Sequence[float], period: float) -> int:
    """The most sends that started in any half-open window `[t, t + period)`."""
    ordered = sorted(times)
    worst = lo = 0
    for hi, t in enumerate(ordered):
        while ordered[lo] + period <= t:
            lo += 1
        worst = max(worst, hi - lo + 1)
    return worst


async def run_for(clock: FrozenClock, seconds: float, step: float = 0.05) -> None:
    """Let new tasks start at the present instant, then move the frozen clock on in small steps; each woken
    task runs at its own deadline, not at the end of a step."""
    for _ in range(5):
        await asyncio.sleep(0)
    for _ in range(round(seconds / step)):
        await clock.advance(step)


class Recorder:
    """What the platform would see: the instant each send started, per chat and overall."""

    def __init__(self, pacer: Pacer, clock: FrozenClock) -> None:
        self.pacer, self.clock = pacer, clock
        self.sent: list[tuple[int, float]] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, chat: int, *, group: bool) -> None:
        await self.pacer.acquire(chat, group=group)
        self.sent.append((chat, self.clock.monotonic()))

    def times(self, chat: int | None = None) -> list[float]:
        return [t for c, t in self.sent if chat is None or c == chat]

    async def worker(self, chat: int, queue: asyncio.Queue[None], *, group: bool, latency_s: float = 0.05) -> None:
        """The dispatcher's shape: one worker per chat sends its alerts in order, each send taking a while."""
        while True:
            await queue.get()
            await self.send(chat, group=group)
            await self.clock.sleep(latency_s)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def rec(clock: FrozenClock) -> AsyncIterator[Recorder]:
    recorder = Recorder(Pacer(TELEGRAM, clock), clock)
    yield recorder
    await recorder.close()


async def feed(clock: FrozenClock, queue: asyncio.Queue[None], count: int, every_s: float) -> None:
    for _ in range(count):
        queue.put_nowait(None)
        await clock.sleep(every_s)


def assert_telegram_limits(rec: Recorder) -> None:
    """Telegram's published limits, and the same with our margin, hold in every window of the run."""
    everything = rec.times()
    assert worst_window(everything, 1.0) <= 30
    assert worst_window(everything, OVERALL_SPAN) <= 30
    for chat in {c for c, _ in rec.sent}:
        times = rec.times(chat)
        assert worst_window(times, CHAT_SPAN) <= 1, f"chat {chat} sent twice within {CHAT_SPAN}s"
        if chat < 0:
            assert worst_window(times, 60.0) <= 20
            assert worst_window(times, GROUP_SPAN) <= 20


async def test_one_a_second_into_a_group_never_passes_twenty_a_minute(clock: FrozenClock, rec: Recorder) -> None:
    queue: asyncio.Queue[None] = asyncio.Queue()
    rec.spawn(rec.worker(GROUP, queue, group=True))
    rec.spawn(feed(clock, queue, 75, 1))
    await run_for(clock, 250)
    times = rec.times(GROUP)
    assert len(times) == 75
    start = times[0]
    assert sum(1 for t in times if t < start + 60) <= 20
    assert_telegram_limits(rec)
    # As fast as allowed: every window of one span is full while the backlog lasts.
    assert worst_window(times, GROUP_SPAN) == 20


async def test_a_trickle_every_two_seconds_stays_within_the_group_limit(clock: FrozenClock, rec: Recorder) -> None:
    queue: asyncio.Queue[None] = asyncio.Queue()
    rec.spawn(rec.worker(GROUP, queue, group=True))
    rec.spawn(feed(clock, queue, 60, 2))
    await run_for(clock, 200)
    assert len(rec.times(GROUP)) == 60
    assert_telegram_limits(rec)


async def test_a_burst_into_one_private_chat_is_spaced_by_one_second_and_the_margin(
    clock: FrozenClock, rec: Recorder
) -> None:
    for _ in range(100):
        rec.spawn(rec.send(PRIVATE, group=False))
    await run_for(clock, 120)
    times = rec.times(PRIVATE)
    assert len(times) == 100
    assert_telegram_limits(rec)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(a + CHAT_SPAN <= b for a, b in itertools.pairwise(times))
    assert gaps == pytest.approx([CHAT_SPAN] * 99)  # and no slower than that


async def test_sixty_chats_at_once_never_pass_thirty_a_second(clock: FrozenClock, rec: Recorder) -> None:
    start = clock.monotonic()
    for chat in range(1, 61):
        rec.spawn(rec.send(chat, group=False))
    await run_for(clock, 5)
    times = rec.times()
    assert len(times) == 60
    assert_telegram_limits(rec)
    assert times.count(start) == 30
    assert times.count(start + OVERALL_SPAN) == 30


async def test_sixty_backlogged_chats_share_the_overall_window_in_turn(clock: FrozenClock, rec: Recorder) -> None:
    """Each of 60 chats wants 5 sends: the overall cap holds, and every chat progresses, none starves."""
    for chat in range(1, 61):
        queue: asyncio.Queue[None] = asyncio.Queue()
        for _ in range(5):
            queue.put_nowait(None)
        rec.spawn(rec.worker(chat, queue, group=False))
    await run_for(clock, 30)
    assert len(rec.times()) == 300
    assert_telegram_limits(rec)
    last_sends = [rec.times(chat)[-1] for chat in range(1, 61)]
    first_sends = [rec.times(chat)[0] for chat in range(1, 61)]
    assert max(first_sends) - min(first_sends) <= OVERALL_SPAN + 1e-9
    assert max(last_sends) - min(last_sends) <= OVERALL_SPAN + 1e-9


async def test_concurrent_senders_into_one_group_never_take_the_same_slot(clock: FrozenClock, rec: Recorder) -> None:
    """Alerts and command replies call the same acquire; thirty at once into one group still obey it."""
    for _ in range(30):
        rec.spawn(rec.send(GROUP, group=True))
    await run_for(clock, 130)
    assert len(rec.times(GROUP)) == 30
    assert_telegram_limits(rec)


@pytest.mark.parametrize(
    ("chat", "group", "history", "others", "horizon_s"),
    [
        (PRIVATE, False, 0, 0, 5.05),
        (PRIVATE, False, 3, 0, 10.03),
        (GROUP, True, 0, 0, 30.07),
        (GROUP, True, 18, 0, 70.03),  # two slots left in the group's minute, then the next minute's
        (PRIVATE, False, 0, 45, 3.01),  # other chats hold most of the overall window
        (GROUP, True, 5, 80, 2.53),
    ],
)
async def test_slots_within_agrees_with_what_acquire_then_grants(
    clock: FrozenClock, rec: Recorder, chat: int, group: bool, history: int, others: int, horizon_s: float
) -> None:
    for _ in range(history):
        rec.spawn(rec.send(chat, group=group))
    await run_for(clock, 25)
    for other in range(1000, 1000 + others):
        rec.spawn(rec.send(other, group=False))
    await asyncio.sleep(0)
    pacer = rec.pacer
    start = clock.monotonic()
    expected = pacer.slots_within(chat, group=group, horizon_s=horizon_s)
    planned = pacer.next_slots(chat, group=group, n=expected + 1)
    assert expected > 0
    assert pacer.slots_within(chat, group=group, horizon_s=horizon_s, at_most=2) == min(2, expected)
    for _ in range(expected + 10):
        rec.spawn(rec.send(chat, group=group))
    await run_for(clock, horizon_s)
    granted = [t for t in rec.times(chat) if t >= start]
    assert len(granted) == expected
    assert granted == planned[:expected]
    assert planned[expected] > start + horizon_s
    assert_telegram_limits(rec)


async def test_wait_s_is_the_wait_acquire_then_has(clock: FrozenClock, rec: Recorder) -> None:
    pacer = rec.pacer
    assert pacer.wait_s(PRIVATE, group=False) == 0
    await rec.send(PRIVATE, group=False)
    wait = pacer.wait_s(PRIVATE, group=False)
    assert wait == pytest.approx(CHAT_SPAN)
    before = clock.monotonic()
    rec.spawn(rec.send(PRIVATE, group=False))
    await run_for(clock, 2)
    assert rec.times(PRIVATE)[-1] - before == pytest.approx(wait)


async def test_idle_chats_are_forgotten(clock: FrozenClock, rec: Recorder) -> None:
    for chat in range(1, 101):
        await rec.send(chat, group=False)
        await rec.send(-chat, group=True)
        await clock.advance(0.1)
    assert rec.pacer.tracked_chats == 200
    await clock.advance(GROUP_SPAN + 0.1)
    await rec.send(PRIVATE, group=False)
    assert rec.pacer.tracked_chats == 1


async def test_a_chat_seen_within_its_span_is_remembered(clock: FrozenClock, rec: Recorder) -> None:
    await rec.send(PRIVATE, group=False)
    await clock.advance(30)
    await rec.send(GROUP, group=True)
    await clock.advance(31)
    await rec.send(PRIVATE + 1, group=False)  # the sweep runs here: PRIVATE is idle, GROUP's minute is not
    assert rec.pacer.tracked_chats == 2
    group_sent = rec.times(GROUP)[0]
    assert rec.pacer.next_slots(GROUP, group=True, n=20)[-1] >= group_sent + GROUP_SPAN


async def test_a_hold_delays_every_send_into_the_chat_and_no_other(clock: FrozenClock, rec: Recorder) -> None:
    start = clock.monotonic()
    rec.pacer.hold(GROUP, start + 5)
    rec.pacer.hold(GROUP, start + 2)  # a shorter hold never shortens one in force
    assert rec.pacer.held_until(GROUP) == start + 5
    assert rec.pacer.slots_within(GROUP, group=True, horizon_s=4.9) == 0
    rec.spawn(rec.send(GROUP, group=True))  # an alert
    rec.spawn(rec.send(GROUP, group=True))  # a command reply: it waits, it is not refused
    rec.spawn(rec.send(PRIVATE, group=False))
    await run_for(clock, 10)
    assert rec.times(PRIVATE) == [start]
    assert rec.times(GROUP) == [start + 5, start + 5 + CHAT_SPAN]


async def test_a_hold_that_lands_while_waiting_moves_the_send_after_it(clock: FrozenClock, rec: Recorder) -> None:
    start = clock.monotonic()
    await rec.send(PRIVATE, group=False)
    waiting = rec.spawn(rec.send(PRIVATE, group=False))
    await clock.advance(0.5)
    rec.pacer.hold(PRIVATE, start + 7)  # a 429 on the reply sent meanwhile
    await run_for(clock, 10)
    assert waiting.done()
    assert rec.times(PRIVATE) == [start, start + 7]


async def test_a_spent_platform_bucket_holds_the_chat_until_its_reset(clock: FrozenClock, rec: Recorder) -> None:
    discord = Pacer(Limits(overall=Rate(50, 1.0)), clock)
    start = clock.monotonic()
    discord.observe(7, remaining=2, reset_after_s=4.0)
    assert discord.wait_s(7, group=True) == 0
    discord.observe(7, remaining=0, reset_after_s=3.0)
    assert discord.wait_s(7, group=True) == pytest.approx(3.0)
    assert discord.wait_s(8, group=True) == 0
    task = rec.spawn(discord.acquire(7, group=True))
    await clock.advance(2.9)
    assert not task.done()
    await clock.advance(0.2)
    assert task.done()
    assert clock.monotonic() - start == pytest.approx(3.1)


async def test_a_cancelled_waiter_gives_its_slot_back(clock: FrozenClock, rec: Recorder) -> None:
    start = clock.monotonic()
    await rec.send(PRIVATE, group=False)
    doomed = rec.spawn(rec.send(PRIVATE, group=False))
    await clock.advance(0.1)
    doomed.cancel()
    await asyncio.sleep(0)
    rec.spawn(rec.send(PRIVATE, group=False))
    await run_for(clock, 3)
    assert rec.times(PRIVATE) == [start, start + CHAT_SPAN]


async def test_the_margin_is_a_constructor_argument(clock: FrozenClock) -> None:
    wide = Recorder(Pacer(TELEGRAM, clock, margin_s=0.25), clock)
    for _ in range(5):
        wide.spawn(wide.send(PRIVATE, group=False))
    await run_for(clock, 10)
    times = wide.times(PRIVATE)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([1.25] * 4)


async def test_no_limits_means_no_waiting(clock: FrozenClock) -> None:
    console = Pacer(Limits(), clock)
    for _ in range(1000):
        await console.acquire(PRIVATE, group=False)
    assert console.slots_within(PRIVATE, group=False, horizon_s=1.0, at_most=50) == 50
    assert console.tracked_chats == 0


def test_window_counts_every_send_in_its_span_with_the_margin() -> None:
    window = SlidingWindow(Rate(3, 10.0), margin_s=0.5)
    for t in (0.0, 1.0, 2.0):
        assert window.wait_s(t) == 0
        window.record(t)
    assert window.wait_s(3.0) == pytest.approx(7.5)
    assert window.next_slots(3.0, 4) == [10.5, 11.5, 12.5, 21.0]
    assert window.slots_within(3.0, 9.4) == 2
    assert window.slots_within(3.0, 9.5) == 3
    assert window.slots_within(3.0, 18.0) == 4
    with pytest.raises(ValueError, match="would break"):
        window.record(10.4)


def test_window_plans_around_a_reservation_in_the_future() -> None:
    window = SlidingWindow(Rate(2, 10.0), margin_s=0.0)
    window.record(5.0)  # reserved by an asker still waiting
    assert window.earliest(0.0) == 0.0
    window.record(0.0)
    assert window.earliest(0.0) == 10.0  # a third send before 10 would share a window with 0 and 5
    window.record(10.0)
    assert window.earliest(11.0) == 15.0  # and one before 15 a window with 5 and 10
    window.cancel(5.0)
    assert window.earliest(0.0) == 0.0  # 0 and 10 are a whole span apart: nothing is in the way
    assert window.earliest(0.0) == window.next_slots(0.0, 1)[0]


def test_window_memory_is_bounded_by_its_count() -> None:
    window = SlidingWindow(Rate(20, 60.0), margin_s=DEFAULT_MARGIN_S)
    t = 0.0
    for _ in range(10_000):
        t = window.earliest(t)
        window.expire(t)
        window.record(t)
        assert len(window) <= 20
    assert window.idle(t + GROUP_SPAN)
    assert not window.idle(t + GROUP_SPAN - 0.01)
