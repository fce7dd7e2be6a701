"""The calendar's sources: DefiLlama's emissions object in both shapes (the dataset host's plain body and the
Pro API's string-wrapped one) becomes the same `model` cliffs; a 402, a 404 or a malformed body changes
nothing and is the watcher's error; a good refresh merges into the calendar. CoinGecko prices are exact
Decimals; Polymarket launch markets become hints, never entries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bot.calendar import CalendarService
from perpwatch.clock import FrozenClock
from storage import Store
from tests.conftest import eventually
from tests.fakes.calendar_sources import (
    CalendarSources,
    cliff,
    coingecko_market,
    emissions_object,
    gamma_market,
    linear,
    wrapped,
)
from tests.fakes.rest import FakeRest
from watchers.base import WatcherState
from watchers.defillama_emissions import DefiLlamaEmissionsWatcher, MalformedEmissions, parse
from watchers.polymarket import parse_hints
from watchers.prices import PriceSource
from watchers.runtime import Runtime

NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
SOON = datetime(2026, 12, 29, 0, 0, tzinfo=UTC)


def _object() -> dict[str, object]:
    return emissions_object(
        [
            cliff(NOW - timedelta(days=30), 5),  # past: not an upcoming entry
            cliff(SOON, "9916666.666666667"),
            linear(SOON, 1000, 2000),  # weekly rates, not a dated amount: skipped
            cliff(SOON + timedelta(days=400), 1),  # beyond the horizon
        ]
    )


def test_the_plain_and_the_string_wrapped_bodies_give_the_same_model_cliffs() -> None:
    plain = parse(_object(), "hyperliquid", source_url="https://d.example/emissions/hyperliquid", now=NOW)
    boxed = parse(wrapped(_object()), "hyperliquid", source_url="https://d.example/emissions/hyperliquid", now=NOW)
    assert plain == boxed
    [only] = plain
    assert only.id == "defillama:hyperliquid:2026-12-29:insiders"
    assert only.figure.value == "model" and only.coingecko_id == "hyperliquid" and only.precision.value == "day"
    assert only.amount_tokens == Decimal("9916666.666666667")  # exact from the wire's text
    assert only.total_supply == Decimal(1000000000) and only.token_key == "coingecko:hyperliquid"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"message": "Upgrade to the paid API plan"}, "no name"),
        ({"name": "X"}, "no metadata"),
        ({"body": "{not json"}, "not JSON"),
        (["hyperliquid"], "no name"),
        (emissions_object([], gecko="Not An Id!"), "no CoinGecko id"),
    ],
)
def test_a_malformed_body_is_refused_whole(body: object, why: str) -> None:
    with pytest.raises(MalformedEmissions, match=why):
        parse(body, "x", source_url="https://d.example/x", now=NOW)


async def _watch(
    fake: FakeRest, store: Store, clock: FrozenClock
) -> tuple[DefiLlamaEmissionsWatcher, asyncio.Task[None]]:
    class Settings:
        defillama_datasets_url = fake.url("/")
        defillama_slugs = ("hyperliquid",)
        defillama_poll_s = 3600.0

    runtime = Runtime(clock=clock, kv=store.watchers)
    watcher = DefiLlamaEmissionsWatcher(Settings(), runtime.context("defillama_emissions"))

    async def sink(events: object) -> None:
        return None

    return watcher, asyncio.create_task(watcher.run(sink))


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.engines
@pytest.mark.parametrize("shape", ["plain", "string-wrapped"])
async def test_a_good_refresh_is_merged_as_model_lines(database_url: str, tmp_path: Path, shape: str) -> None:
    clock = FrozenClock(NOW)
    bundled = tmp_path / "calendar.toml"
    bundled.write_text("", encoding="utf-8")
    async with CalendarSources(clock) as fake, Store(database_url, clock=clock) as store:
        fake.serve("/emissions/hyperliquid", _object() if shape == "plain" else wrapped(_object()))
        watcher, task = await _watch(fake, store, clock)
        await eventually(lambda: watcher.health.state is WatcherState.UP, what="the first refresh")
        await _stop(task)
        service = CalendarService(store, accept=store.outbox.accept, withdraw=_never, clock=clock, bundled=bundled)
        merged = await service.merge_model()
        assert merged is not None and merged.added == 1
        assert await service.merge_model() is None  # the same refresh is not merged twice
        stored = await store.calendar.get("defillama:hyperliquid:2026-12-29:insiders")
        assert stored is not None and stored.origin == "defillama" and stored.entry.figure.value == "model"
        assert [r[1] for r in await store.calendar.reminders(stored.entry.id)] == ["7d", "3d", "24h"]


async def _never(thread: str) -> int:
    raise AssertionError("nothing to withdraw")


@pytest.mark.parametrize(("status", "shown"), [(402, "HTTP 402"), (404, "HTTP 404"), (None, "no name")])
async def test_a_402_404_or_malformed_body_leaves_the_calendar_as_it_was_and_shows_the_error(
    tmp_path: Path, status: int | None, shown: str
) -> None:
    clock = FrozenClock(NOW)
    async with CalendarSources(clock) as fake, Store(f"sqlite:///{tmp_path / 'p.db'}", clock=clock) as store:
        await store.watchers.put_value("defillama_emissions", "entries", {"fetched_at": "before", "entries": []})
        if status is None:
            fake.serve("/emissions/hyperliquid", {"message": "Upgrade to the paid API plan"})
        elif status == 402:
            fake.status_next = [402]
        watcher, task = await _watch(fake, store, clock)
        await eventually(lambda: watcher.health.last_error is not None, what="the failed refresh")
        await _stop(task)
        assert watcher.health.state is WatcherState.DOWN
        assert shown in (watcher.health.last_error or "") and "bundled calendar in force" in (
            watcher.health.last_error or ""
        )
        kept = await store.watchers.get_value("defillama_emissions", "entries")
        assert kept == {"fetched_at": "before", "entries": []}  # the last good copy is untouched


async def test_prices_are_exact_decimals_cached_and_a_429_is_no_price(tmp_path: Path) -> None:
    clock = FrozenClock(NOW)
    async with CalendarSources(clock) as fake:
        fake.serve("/coins/markets", [coingecko_market("hyperliquid", "30.123456789012345678", "336685219.5", "999")])
        prices = PriceSource(fake.url("/"), clock=clock)
        market = await prices.market("hyperliquid")
        assert market is not None and market.price_usd == Decimal("30.123456789012345678")
        assert market.circulating_supply == Decimal("336685219.5")
        assert await prices.price_usd("hyperliquid") == Decimal("30.123456789012345678")
        assert len(fake.requests("/coins/markets")) == 1  # cached
        assert "ids=hyperliquid" in fake.requests()[0].query and "vs_currency=usd" in fake.requests()[0].query
        fake.limited = ["120"]
        assert await prices.price_usd("lighter") is None
        assert await prices.price_usd("aster-2") is None  # the host is paused: not even asked
        assert len(fake.requests()) == 2


def test_launch_markets_are_hints_whatever_the_shape_of_their_outcomes() -> None:
    markets = [
        gamma_market("edgeX FDV above $1B one day after launch?", slug="edgex-fdv-1b", yes="0.42"),
        gamma_market("Variational token launch by December 31?", slug="var-launch", yes="0.3", strings=False),
        gamma_market("Will BTC hit 150k?", slug="btc", yes="0.1"),  # no watched project
        gamma_market("Pacifica airdrop by June?", slug="pac", yes="0.5", closed=True),  # closed
        gamma_market("edgexplorer launch?", slug="other", yes="0.5"),  # a longer word, not edgeX
    ]
    hints = parse_hints(markets, ["edgeX", "Variational", "Pacifica"], seen_at=NOW)
    assert [(h["project"], h["odds"]) for h in hints] == [
        ("edgeX", {"Yes": "0.42", "No": "0.58"}),
        ("Variational", {"Yes": "0.3", "No": "0.7"}),
    ]
    assert hints[0]["url"] == "https://polymarket.com/market/edgex-fdv-1b"
