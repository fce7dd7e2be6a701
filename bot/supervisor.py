"""Runs the watchers as tasks, feeds them the pipeline's sink, and pauses or resumes them for operators.

A watcher that crashes is restarted instead of taking the bot down: its own loop already recovers from
network faults, so a crash here is a bug worth one log line with a traceback, not an outage. A bug that
crashes it at once on every start must not spin, so restarts back off: a half-jittered delay that doubles
from `restart_initial_s` up to `restart_max_s`, back to the first step once a run stayed up
`stable_after_s`. Every wait is on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence

from perpwatch.backoff import half_jitter
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Topic, Venue
from storage import Store
from watchers.base import EventSink, Watcher, WatcherHealth, WatcherState

log = logging.getLogger(__name__)

UNSUPPORTED: dict[str, str] = {
    "edgex": "edgeX publishes no public liquidation feed (only private account events); nothing is guessed.",
}
"""Venues traders ask about that cannot be served honestly; `/status` says so instead of showing nothing."""


class Supervisor:
    def __init__(
        self,
        watchers: Sequence[Watcher],
        sink: EventSink,
        store: Store,
        *,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 300.0,
        stable_after_s: float = 600.0,
        clock: Clock = SYSTEM_CLOCK,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.watchers = {w.name: w for w in watchers}
        self.sink = sink
        self.store = store
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.stable_after_s = stable_after_s
        self.clock = clock
        self._rand = rand
        self.crashes: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        paused = await self.store.watchers.paused()
        for name, watcher in self.watchers.items():
            if name in paused:
                watcher.health.state = WatcherState.PAUSED
                log.info("watcher paused by operator, not starting watcher=%s", name)
            else:
                self._spawn(watcher)

    def _spawn(self, watcher: Watcher) -> None:
        self._tasks[watcher.name] = asyncio.create_task(self._keep_running(watcher), name=f"watcher:{watcher.name}")

    def restart_delay_s(self, attempt: int) -> float:
        """The wait before restart number `attempt` (0 = first since the watcher last ran stably)."""
        ceiling = min(self.restart_max_s, self.restart_initial_s * (1 << min(max(attempt, 0), 32)))
        return half_jitter(ceiling, self._rand)

    async def _keep_running(self, watcher: Watcher) -> None:
        attempt = 0
        while True:
            started = self.clock.monotonic()
            try:
                await watcher.run(self.sink)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.clock.monotonic() - started >= self.stable_after_s:
                    attempt = 0
                delay_s = self.restart_delay_s(attempt)
                attempt += 1
                self.crashes[watcher.name] = self.crashes.get(watcher.name, 0) + 1
                watcher.health.mark_down(f"crashed: {type(exc).__name__}: {exc}")
                watcher.health.extra["crashes"] = str(self.crashes[watcher.name])
                log.exception(
                    "watcher crashed, restarting watcher=%s attempt=%d delay_s=%.2f", watcher.name, attempt, delay_s
                )
                await self.clock.sleep(delay_s)

    async def pause(self, name: str) -> bool:
        """Stop a watcher and remember it across restarts. Returns False if it was already paused."""
        watcher = self.watchers[name]
        await self.store.watchers.set_paused(name, True)
        task = self._tasks.pop(name, None)
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        watcher.health.state = WatcherState.PAUSED
        watcher.health.connected_since = None
        return True

    async def resume(self, name: str) -> bool:
        watcher = self.watchers[name]
        await self.store.watchers.set_paused(name, False)
        if name in self._tasks:
            return False
        watcher.health.state = WatcherState.STARTING
        self._spawn(watcher)
        return True

    def covers(self, topic: Topic, venue: Venue | None) -> bool:
        """Whether an enabled watcher (paused or not) produces this topic, on this venue if one is given.
        Cascades are made by the pipeline from liquidations, so a venue's liquidations cover its cascades."""
        if topic is Topic.CASCADE:
            topic = Topic.LIQUIDATION
        return any(t == topic and (venue is None or v == venue) for w in self.watchers.values() for t, v in w.covers)

    def nudge(self, name: str) -> bool:
        """Ask a watcher to reread what it follows now (a chat added a programme); False when it cannot."""
        refresh = getattr(self.watchers.get(name), "refresh_soon", None)
        if refresh is None:
            return False
        refresh()
        return True

    def health(self) -> list[WatcherHealth]:
        return [w.health for w in self.watchers.values()]

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
