"""PLACEHOLDER until the pacing branch lands: sliding windows with the Pacer API the dispatcher uses."""

from __future__ import annotations

from collections import deque

from bot.platforms.delivery import Limits, Rate
from perpwatch.clock import Clock


class _Window:
    def __init__(self, rate: Rate, margin_s: float) -> None:
        self.count = rate.count
        self.period = rate.period_s + margin_s
        self.times: deque[float] = deque(maxlen=rate.count)

    def wait_s(self, now: float) -> float:
        if len(self.times) < self.count:
            return 0.0
        return max(self.times[0] + self.period - now, 0.0)

    def slots_within(self, now: float, horizon: float) -> int:
        times = list(self.times)
        slots = 0
        t = now
        while t <= now + horizon and slots < 1000:
            recent = [x for x in times if x > t - self.period]
            if len(recent) < self.count:
                times.append(t)
                slots += 1
                continue
            t = min(recent) + self.period
        return slots


class Pacer:
    def __init__(self, limits: Limits, clock: Clock, *, margin_s: float = 0.1) -> None:
        self.limits = limits
        self.clock = clock
        self.margin_s = margin_s
        self._windows: dict[tuple[str, int], _Window] = {}

    def _applicable(self, chat_key: int, group: bool) -> list[_Window]:
        out = []
        if self.limits.overall:
            out.append(self._windows.setdefault(("all", 0), _Window(self.limits.overall, self.margin_s)))
        if self.limits.per_chat:
            out.append(self._windows.setdefault(("chat", chat_key), _Window(self.limits.per_chat, self.margin_s)))
        if group and self.limits.per_group:
            out.append(self._windows.setdefault(("group", chat_key), _Window(self.limits.per_group, self.margin_s)))
        return out

    def wait_s(self, chat_key: int, *, group: bool) -> float:
        now = self.clock.monotonic()
        return max((w.wait_s(now) for w in self._applicable(chat_key, group)), default=0.0)

    def slots_within(self, chat_key: int, *, group: bool, horizon_s: float) -> int:
        now = self.clock.monotonic()
        return min((w.slots_within(now, horizon_s) for w in self._applicable(chat_key, group)), default=1000)

    async def acquire(self, chat_key: int, *, group: bool) -> None:
        while (wait := self.wait_s(chat_key, group=group)) > 0:
            await self.clock.sleep(wait)
        now = self.clock.monotonic()
        for window in self._applicable(chat_key, group):
            window.times.append(now)
