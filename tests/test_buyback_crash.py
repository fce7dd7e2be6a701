"""A real bot process killed with SIGKILL in the middle of a buyback backfill, then started again: every buy is
stored once, none lost, none counted twice, because each page's buys are committed with the source's cursor.

The Aster fake answers slowly, so the kill lands between pages of the first backfill; the restart goes on from
the stored cursor and the totals come out exactly those of the fills the fake holds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.app import PerpwatchApp
from bot.buyback_programmes import bundled, programme_from
from storage import Store
from tests.conftest import MakeSettings, eventually
from tests.fakes.buyback_sources import FakeAsterChain

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[1]
WALLET = "0xa0edbabcb48034e368de286b49f9603c7afa1b60"
FILLS = 6000
HANG_GUARD_S = 60.0


@dataclass
class SlowAster(FakeAsterChain):
    """Each answer takes a while, so a backfill of many pages is still under way when the test kills it."""

    delay_s: float = 0.15
    answered: int = 0

    async def _handle(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay_s)
        response = await super()._handle(request)
        self.answered += 1
        return response


@pytest.fixture
async def aster() -> AsyncIterator[SlowAster]:
    async with SlowAster() as fake:
        start = datetime.now(UTC) - timedelta(hours=3)
        for i in range(FILLS):  # 40 a minute over 150 minutes: an hour is past the 1,000 cap, so pages halve
            at = start + timedelta(seconds=1.5 * i)
            fake.fill(WALLET, int(at.timestamp() * 1000), f"0.{7000 + i % 100:04d}", str(10 + i % 7))
        yield fake


async def _only_our_programme(database_url: str, start: datetime) -> None:
    """The store as the operator leaves it: the bundled programmes removed (they would reach the real hosts),
    and Aster's wallet followed from three hours ago instead of from June."""
    base = next(p for p in bundled()[0] if p.id == "aster")
    async with Store(database_url) as store:
        await store.buybacks.merge_bundled(bundled()[0])
        for programme in await store.buybacks.programmes():
            await store.buybacks.remove(programme.id)
        entry: dict[str, Any] = {
            "id": "aster-recent",
            "kind": base.kind,
            "token": base.token,
            "symbol": base.symbol,
            "source": base.source,
            "params": {**base.params, "start_ms": int(start.timestamp() * 1000)},
        }
        await store.buybacks.add(programme_from(entry, origin="chat"))


def _expected() -> tuple[Decimal, Decimal]:
    tokens = sum((Decimal(10 + i % 7) for i in range(FILLS)), Decimal(0))
    usd = sum((Decimal(f"0.{7000 + i % 100:04d}") * Decimal(10 + i % 7) for i in range(FILLS)), Decimal(0))
    return tokens, usd


async def test_a_backfill_killed_between_pages_ends_with_every_buy_once(
    make_settings: MakeSettings, aster: SlowAster, tmp_path: Path
) -> None:
    settings = make_settings(watchers="buybacks", aster_chain_rpc_url=aster.url("/info"))
    await _only_our_programme(settings.database_url, datetime.now(UTC) - timedelta(hours=3, minutes=5))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "PERPWATCH_DATABASE_URL": settings.database_url,
        "PERPWATCH_WATCHERS": "buybacks",
        "PERPWATCH_CALENDAR_SOURCES": "none",
        "PERPWATCH_ASTER_CHAIN_RPC_URL": aster.url("/info"),
    }
    log_path = tmp_path / "killed.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", cwd=tmp_path, env=env, stdout=log_file, stderr=log_file
        )
        try:
            await eventually(lambda: aster.answered >= 4, timeout_s=HANG_GUARD_S, what="four pages answered")
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    async with Store(settings.database_url) as store:
        [partial] = [t for t in await store.buybacks.totals("aster-recent", datetime.now(UTC)) if t.window == "all"]
    assert 0 < partial.buys < FILLS  # killed in the middle: some pages stored, not all

    aster.delay_s = 0
    async with PerpwatchApp(settings) as app:
        store = app.store
        done: list[int] = []

        async def count() -> None:
            [total] = [t for t in await store.buybacks.totals("aster-recent", datetime.now(UTC)) if t.window == "all"]
            done.append(total.buys)

        async def caught_up() -> bool:
            await count()
            return done[-1] >= FILLS

        deadline = asyncio.get_running_loop().time() + HANG_GUARD_S
        while not await caught_up():
            assert asyncio.get_running_loop().time() < deadline, f"stuck at {done[-1]} of {FILLS} buys"
            await asyncio.sleep(0.1)
        [total] = [t for t in await store.buybacks.totals("aster-recent", datetime.now(UTC)) if t.window == "all"]
    tokens, usd = _expected()
    assert (total.buys, total.tokens, total.usd) == (FILLS, tokens, usd)
