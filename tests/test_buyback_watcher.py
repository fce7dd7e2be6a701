"""The buybacks watcher on the real store and loopback sources: a source that fails is marked so in the store
and in `/status` with its last good time, then recovers; a 429 pauses its host for the time the venue said; a
restart goes on from the stored cursor and counts no fill twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.buyback_programmes import bundled, programme_from
from perpwatch.buybacks import Programme
from perpwatch.clock import FrozenClock
from storage import Store
from tests.conftest import eventually
from tests.fakes.buyback_sources import FakeAsterChain, FakeHyperliquidInfo, rate_limited, server_error
from watchers.base import WatcherState
from watchers.buybacks import BuybackTuning, BuybackWatcher
from watchers.runtime import Runtime

pytestmark = pytest.mark.engines

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WALLET = "0xa0edbabcb48034e368de286b49f9603c7afa1b60"


def _bundled(pid: str) -> Programme:
    return next(p for p in bundled()[0] if p.id == pid)


def _aster(start: datetime) -> Programme:
    base = _bundled("aster")
    return programme_from(
        {
            "id": "aster",
            "kind": base.kind,
            "token": base.token,
            "symbol": base.symbol,
            "source": base.source,
            "params": {**base.params, "start_ms": int(start.timestamp() * 1000)},
        }
    )


@asynccontextmanager
async def watching(store: Store, clock: FrozenClock, urls: dict[str, str]) -> AsyncIterator[BuybackWatcher]:
    runtime = Runtime(clock=clock, kv=store.watchers, buybacks=store.buybacks)
    watcher = BuybackWatcher(store.buybacks, urls, BuybackTuning(poll_s=300, refresh_s=60), runtime.context("buybacks"))
    task = asyncio.create_task(watcher.run(lambda events: asyncio.sleep(0)))
    try:
        yield watcher
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _state(watcher: BuybackWatcher) -> WatcherState:
    """Read anew each time (mypy would keep the first assert's narrowing)."""
    return watcher.health.state


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store(database_url, clock=FrozenClock(T0)) as s:
        yield s


async def test_a_failing_source_is_marked_with_its_last_good_time_and_recovers(store: Store) -> None:
    clock = FrozenClock(T0)
    await store.buybacks.merge_bundled([_bundled("hyperliquid-af")])
    async with FakeHyperliquidInfo(faults=[server_error()]) as info:
        async with watching(store, clock, {"hyperliquid_info_url": info.url("/info")}) as watcher:
            await eventually(
                lambda: "hyperliquid-af" in watcher.pollers and watcher.pollers["hyperliquid-af"].health.errors
            )
            health = await store.buybacks.health("hyperliquid-af")
            assert (
                health.failing_since == T0 and health.last_good_at is None and "HTTP 500" in (health.last_error or "")
            )
            assert _state(watcher) is WatcherState.DOWN
            assert watcher.health.extra["programme hyperliquid-af"].startswith("failing (never good yet): ")

            fund = watcher.pollers["hyperliquid-af"]
            assert await fund.poll_once()
            health = await store.buybacks.health("hyperliquid-af")
            assert health.failing_since is None and health.last_good_at == T0
            assert _state(watcher) is WatcherState.UP
            info.total = str(Decimal(info.total) + 10)
            info.faults.append(server_error())
            assert not await fund.poll_once()  # a missed poll...
            assert watcher.health.extra["programme hyperliquid-af"].startswith(
                "failing (last good 2026-12-02 12:00 UTC)"
            )
            assert await fund.poll_once()  # ...loses nothing: the next snapshot's rise holds it
            [all_time] = [t for t in await store.buybacks.totals("hyperliquid-af", clock.now()) if t.window == "all"]
            assert all_time.tokens == Decimal(10) and all_time.buys == 1


async def test_a_429_pauses_the_host_for_what_the_venue_said(store: Store) -> None:
    clock = FrozenClock(T0)
    await store.buybacks.merge_bundled([_bundled("hyperliquid-af")])
    async with FakeHyperliquidInfo(faults=[rate_limited("45")]) as info:
        async with watching(store, clock, {"hyperliquid_info_url": info.url("/info")}) as watcher:
            await eventually(
                lambda: "hyperliquid-af" in watcher.pollers and watcher.pollers["hyperliquid-af"].health.errors
            )
            budget = watcher.context.budgets.for_url(info.url("/info"))
            assert 44 <= budget.paused_for_s <= 45
            assert "paused 45s" in watcher.health.extra[f"budget {budget.host}"]


async def test_a_restart_goes_on_from_the_stored_cursor_and_counts_no_fill_twice(store: Store) -> None:
    clock = FrozenClock(T0)
    await store.buybacks.merge_bundled([_aster(T0 - timedelta(hours=3))])
    async with FakeAsterChain() as aster:
        for minutes, qty in ((170, "100"), (90, "200"), (30, "300")):
            at = int((T0 - timedelta(minutes=minutes)).timestamp() * 1000)
            aster.fill(WALLET, at, "0.70", qty)
        urls = {"aster_chain_rpc_url": aster.url("/info")}
        async with watching(store, clock, urls) as watcher:
            await eventually(lambda: "aster" in watcher.pollers and watcher.pollers["aster"].health.last_frame_at)
            assert watcher.pollers["aster"].new_buys == 3
        asked = len(aster.seen)
        aster.fill(WALLET, int((T0 + timedelta(minutes=5)).timestamp() * 1000), "0.80", "50")
        await clock.advance(600)
        async with watching(store, clock, urls) as again:  # the restart
            await eventually(lambda: "aster" in again.pollers and again.pollers["aster"].health.last_frame_at)
            assert again.pollers["aster"].new_buys == 1
        first_window = aster.windows()[asked]
        assert first_window[0] >= int((T0 - timedelta(minutes=30)).timestamp() * 1000)  # from the cursor, not the start
        [all_time] = [t for t in await store.buybacks.totals("aster", clock.now()) if t.window == "all"]
        assert (all_time.tokens, all_time.usd, all_time.buys) == (Decimal(650), Decimal("460.00"), 4)
