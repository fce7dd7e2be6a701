"""Every buyback programme in the store, each read by its kind's source on its own poller.

Programmes are data (`perpwatch.buybacks`): this watcher reads the list from the store and keeps one
`RestPoller` per programme, so a programme an operator adds from chat is followed within a minute and one
removed stops, without a restart. A poll follows its source's pages (`Fetched.more`) and stores each page's
buys with its cursor in one transaction, so a crash between pages loses nothing and a replayed page counts
nothing. A source that fails is marked so in the store (its totals say "incomplete") and in `/status`,
with its last good time; its cursor stays where the last good page left it.

Nothing here makes an alert: the reports (`bot/buybacks.py`) read the stored totals at each chat's hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from perpwatch.buybacks import BuybackLedger, BuybackSource, Fetched, Programme, ProgrammeKind, SourceContext
from perpwatch.events import Topic, Venue
from watchers.base import EventSink, Watcher, WatcherState, describe
from watchers.buyback_sources import SOURCES
from watchers.poller import PollTuning, RestPoller
from watchers.runtime import WatcherContext

logger = logging.getLogger(__name__)

NAME = "buybacks"

MAX_PAGES_PER_POLL = 50
"""Pages one poll follows before yielding to the schedule: a source far behind (a year of EVM blocks) catches
up over several polls instead of holding its host's budget in one."""

DAILY_SOURCE_MIN_S = 3600.0
"""DefiLlama publishes one figure a day: reading it more often than hourly costs requests and shows nothing."""

COVERS = frozenset({(Topic.BUYBACK, v) for v in (Venue.HYPERLIQUID, Venue.ASTER, Venue.LIGHTER, Venue.EDGEX)})
"""The venues whose programmes ship as defaults; an operator's own programme may be about any token."""


class BuybackSettings(Protocol):
    @property
    def buyback_poll_s(self) -> float: ...

    @property
    def buyback_refresh_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class BuybackTuning:
    poll_s: float = 300.0
    refresh_s: float = 60.0
    """How often the programme list is read again (an operator's add or remove takes effect within it)."""

    @classmethod
    def from_settings(cls, settings: BuybackSettings) -> BuybackTuning:
        return cls(poll_s=settings.buyback_poll_s, refresh_s=settings.buyback_refresh_s)

    def interval_for(self, programme: Programme) -> float:
        if programme.kind == "defillama_holders_revenue":
            return max(self.poll_s, DAILY_SOURCE_MIN_S)
        return self.poll_s


class ProgrammePoller(RestPoller):
    """One programme's source on the shared poller base: budget, schedule, 429 pauses, health."""

    def __init__(
        self,
        programme: Programme,
        source: BuybackSource,
        ledger: BuybackLedger,
        urls: Mapping[str, str],
        tuning: PollTuning,
        context: WatcherContext,
    ) -> None:
        super().__init__(
            f"{NAME}:{programme.id}",
            tuning,
            budgets=context.budgets,
            session=context.session,
            clock=context.clock,
        )
        self.programme = programme
        self.source = source
        self.ledger = ledger
        self.urls = dict(urls)
        self.new_buys = 0
        self.on_polled: Callable[[], None] | None = None
        """Called after each poll, so `/status` shows the programme's state as of its last poll."""

    async def poll_once(self) -> bool:
        try:
            return await super().poll_once()
        finally:
            if self.on_polled is not None:
                self.on_polled()

    async def poll(self) -> None:
        for _ in range(MAX_PAGES_PER_POLL):
            if not (await self.step()).more:
                return

    async def step(self) -> Fetched:
        """One page: the source's step from the stored cursor, its buys stored with the new cursor in one
        transaction (a failure marks the source failing in the store and raises). `perpwatch backfill` runs
        these one by one to show its progress."""
        now = self.clock.now()
        try:
            step = SourceContext(
                programme=self.programme,
                cursor=await self.ledger.cursor(self.programme.id),
                now=now,
                get_json=self.get_json,
                last_snapshot=await self.ledger.last_snapshot(self.programme.id),
                urls=self.urls,
            )
            fetched = await self.source.fetch(step)
            self.new_buys += await self.ledger.record(self.programme.id, fetched, at=now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):  # the store may be what failed: the poller's health says so
                await self.ledger.failed(self.programme.id, describe(exc), at=now)
            raise
        return fetched


class BuybackWatcher(Watcher):
    """Runs a `ProgrammePoller` for every programme the store lists; `/status` shows each one's state."""

    def __init__(
        self,
        ledger: BuybackLedger,
        urls: Mapping[str, str],
        tuning: BuybackTuning,
        context: WatcherContext,
        *,
        sources: Mapping[ProgrammeKind, BuybackSource] = SOURCES,
    ) -> None:
        super().__init__(context.name, COVERS, clock=context.clock)
        self.ledger = ledger
        self.urls = dict(urls)
        self.tuning = tuning
        self.context = context
        self.sources = sources
        self.pollers: dict[str, ProgrammePoller] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def refresh_soon(self) -> None:
        """Read the programme list now (a chat added or removed one)."""
        self._wake.set()

    async def run(self, sink: EventSink) -> None:
        del sink  # buys go to the ledger; the reports make the alerts
        try:
            while True:
                try:
                    await self._sync(await self.ledger.programmes())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is unavailable for now: keep the pollers we have
                    self.health.errors += 1
                    self.health.last_error = describe(exc)
                self._report()
                self._wake.clear()
                await self.clock.wait(self._wake, self.tuning.refresh_s)
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._tasks.clear()

    async def _sync(self, programmes: list[Programme]) -> None:
        wanted = {p.id: p for p in programmes}
        for pid in [pid for pid in self._tasks if pid not in wanted or wanted[pid] != self.pollers[pid].programme]:
            self._tasks.pop(pid).cancel()
            self.pollers.pop(pid, None)
            self.health.extra.pop(f"programme {pid}", None)
        for pid, programme in wanted.items():
            if pid in self._tasks:
                continue
            source = self.sources.get(programme.kind)
            if source is None:  # a programme of a kind this release does not know: said, not guessed
                self.health.extra[f"programme {pid}"] = f"unknown kind {programme.kind}"
                continue
            tuning = PollTuning(interval_s=self.tuning.interval_for(programme), retry_initial_s=10.0)
            poller = ProgrammePoller(programme, source, self.ledger, self.urls, tuning, self.context)
            poller.on_polled = self._report
            self.pollers[pid] = poller
            self._tasks[pid] = asyncio.create_task(poller.run(), name=f"{NAME}:{pid}")

    def _report(self) -> None:
        """Each programme's state for `/status`; the watcher is degraded while any source fails."""
        failing = 0
        for pid, poller in self.pollers.items():
            h = poller.health
            if h.state is WatcherState.DOWN:
                failing += 1
                good = f"last good {h.last_frame_at:%Y-%m-%d %H:%M} UTC" if h.last_frame_at else "never good yet"
                self.health.extra[f"programme {pid}"] = f"failing ({good}): {h.last_error}"
            elif h.last_frame_at is not None:
                self.health.extra[f"programme {pid}"] = (
                    f"ok, last good {h.last_frame_at:%Y-%m-%d %H:%M} UTC, {poller.new_buys} new buys since start"
                )
            else:
                self.health.extra[f"programme {pid}"] = "starting"
            for key, value in h.extra.items():
                self.health.extra[key] = value
        if not self.pollers:
            self.health.state = WatcherState.UP if self.health.last_error is None else WatcherState.DOWN
        elif failing == len(self.pollers):
            self.health.state = WatcherState.DOWN
        elif failing:
            self.health.state = WatcherState.DEGRADED
        elif self.health.state is not WatcherState.UP:
            self.health.mark_up()
