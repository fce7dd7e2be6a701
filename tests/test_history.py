"""`/liqs` totals from the log: a window's liquidations by venue and side, summed in the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from perpwatch.clock import FrozenClock
from storage import Store
from storage.history import SideTotal
from tests.factories import liquidation

pytestmark = pytest.mark.engines

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store(database_url, clock=FrozenClock(NOW)) as s:
        yield s


async def test_window_sums_by_venue_and_side_exactly(store: Store) -> None:
    minute = timedelta(minutes=1)
    await store.outbox.accept(
        [
            liquidation(key="a", usd="1000.10", side="long", at=NOW - 5 * minute),
            liquidation(key="b", usd="2000.20", side="long", at=NOW - 10 * minute),
            liquidation(key="c", usd="0.01", side="short", at=NOW - 59 * minute),
            liquidation(key="d", venue="aster", symbol="ETHUSDT", usd="5000", side="short", at=NOW - minute),
            liquidation(key="old", usd="9999999", side="long", at=NOW - 61 * minute),  # outside the hour
        ]
    )
    report = await store.history.liquidations(since=NOW - 60 * minute, largest=2)
    assert report.totals == (
        SideTotal("aster", "short", 1, Decimal("5000")),
        SideTotal("binance", "long", 2, Decimal("3000.30")),
        SideTotal("binance", "short", 1, Decimal("0.01")),
    )
    assert report.count == 4 and report.usd == Decimal("8000.31")
    assert [e.key for e in report.largest] == ["d", "b"]


async def test_symbol_matches_the_venue_symbol_or_its_base(store: Store) -> None:
    await store.outbox.accept(
        [
            liquidation(key="binance-btc", symbol="BTCUSDT", at=NOW),
            liquidation(key="okx-btc", venue="okx", symbol="BTC-USDT-SWAP", at=NOW),
            liquidation(key="eth", symbol="ETHUSDT", at=NOW),
        ]
    )
    btc = await store.history.liquidations(since=NOW - timedelta(hours=1), symbol="btc")
    assert {e.key for e in btc.largest} == {"binance-btc", "okx-btc"}
    exact = await store.history.liquidations(since=NOW - timedelta(hours=1), symbol="ETHUSDT")
    assert [e.key for e in exact.largest] == ["eth"]
    none = await store.history.liquidations(since=NOW - timedelta(hours=1), symbol="SOL")
    assert none.totals == () and none.largest == ()
