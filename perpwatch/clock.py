"""The one clock: wall time, monotonic time and sleeping, injected everywhere instead of called directly.

Storage stamps, the pipeline, the dispatcher's schedule and pacing, watchers' liveness and commands all ask
a `Clock`, so a test moves a `FrozenClock` and the whole bot sees the same instant, instead of sleeping
and asserting on elapsed wall time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta


class Clock:
    """The real clock. `now()` is aware UTC; `monotonic()` never steps back; `sleep` waits for real."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        """Until `event` is set (True) or `timeout_s` passed on this clock (False)."""
        if event.is_set():
            return True
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await event.wait()
        except TimeoutError:
            return False
        return True


class FrozenClock(Clock):
    """Time moves only when a test says so: `advance(seconds)` wakes every sleeper whose time has come.

    Sleepers wake in deadline order, each getting a turn of the loop, so work that a wake-up starts (a
    send, a commit) runs before the next sleeper's deadline is reached.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = (start or datetime(2026, 1, 1, tzinfo=UTC)).astimezone(UTC)
        self._mono = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    @property
    def sleepers(self) -> int:
        """How many tasks wait on this clock now: a test advances once the bot settled into waiting."""
        return sum(1 for *_, f in self._sleepers if not f.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._order), future))
        await future

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(timeout_s))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                task.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)
        return event.is_set()

    def set_wall(self, moment: datetime) -> None:
        """Step the wall clock as NTP or an operator would; monotonic time and sleepers are not affected."""
        self._wall = moment.astimezone(UTC)

    async def advance(self, seconds: float, *, settle: int = 5) -> None:
        """Move time forward, waking sleepers in deadline order, and let the woken tasks run."""
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._step_to(deadline)
            if not future.done():
                future.set_result(None)
            for _ in range(settle):
                await asyncio.sleep(0)
        self._step_to(target)
        for _ in range(settle):
            await asyncio.sleep(0)

    def _step_to(self, mono: float) -> None:
        if mono > self._mono:
            self._wall += timedelta(seconds=mono - self._mono)
            self._mono = mono


SYSTEM_CLOCK = Clock()
