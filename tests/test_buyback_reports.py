"""Buyback reports on a frozen clock, on both engines: a chat's summary at its own hour in its own zone, once
a day across a restart; milestones at the chat's step, never for what was reached before it subscribed; a
failing source said to be failing and kept out of milestones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.buyback_programmes import programme_from
from bot.buybacks import BuybackReports
from perpwatch.buybacks import Buy, Fetched
from perpwatch.clock import FrozenClock
from perpwatch.events import BuybackMilestoneBody, BuybackSummaryBody, Event
from storage import Store
from storage.models import Chat
from storage.outbox import decode_event
from tests.conftest import read_logs

pytestmark = pytest.mark.engines

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)  # 09:00 in Berlin (CET, UTC+1)
PID = "hyperliquid-af"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def store(database_url: str, clock: FrozenClock) -> AsyncIterator[Store]:
    async with Store(database_url, clock=clock) as s:
        programme = programme_from(
            {
                "id": PID,
                "kind": "hyperliquid_spot_balance",
                "token": "coingecko:hyperliquid",
                "symbol": "HYPE",
                "source": "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/fees",
                "total_supply": "1000000000",
                "supply_source": "https://hyperfnd.medium.com/hype-genesis-1830a4dc2e3f",
                "milestone_tokens": "1000000",
                "params": {"user": "0x" + "fe" * 20, "token_id": "0x0d01dc56dcaaca66ad901c959b4011ec"},
            }
        )
        await s.buybacks.merge_bundled([programme])
        yield s


async def _buy(store: Store, key: str, at: datetime, tokens: str, usd: str) -> None:
    buy = Buy(key=key, start=at - timedelta(minutes=5), end=at, tokens=Decimal(tokens), usd=Decimal(usd))
    await store.buybacks.record(PID, Fetched(buys=[buy], cursor={"k": key}), at=at)


async def _chat(store: Store, name: str, **params: object) -> Chat:
    chat = await store.chats.upsert("telegram", name, kind="group", title=name)
    await store.chats.subscribe(chat.id, "buyback", venue=None, symbol=None, min_usd=None, limit=10, params=params)
    return chat


def _reports(store: Store, clock: FrozenClock) -> BuybackReports:
    return BuybackReports(store.buybacks, store.chats, store.watchers, store.outbox.accept, clock)


async def _heard(store: Store) -> list[tuple[int, Event]]:
    await read_logs(store)
    rows = await store.db.fetch(
        "SELECT d.chat_id, e.body, e.body_version FROM deliveries d JOIN events e ON e.id = d.event_id ORDER BY d.id"
    )
    return [(int(r[0]), decode_event(r[1], int(r[2]))) for r in rows]


async def test_a_summary_comes_at_each_chats_own_hour_once_a_day_even_across_a_restart(
    store: Store, clock: FrozenClock
) -> None:
    await _buy(store, "s1", T0 - timedelta(hours=30), "5000", "140000")  # before the 24 h window
    await _buy(store, "s2", T0 - timedelta(hours=2), "1000", "29000")
    berlin = await _chat(store, "berlin", daily="09:00", tz="Europe/Berlin")
    later = await _chat(store, "later", daily="12:00", tz="UTC")
    await _chat(store, "none", daily="off")
    bystander = await store.chats.upsert("telegram", "liqs", kind="group", title=None)
    await store.chats.subscribe(bystander.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)

    clock.set_wall(T0 - timedelta(seconds=60))
    await _reports(store, clock).tick()
    assert await _heard(store) == []  # 08:59 in Berlin

    clock.set_wall(T0)
    reports = _reports(store, clock)
    await reports.tick()
    await reports.tick()
    await _reports(store, clock).tick()  # a restart in the same minute
    heard = await _heard(store)
    assert [chat for chat, _ in heard] == [berlin.id]
    body = heard[0][1].body
    assert isinstance(body, BuybackSummaryBody) and body.day == "2026-12-02" and body.zone == "Europe/Berlin"
    (line,) = body.lines
    assert (line.tokens, line.usd, line.avg_price) == (Decimal(1000), Decimal(29000), Decimal(29))
    assert line.share_of_supply == Decimal(1000) / Decimal(1_000_000_000)
    assert line.incomplete is None

    await clock.advance(4 * 3600)  # 12:00 UTC: the second chat's hour
    await _reports(store, clock).tick()
    assert [chat for chat, _ in await _heard(store)] == [berlin.id, later.id]
    await clock.advance(20 * 3600)  # next day, 08:00 UTC: Berlin's again
    await _reports(store, clock).tick()
    days = [
        e.body.day for chat, e in await _heard(store) if chat == berlin.id and isinstance(e.body, BuybackSummaryBody)
    ]
    assert days == ["2026-12-02", "2026-12-03"]


async def test_a_milestone_comes_once_per_step_passed_and_never_for_what_came_before(
    store: Store, clock: FrozenClock
) -> None:
    await _buy(store, "m1", T0 - timedelta(days=3), "1500000", "25000000")
    chat = await _chat(store, "m", daily="off")
    reports = _reports(store, clock)
    await reports.tick()
    assert await _heard(store) == []  # 1.5M HYPE and $25M were reached before: noted, not announced

    await _buy(store, "m2", T0 + timedelta(minutes=10), "200000", "6000000")  # $31M, 1.7M HYPE
    await clock.advance(900)
    await reports.tick()
    await _reports(store, clock).tick()
    heard = [e.body for _, e in await _heard(store)]
    assert len(heard) == 1 and isinstance(heard[0], BuybackMilestoneBody)
    assert (heard[0].unit, heard[0].reached) == ("usd", Decimal(30_000_000))

    await _buy(store, "m3", T0 + timedelta(minutes=20), "400000", "12000000")  # 2.1M HYPE, $43M: two steps at once
    await clock.advance(900)
    await reports.tick()
    new = [e.body for _, e in await _heard(store)][1:]
    assert sorted((b.unit, b.reached) for b in new if isinstance(b, BuybackMilestoneBody)) == [
        ("tokens", Decimal(2_000_000)),
        ("usd", Decimal(40_000_000)),
    ]
    assert all(e.audience == chat.id for _, e in await _heard(store))


async def test_a_failing_source_is_named_in_the_summary_and_holds_its_milestones(
    store: Store, clock: FrozenClock
) -> None:
    await _buy(store, "f1", T0 - timedelta(days=40), "100", "2900")
    chat = await _chat(store, "f", daily="09:00", tz="Europe/Berlin", every_usd={"*": "1000"})
    await store.buybacks.failed(PID, "HttpStatusError: HTTP 500 from https://api.hyperliquid.xyz/info", at=T0)
    await _reports(store, clock).tick()
    await _buy(store, "f2", T0 + timedelta(minutes=1), "100", "2900")  # back: the step is heard from here on
    await clock.advance(120)
    await _reports(store, clock).tick()
    heard = await _heard(store)
    assert [c for c, _ in heard] == [chat.id]  # the summary; no milestone while failing, and none noted then
    body = heard[0][1].body
    assert isinstance(body, BuybackSummaryBody)
    assert (
        body.lines[0].incomplete is not None and "source failing since 2026-12-02 08:00 UTC" in body.lines[0].incomplete
    )


async def test_no_summary_is_made_before_any_source_was_read(store: Store, clock: FrozenClock) -> None:
    """A fresh bot whose sources have not answered yet has nothing true to sum: it waits for a first read."""
    await _chat(store, "fresh", daily="09:00", tz="Europe/Berlin")
    assert await _reports(store, clock).tick() == 0
    await _buy(store, "first", T0, "1", "30")
    assert await _reports(store, clock).tick() == 1
