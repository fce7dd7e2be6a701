"""A venue's mark price for calendar reminders (watchers/prices.py `HyperliquidMarks`): Hyperliquid's
`metaAndAssetCtxs` read on a loopback `/info` speaking the documented shape (the real sample's items), used
first for a token keyed by the CoinGecko id its perp trades and named by that perp's coin, never for a ticker
alone; CoinGecko's price when there is no mark or the read fails; the host's budget counts weight 20 and a
429 pauses it; one read serves every token for a minute; the reminder says which source its price is from."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.families import render_event
from perpwatch.clock import FrozenClock
from perpwatch.events import CalendarReminderBody
from tests.fakes.calendar_sources import CalendarSources, coingecko_market
from tests.fakes.rest import FakeRest
from tests.test_calendar_reminders import EVENT_AT, T0, at, chat, entry, running, send
from watchers.poller import BudgetRegistry
from watchers.prices import (
    HYPERLIQUID_PER_MIN,
    META_AND_ASSET_CTXS_WEIGHT,
    HyperliquidMarks,
    PriceSource,
    parse_marks,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "payloads" / "hyperliquid_metaAndAssetCtxs_docs.json"


def _sample() -> Any:
    return json.loads(SAMPLE.read_text(encoding="utf-8"))


def meta_and_asset_ctxs(marks: dict[str, str], *, delisted: tuple[str, ...] = ()) -> Any:
    """The documented `[meta, ctxs]`, its items shaped as the sample's, one perp per coin of `marks`."""
    meta, ctxs = _sample()
    universe = [dict(meta["universe"][0], name=coin) for coin in marks]
    for asset in universe:
        if asset["name"] in delisted:
            asset["isDelisted"] = True
    return [dict(meta, universe=universe), [dict(copy.deepcopy(ctxs[0]), markPx=px) for px in marks.values()]]


class Info:
    def __init__(self, marks: dict[str, str]) -> None:
        self.marks = marks
        self.asked: list[Any] = []

    def __call__(self, body: Any) -> Any:
        self.asked.append(body)
        assert body == {"type": "metaAndAssetCtxs"}, body
        return meta_and_asset_ctxs(self.marks, delisted=("OLD",))


Venues = tuple[FakeRest, FakeRest, Info, FrozenClock]
"""CoinGecko, Hyperliquid (hosts of their own: each has its budget), what `/info` answers, the clock."""


@pytest.fixture
async def venues() -> AsyncIterator[Venues]:
    clock = FrozenClock(T0)
    info = Info({"BTC": "97000.5", "HYPE": "31.2", "ASTER": "1.0425", "EDGE": "0.61", "OLD": "2"})
    async with CalendarSources(clock) as gecko, CalendarSources(clock) as hl:
        gecko.serve("/coins/markets", [coingecko_market("hyperliquid", "30.5", "330000000", "1000000000")])
        hl.answer_posts("/info", info)
        yield gecko, hl, info, clock


def _prices(venues: Venues, clock: FrozenClock) -> tuple[PriceSource, HyperliquidMarks]:
    gecko, hl, _info, _clock = venues
    budgets = BudgetRegistry(clock=clock)
    marks = HyperliquidMarks(hl.url("/info"), budgets=budgets, clock=clock)
    return PriceSource(gecko.url("/"), budgets=budgets, clock=clock, marks=marks), marks


def test_the_real_sample_gives_each_perps_mark_and_leaves_out_what_has_none() -> None:
    assert parse_marks(_sample()) == {"BTC": Decimal("14.3161"), "ETH": Decimal("6.0436"), "HPOS": Decimal("8.4542")}
    body = meta_and_asset_ctxs({"A": "1.5", "B": "0", "C": "nope", "OLD": "2"}, delisted=("OLD",))
    assert parse_marks(body) == {"A": Decimal("1.5")}
    assert parse_marks({"universe": []}) == {} and parse_marks([{}, None]) == {}


async def test_the_mark_comes_first_with_coingeckos_supply_and_one_read_serves_a_minute(
    venues: Venues,
) -> None:
    _gecko, _hl, info, clock = venues
    prices, marks = _prices(venues, clock)
    market = await prices.market("hyperliquid", "HYPE")
    assert market is not None and market.price_usd == Decimal("31.2") and market.source == "Hyperliquid mark"
    assert market.circulating_supply == Decimal("330000000")  # the supply is CoinGecko's either way
    aster = await prices.market("aster-2", "ASTER")  # CoinGecko has no ASTER here: the mark alone
    assert aster is not None and aster.price_usd == Decimal("1.0425") and aster.circulating_supply is None
    assert len(info.asked) == 1  # one read for every token
    together = await asyncio.gather(*(marks.mark("hyperliquid", "HYPE") for _ in range(3)))
    assert together == [Decimal("31.2")] * 3 and len(info.asked) == 1
    assert (marks.budget.limit, marks.budget.used) == (HYPERLIQUID_PER_MIN, META_AND_ASSET_CTXS_WEIGHT)
    await clock.advance(61)
    info.marks["HYPE"] = "32"
    together = await asyncio.gather(*(prices.price_usd("hyperliquid", "HYPE") for _ in range(3)))
    assert together == [Decimal("32")] * 3
    assert len(info.asked) == 2  # a minute on, one read again for the reminders falling due together


async def test_a_ticker_alone_never_matches_a_perp(venues: Venues) -> None:
    _gecko, _hl, info, clock = venues
    prices, marks = _prices(venues, clock)
    # A Hyperliquid perp named EDGE exists, but no CoinGecko id is known to be the token it trades.
    assert marks.coin_for("edgex", "EDGE") is None and marks.coin_for("hyperliquid", None) is None
    assert await marks.mark("some-other-edge", "EDGE") is None
    assert await marks.mark("hyperliquid", "PURR") is None  # keyed to HYPE's id but named otherwise
    other = await prices.market("hyperliquid-clone", "HYPE")  # named HYPE but keyed to another token
    assert other is None
    assert info.asked == []  # none of these even asks Hyperliquid


async def test_coingecko_when_the_mark_fails_and_a_429_pauses_the_host(
    venues: Venues,
) -> None:
    _gecko, hl, _info, clock = venues
    prices, marks = _prices(venues, clock)
    hl.status_next = [500]
    market = await prices.market("hyperliquid", "HYPE")
    assert market is not None and market.price_usd == Decimal("30.5") and market.source == "CoinGecko"
    assert marks.errors == 1
    assert await marks.mark("hyperliquid", "HYPE") is None  # within the retry delay: not asked again
    await clock.advance(61)
    hl.limited = ["120"]
    assert await marks.mark("hyperliquid", "HYPE") is None
    assert 119 <= marks.budget.paused_for_s <= 120
    await clock.advance(61)
    assert await marks.mark("hyperliquid", "HYPE") is None  # still paused: not even asked
    assert len(hl.requests("/info")) == 2
    await clock.advance(60)
    assert await marks.mark("hyperliquid", "HYPE") == Decimal("31.2")


@pytest.mark.engines
async def test_a_reminder_says_its_price_is_hyperliquids_mark(database_url: str, venues: Venues) -> None:
    clock = venues[3]
    async with running(database_url, clock) as (store, service):
        a = await chat(store, "a")
        prices, _marks = _prices(venues, clock)
        service.prices = prices
        await service.merge([entry()], origin="bundled")
        assert await at(clock, service, EVENT_AT - timedelta(days=7)) == 1
        [reminder] = await send(store, a, clock)
        body = reminder.body
        assert isinstance(body, CalendarReminderBody)
        assert (body.price_usd, body.price_source) == (Decimal("31.2"), "Hyperliquid mark")
        assert body.value_usd == Decimal("31200000.00")
        alert = render_event(reminder)
        assert ("USD value", "$31.2M at 31.2 (Hyperliquid mark)") in [(f.name, f.value) for f in alert.fields]
