"""Pacing: never send faster than a platform's published flood limits, counted exactly, with a margin.

A leaky bucket lets its burst ride on top of its rate, so a steady flow into a group passes the group's
per-minute limit and a burst passes the per-second cap. Here every limit is a sliding-window log: at most
`count` sends start in any window of `period_s + margin_s` seconds, checked against the send times
themselves. A send reserves its slot in every window that applies (the chat's, the group's, the
platform's overall one) at the moment it asks, so concurrent askers are served in the order they asked,
none can take a slot another holds, and an asker's wait is known up front instead of decided by whichever
task the event loop happens to wake first.

The margin is one absolute time for every window because what it covers is absolute: the spread between
two sends of the gap from our reservation to the platform's stamp (client queueing, connection reuse, the
server's own scheduling). A tenth of a second is far above that spread on a healthy link, and its cost is
proportional to margin over period: it lowers the per-chat and per-second rates by about a tenth and the
per-minute group rate by nothing one would notice. A margin smaller than the jitter draws 429s under a
strict window; a larger one only slows the busiest chats.

Discord. discord.py's HTTP client (`discord/http.py`) already honours the per-route buckets that its
responses announce: it learns each route's bucket from `X-RateLimit-Bucket`, keys it by the route's major
parameters (the channel id for message routes), updates `remaining` and the reset from
`X-RateLimit-Remaining` and `-Reset-After` (or `-Reset`) after every response, and when a bucket is spent
it sleeps until the reset before letting the next request on it go; a 429 (with `Via`) is slept off and
retried up to five times, and one whose body says `global` pauses every request. We rely on that for the
buckets. What it does not do is pace ahead of the global cap (it only reacts to a global 429), and its
waiting happens inside `send`, where the dispatcher cannot see it. So this pacer adds the overall window
(Discord publishes a global cap of requests per second per bot, and no per-channel figure, so Discord is
paced on the global cap only, unless its `Limits` say more), and `Pacer.observe`, through which the
platform reports a bucket's `remaining` and reset after a send: a spent bucket holds that chat here, so the
dispatcher's planning (`slots_within`) sees it and merges instead of queueing sends that would only sleep
inside the library. The platform can read those headers without touching discord.py's internals by
passing `http_trace=aiohttp.TraceConfig()` to `discord.Client` and listening to `on_request_end`.

Holds live here too (`Pacer.hold`): a 429's `retry_after` holds the chat for alerts and command replies
alike, since both call the same `acquire`; a reply is never refused by a hold, it waits. Persisting a hold
across a restart is the dispatcher's job (the outbox stores it); this module keeps only what the running
process needs, on the injected clock's monotonic time.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Iterable

from bot.platforms.delivery import Limits, Rate
from perpwatch.clock import Clock

DEFAULT_MARGIN_S = 0.1
"""Added to every window's period; see the module docstring for why one absolute margin and why this size."""


def _wait_until(now: float, deadline: float) -> float:
    """The least wait `w` with `now + w >= deadline` in float arithmetic.

    A clock that wakes a sleeper at `now + w` (as `FrozenClock` does) must land on or after the deadline,
    never one rounding step before it, or the re-check would find a sliver of time left and sleep again.
    """
    if deadline <= now:
        return 0.0
    wait = deadline - now
    while now + wait < deadline:
        wait = math.nextafter(wait, math.inf)
    return wait


class SlidingWindow:
    """At most `rate.count` sends start in any half-open window of `rate.period_s + margin_s` seconds.

    A log of send times, kept sorted; a time may be reserved in the future (an asker that will send once
    its wait is over), so askers that come later plan around it. Times are monotonic seconds and the
    `now` passed to `expire` never decreases. Memory: at most `rate.count` past times once `expire` ran,
    plus the reservations of askers still waiting. The log is a tuple, replaced on each change: a tuple of
    floats is one object the cyclic collector stops looking at, where a list was a second object per
    window to walk on every full pass (a window per chat sent to recently), and a copy
    for planning shares it instead of copying it.
    """

    __slots__ = ("_times", "rate", "span_s")

    def __init__(self, rate: Rate, *, margin_s: float) -> None:
        if rate.count < 1 or rate.period_s <= 0:
            raise ValueError(f"a rate needs a positive count and period, got {rate}")
        if margin_s < 0:
            raise ValueError(f"margin_s must not be negative, got {margin_s}")
        self.rate = rate
        self.span_s = rate.period_s + margin_s
        self._times: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self._times)

    def copy(self) -> SlidingWindow:
        clone = SlidingWindow.__new__(SlidingWindow)
        clone.rate, clone.span_s, clone._times = self.rate, self.span_s, self._times
        return clone

    def earliest(self, at: float) -> float:
        """The first instant at or after `at` at which one more send keeps the window's promise.

        Inserting `t` breaks it only if some `count` consecutive logged sends, together with `t`, would fit
        in less than one span: for a block `times[i..j]` that spans less than one span, that is
        `times[j] - span < t < times[i] + span`. Those forbidden intervals move on at both ends as `i`
        grows, so one pass finds the first gap.
        """
        times, count, span = self._times, self.rate.count, self.span_s
        t = at
        for i in range(len(times) - count + 1):
            first, last = times[i], times[i + count - 1]
            if last - first < span and last - span < t < first + span:
                t = first + span
        return t

    def wait_s(self, now: float) -> float:
        """Seconds until a send may start; 0 when one may start now."""
        return _wait_until(now, self.earliest(now))

    def record(self, at: float) -> None:
        """Log a send (or reserve one) starting at `at`. A time the window does not allow is a bug."""
        if self.earliest(at) != at:
            raise ValueError(f"a send at {at} would break {self.rate.count} per {self.span_s}s")
        times = self._times
        i = bisect.bisect_right(times, at)
        self._times = (*times[:i], at, *times[i:])

    def cancel(self, at: float) -> None:
        """Forget a reservation whose send never happened (its asker was cancelled or re-planned)."""
        times = self._times
        i = bisect.bisect_left(times, at)
        if i < len(times) and times[i] == at:
            self._times = times[:i] + times[i + 1 :]

    def expire(self, now: float) -> None:
        """Drop sends that can no longer constrain a send at or after `now`."""
        times = self._times
        cut = 0
        while cut < len(times) and times[cut] + self.span_s <= now:
            cut += 1
        if cut:
            self._times = times[cut:]

    def idle(self, now: float) -> bool:
        """True when the window constrains nothing from `now` on, so forgetting it changes nothing."""
        return not self._times or self._times[-1] + self.span_s <= now

    def next_slots(self, now: float, n: int) -> list[float]:
        """The start times of the next `n` sends if each went as early as the window allows."""
        plan = self.copy()
        slots: list[float] = []
        t = now
        for _ in range(n):
            t = plan.earliest(t)
            plan.record(t)
            slots.append(t)
        return slots

    def slots_within(self, now: float, horizon_s: float, *, at_most: int | None = None) -> int:
        """How many sends could start in `[now, now + horizon_s]`, given what was sent or reserved."""
        return _count_slots([self.copy()], now, now + horizon_s, at_most)


def _earliest(windows: Iterable[SlidingWindow], at: float) -> float:
    """The first instant at or after `at` that every window allows (each window's answer only moves on)."""
    group = tuple(windows)
    t = at
    while True:
        moved = max((w.earliest(t) for w in group), default=t)
        if moved == t:
            return t
        t = moved


def _count_slots(plan: list[SlidingWindow], start: float, end: float, at_most: int | None) -> int:
    """Greedy sends into private copies of the windows until one would start after `end`."""
    limit = sys.maxsize if at_most is None else at_most
    if not plan:
        return limit if start <= end else 0
    count = 0
    t = start
    while count < limit:
        t = _earliest(plan, t)
        if t > end:
            break
        for w in plan:
            w.record(t)
        count += 1
    return count


class Pacer:
    """One platform's flood limits: an overall window, and per-chat and per-group windows made on demand.

    `chat_key` is the dispatcher's id for a chat; `group` says whether the per-group limit applies.
    The dispatcher must call `acquire` immediately before each send (alerts, edits and command replies
    alike) and send as soon as it returns; and it must report 429s with `hold` (and Discord's bucket
    headers with `observe`). Windows of chats idle longer than their span are forgotten, which changes
    nothing, since an idle window constrains nothing.
    """

    def __init__(self, limits: Limits, clock: Clock, *, margin_s: float = DEFAULT_MARGIN_S) -> None:
        self.limits = limits
        self.margin_s = margin_s
        self._clock = clock
        self._overall = None if limits.overall is None else SlidingWindow(limits.overall, margin_s=margin_s)
        self._per_chat: dict[int, SlidingWindow] = {}
        self._per_group: dict[int, SlidingWindow] = {}
        self._held: dict[int, float] = {}
        rates = (r for r in (limits.per_chat, limits.per_group, limits.overall) if r is not None)
        self._sweep_every_s = max((r.period_s + margin_s for r in rates), default=0.0)
        self._next_sweep = -math.inf

    @property
    def tracked_chats(self) -> int:
        """How many chats this pacer remembers (windows or holds); idle ones are dropped."""
        return len(self._per_chat.keys() | self._per_group.keys() | self._held.keys())

    def held_until(self, chat_key: int) -> float | None:
        """The monotonic instant a hold on the chat ends, if one is in force."""
        until = self._held.get(chat_key)
        return until if until is not None and until > self._clock.monotonic() else None

    async def acquire(self, chat_key: int, *, group: bool) -> None:
        """Wait until this chat may send, then return; the send is already counted in every window.

        The slot is reserved on entry (in the order callers arrive), so the wait is one sleep. A hold that
        lands during the wait (a 429, a spent Discord bucket) gives the slot back and plans again after it.
        Cancelled while waiting, the slot is given back.
        """
        while True:
            now = self._clock.monotonic()
            self._sweep(now)
            windows = self._windows(chat_key, group=group)
            for w in windows:
                w.expire(now)
            start = max(now, self._held.get(chat_key, -math.inf))
            slot = _earliest(windows, start)
            for w in windows:
                w.record(slot)
            try:
                wait = _wait_until(now, slot)
                if wait > 0:
                    await self._clock.sleep(wait)
            except BaseException:
                for w in windows:
                    w.cancel(slot)
                raise
            if self._held.get(chat_key, -math.inf) <= slot:
                return
            for w in windows:
                w.cancel(slot)

    def wait_s(self, chat_key: int, *, group: bool) -> float:
        """How long an `acquire` made now would wait, after the slots already taken or reserved."""
        now = self._clock.monotonic()
        start = max(now, self._held.get(chat_key, -math.inf))
        return _wait_until(now, _earliest(self._plan(chat_key, group=group), start))

    def slots_within(self, chat_key: int, *, group: bool, horizon_s: float, at_most: int | None = None) -> int:
        """How many sends this chat could start within the next `horizon_s`, as `acquire` would grant them.

        Every window that applies is counted together, the overall one with the slots other chats have
        already taken or reserved, so a shared window is not promised twice; sends other chats ask for
        later are not foreseen. `at_most` caps the count (the dispatcher's backlog size is enough to decide
        between single alerts and a merge); without limits and without a cap it is `sys.maxsize`.
        """
        now = self._clock.monotonic()
        start = max(now, self._held.get(chat_key, -math.inf))
        return _count_slots(self._plan(chat_key, group=group), start, now + horizon_s, at_most)

    def next_slots(self, chat_key: int, *, group: bool, n: int) -> list[float]:
        """Monotonic start times of this chat's next `n` sends if nothing else asked meanwhile."""
        plan = self._plan(chat_key, group=group)
        t = max(self._clock.monotonic(), self._held.get(chat_key, -math.inf))
        slots: list[float] = []
        for _ in range(n):
            t = _earliest(plan, t)
            for w in plan:
                w.record(t)
            slots.append(t)
        return slots

    def hold(self, chat_key: int, until_monotonic: float) -> None:
        """No send into the chat starts before `until_monotonic` (a 429's retry-after). Holds only extend."""
        self._held[chat_key] = max(until_monotonic, self._held.get(chat_key, -math.inf))

    def observe(self, chat_key: int, *, remaining: int, reset_after_s: float) -> None:
        """A platform's own bucket for the chat, as its response announced: spent means hold until reset.

        The reset is counted from when the answer reached us, which is after the platform computed it, so
        it needs no margin. While some remain, the platform's client and our windows suffice.
        """
        if remaining <= 0:
            self.hold(chat_key, self._clock.monotonic() + max(reset_after_s, 0.0))

    def _windows(self, chat_key: int, *, group: bool) -> list[SlidingWindow]:
        windows: list[SlidingWindow] = []
        for table, rate in ((self._per_chat, self.limits.per_chat), (self._per_group, self.limits.per_group)):
            if rate is None or (table is self._per_group and not group):
                continue
            window = table.get(chat_key)
            if window is None:
                window = table[chat_key] = SlidingWindow(rate, margin_s=self.margin_s)
            windows.append(window)
        if self._overall is not None:
            windows.append(self._overall)
        return windows

    def _plan(self, chat_key: int, *, group: bool) -> list[SlidingWindow]:
        """Private copies of the chat's windows (fresh ones where none is kept), to simulate sends in."""
        plan: list[SlidingWindow] = []
        for table, rate in ((self._per_chat, self.limits.per_chat), (self._per_group, self.limits.per_group)):
            if rate is None or (table is self._per_group and not group):
                continue
            window = table.get(chat_key)
            plan.append(window.copy() if window is not None else SlidingWindow(rate, margin_s=self.margin_s))
        if self._overall is not None:
            plan.append(self._overall.copy())
        return plan

    def _sweep(self, now: float) -> None:
        """Forget idle windows and ended holds, at most once per longest span, so memory follows activity."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_every_s
        for table in (self._per_chat, self._per_group):
            for key in [k for k, w in table.items() if w.idle(now)]:
                del table[key]
        for key in [k for k, until in self._held.items() if until <= now]:
            del self._held[key]
        if self._overall is not None:
            self._overall.expire(now)
