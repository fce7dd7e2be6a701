"""The Lighter and Pacifica account watchers end to end on loopback (`FakeRest` answering each account by its
query): seeding silent, an increase told once as seen by a snapshot, a restart mid-position telling once
what changed while it was down, a 0x address without a Lighter account asked once and set aside across a
restart, a Solana address never asked of Lighter nor a 0x one of Pacifica, the share of the host's budget
kept, and Pacifica's alerts saying it publishes no liquidation price."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from bot.settings import load_settings
from perpwatch.accounts import NoAccount
from perpwatch.clock import SYSTEM_CLOCK
from perpwatch.events import DistanceBody, PositionBody, Venue
from storage import StorageUnavailable
from tests.conftest import eventually
from tests.fakes.rest import FakeRest
from tests.fakes.sink import CollectingSink
from tests.test_venue_accounts import SOL, lighter_account, lighter_body, lighter_position, pacifica_sample
from watchers.account_poller import LIGHTER, PACIFICA, AccountPollTuning, AccountPollWatcher, AccountVenue
from watchers.poller import HttpStatusError
from watchers.registry import REGISTRY
from watchers.runtime import MemoryKv, Runtime

HAS = "0x" + "a1" * 20
"""A 0x wallet with a Lighter account."""
NONE = "0x" + "b2" * 20
"""A 0x wallet Lighter lists no account for (a Hyperliquid-only one)."""
LIGHTER_PATH = "/api/v1/account"
PACIFICA_PATH = "/api/v1/positions"


class Accounts:
    """What the fake venue holds: Lighter ETH size of HAS, Pacifica AAVE amount of SOL."""

    def __init__(self) -> None:
        self.eth = "10"
        self.aave = "223.72"
        self.opened: dict[str, str] = {}
        """Other 0x wallets that have a Lighter account now, with their ETH size."""

    def lighter(self, query: dict[str, str]) -> Any:
        assert query["by"] == "l1_address"
        address = query["value"]
        size = self.eth if address == HAS else self.opened.get(address)
        if size is None:
            return {"code": 200, "total": 0, "accounts": []}
        value = str(Decimal(size) * 3700)  # mark 3700, 32% above the liquidation price: no warning
        row = lighter_position(position=size, position_value=value)
        return lighter_body(lighter_account(7, [row], address=address))

    def pacifica(self, query: dict[str, str]) -> Any:
        assert query["account"] == SOL
        body = pacifica_sample()
        body["data"][0]["amount"] = self.aave
        return body


@pytest.fixture
async def venue() -> AsyncIterator[tuple[FakeRest, Accounts]]:
    accounts = Accounts()
    async with FakeRest(SYSTEM_CLOCK) as rest:
        rest.answer_gets(LIGHTER_PATH, accounts.lighter)
        rest.answer_gets(PACIFICA_PATH, accounts.pacifica)
        yield rest, accounts


async def _watched() -> set[str]:
    return {HAS, NONE, SOL}


def _watcher(
    spec: AccountVenue,
    url: str,
    kv: MemoryKv,
    *,
    per_min: int = 60,
    poll_s: float = 0.2,
    recheck_s: float = 3600,
    watched: Callable[[], Awaitable[set[str]]] | None = _watched,
) -> tuple[AccountPollWatcher, Runtime]:
    runtime = Runtime(clock=SYSTEM_CLOCK, kv=kv, watched=watched)
    tuning = AccountPollTuning(requests_per_min=per_min, poll_s=poll_s, near_poll_s=poll_s, absent_recheck_s=recheck_s)
    name = f"{spec.venue.value}_accounts"
    return AccountPollWatcher(spec, url, tuning, runtime.context(name)), runtime


def _asked(rest: FakeRest, path: str, address: str) -> int:
    return sum(address in s.query for s in rest.requests(path))


async def test_lighter_seed_increase_absent_restart_and_budget(venue: tuple[FakeRest, Accounts]) -> None:
    rest, accounts = venue
    kv = MemoryKv()
    watcher, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), kv)
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: HAS in watcher.books and watcher.books[HAS].seeded and NONE in watcher.absent)
        assert sink.events == []  # seeding tells nothing
        assert SOL not in watcher.watched and _asked(rest, LIGHTER_PATH, SOL) == 0
        accounts.eth = "12"
        await sink.until(1)
        polls = len(rest.requests(LIGHTER_PATH))
        await rest.until(lambda: len(rest.requests(LIGHTER_PATH)) >= polls + 2)  # asked again, nothing new
        [added] = sink.events
        body = added.body
        assert isinstance(body, PositionBody) and added.venue is Venue.LIGHTER and added.subject == HAS
        assert (body.change, body.seen_by, body.size_before, body.size_after) == (
            "increased",
            "snapshot",
            Decimal(10),
            Decimal(12),
        )
        assert added.source == "lighter_accounts" and added.key.startswith("lighter:pos:")
        assert _asked(rest, LIGHTER_PATH, NONE) == 1  # set aside, not polled with the others
        assert "1 without an account" in watcher.health.extra["wallets"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()

    # Down for a while: the wallet added 3 more. The restart tells that once; NONE stays set aside.
    accounts.eth = "15"
    again, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), kv)
    after = CollectingSink()
    task = asyncio.create_task(again.run(after))
    try:
        await after.until(1)
        polls = len(rest.requests(LIGHTER_PATH))
        await rest.until(lambda: len(rest.requests(LIGHTER_PATH)) >= polls + 2)
        [caught_up] = after.events
        body = caught_up.body
        assert isinstance(body, PositionBody)
        assert (body.change, body.seen_by, body.size_before, body.size_after) == (
            "increased",
            "snapshot",
            Decimal(12),
            Decimal(15),
        )
        assert NONE in again.absent and _asked(rest, LIGHTER_PATH, NONE) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
    assert rest.max_weight_in(60.0) <= 60  # the watcher's share, within Lighter's 60 a minute


async def test_a_pending_alert_is_sent_again_after_a_crash(venue: tuple[FakeRest, Accounts]) -> None:
    """A book saved with its alert, the process gone before the pipeline took it: the restart hands it again
    (same key, so the pipeline's dedupe makes that harmless), and the snapshot itself tells nothing more."""
    rest, accounts = venue
    kv = MemoryKv()
    watcher, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), kv)
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: HAS in watcher.books and watcher.books[HAS].seeded)
        accounts.eth = "12"
        await sink.until(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
    [told] = sink.events
    scope = "lighter_accounts"
    saved = await kv.get_value(scope, "book:" + HAS)
    assert isinstance(saved, dict) and saved["pending"] == []
    saved["pending"] = [told.model_dump(mode="json")]  # as if the sink never returned
    await kv.put_value(scope, "book:" + HAS, saved)
    again, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), kv)
    after = CollectingSink()
    task = asyncio.create_task(again.run(after))
    try:
        await after.until(1)
        polls = len(rest.requests(LIGHTER_PATH))
        await rest.until(lambda: len(rest.requests(LIGHTER_PATH)) >= polls + 2)
        assert [e.key for e in after.events] == [told.key]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


async def test_the_share_of_the_budget_is_kept(venue: tuple[FakeRest, Accounts]) -> None:
    """Five new wallets are all due at once; a share of 3 a minute lets 3 be asked and holds the others."""
    rest, _ = venue

    async def five() -> set[str]:
        return {"0x" + f"{n:02x}" * 20 for n in range(1, 6)}

    watcher, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), MemoryKv(), per_min=3, poll_s=0.05, watched=five)
    task = asyncio.create_task(watcher.run(CollectingSink()))
    try:
        await rest.until(lambda: len(rest.requests(LIGHTER_PATH)) >= 3)
        await asyncio.sleep(1.0)  # two more are due all along; the share holds them
        assert len(rest.requests(LIGHTER_PATH)) == 3
        assert watcher.share.used == 3 and "3/3 per 60s" in watcher.health.extra["budget"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


async def test_pacifica_alerts_say_there_is_no_liquidation_price(venue: tuple[FakeRest, Accounts]) -> None:
    rest, accounts = venue
    kv = MemoryKv()
    watcher, runtime = _watcher(PACIFICA, rest.url(PACIFICA_PATH), kv)
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: SOL in watcher.books and watcher.books[SOL].seeded)
        assert sink.events == [] and watcher.watched == {SOL}  # the 0x wallets are not Pacifica's
        accounts.aave = "300"
        await sink.until(1)
        polls = len(rest.requests(PACIFICA_PATH))
        await rest.until(lambda: len(rest.requests(PACIFICA_PATH)) >= polls + 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
    [event] = sink.events
    body = event.body
    assert isinstance(body, PositionBody) and event.venue is Venue.PACIFICA and event.subject == SOL
    assert (body.change, body.seen_by, body.size_after) == ("increased", "snapshot", Decimal(300))
    assert body.note is not None and "publishes no liquidation price" in body.note
    assert not any(isinstance(e.body, DistanceBody) for e in sink.events)
    assert all("0x" not in s.query for s in rest.requests(PACIFICA_PATH))

    accounts.aave = "100"  # cut while the bot was down: told once after the restart
    again, runtime = _watcher(PACIFICA, rest.url(PACIFICA_PATH), kv)
    after = CollectingSink()
    task = asyncio.create_task(again.run(after))
    try:
        await after.until(1)
        polls = len(rest.requests(PACIFICA_PATH))
        await rest.until(lambda: len(rest.requests(PACIFICA_PATH)) >= polls + 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
    [cut] = after.events
    assert isinstance(cut.body, PositionBody)
    assert (cut.body.change, cut.body.size_before, cut.body.size_after) == ("reduced", Decimal(300), Decimal(100))
    assert cut.body.note == body.note


async def test_a_wallet_that_opens_a_lighter_account_later_is_told_as_opened(
    venue: tuple[FakeRest, Accounts],
) -> None:
    """Lighter listed no account for NONE; on a re-check it has one: it held nothing there before, so its
    position is an open, told once, not seeded silently."""
    rest, accounts = venue
    watcher, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), MemoryKv(), recheck_s=0.5)
    sink = CollectingSink()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: NONE in watcher.absent and HAS in watcher.books and watcher.books[HAS].seeded)
        accounts.opened[NONE] = "5"
        await sink.until(1)
        await rest.until(lambda: _asked(rest, LIGHTER_PATH, NONE) >= 3)  # polled now, and nothing more said
        [opened] = sink.events
        assert isinstance(opened.body, PositionBody) and opened.subject == NONE
        assert (opened.body.change, opened.body.seen_by, opened.body.size_after) == ("opened", "snapshot", Decimal(5))
        assert NONE not in watcher.absent and len(sink.events) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


@pytest.mark.parametrize("watched", [None, "empty"])
async def test_nobody_watching_asks_nothing(venue: tuple[FakeRest, Accounts], watched: str | None) -> None:
    """Safe in the default watcher list: with no watch list, or an empty one, no request is made."""
    rest, _ = venue

    async def empty() -> set[str]:
        return set()

    for spec, path in ((LIGHTER, LIGHTER_PATH), (PACIFICA, PACIFICA_PATH)):
        watcher, runtime = _watcher(spec, rest.url(path), MemoryKv(), watched=None if watched is None else empty)
        task = asyncio.create_task(watcher.run(CollectingSink()))
        try:
            await asyncio.sleep(1.2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await runtime.close()
    assert rest.seen == []


def test_a_lighter_not_found_answer_means_no_account() -> None:
    url = "https://mainnet.zklighter.elliot.ai/api/v1/account"
    assert LIGHTER.no_account is not None
    assert LIGHTER.no_account(HttpStatusError(400, url, '{"code":21100,"message":"account not found"}'))
    assert LIGHTER.no_account(HttpStatusError(404, url, "Not Found"))
    assert not LIGHTER.no_account(HttpStatusError(400, url, '{"code":20001,"message":"invalid param"}'))
    assert not LIGHTER.no_account(HttpStatusError(500, url, "not found"))


def test_the_registry_builds_both_from_settings() -> None:
    settings = load_settings(lighter_account_url="http://127.0.0.1:1/api/v1/account", lighter_accounts_per_min=12)
    runtime = Runtime(clock=SYSTEM_CLOCK, watched=_watched)
    lighter = REGISTRY["lighter_accounts"].build(settings, runtime.context("lighter_accounts"))
    pacifica = REGISTRY["pacifica_accounts"].build(settings, runtime.context("pacifica_accounts"))
    assert isinstance(lighter, AccountPollWatcher) and isinstance(pacifica, AccountPollWatcher)
    assert lighter.url == "http://127.0.0.1:1/api/v1/account" and lighter.tuning.requests_per_min == 12
    assert lighter.spec is LIGHTER and lighter.host.limit == 60
    assert pacifica.url == "https://api.pacifica.fi/api/v1/positions" and pacifica.spec is PACIFICA
    assert pacifica.host.limit == 20 and pacifica.tuning.requests_per_min == 10


async def test_alerts_the_pipeline_refused_are_held_and_handed_over_first(venue: tuple[FakeRest, Accounts]) -> None:
    """The store away when the book moved: the alert is held, handed over before the wallet's next poll, once."""
    rest, accounts = venue
    watcher, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), MemoryKv())

    class Flaky(CollectingSink):
        fails = 2

        async def __call__(self, events: Any) -> None:
            if self.fails:
                self.fails -= 1
                raise StorageUnavailable("database is locked")
            await super().__call__(events)

    sink = Flaky()
    task = asyncio.create_task(watcher.run(sink))
    try:
        await eventually(lambda: HAS in watcher.books and watcher.books[HAS].seeded)
        accounts.eth = "12"
        await sink.until(1)
        polls = len(rest.requests(LIGHTER_PATH))
        await rest.until(lambda: len(rest.requests(LIGHTER_PATH)) >= polls + 2)
        [added] = sink.events
        assert isinstance(added.body, PositionBody) and added.body.size_after == Decimal(12)
        assert sink.fails == 0 and watcher.held == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()


async def test_whale_lookups_on_lighter_and_pacifica(venue: tuple[FakeRest, Accounts]) -> None:
    """`/whale` asks each venue live: Lighter's view with its mark and distance, a wallet it lists no account
    for as NoAccount, and Pacifica's positions with no mark or liquidation price invented."""
    rest, _ = venue
    lighter, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), MemoryKv())
    pacifica, other = _watcher(PACIFICA, rest.url(PACIFICA_PATH), MemoryKv())
    try:
        assert lighter.follows(HAS) and not lighter.follows(SOL) and pacifica.follows(SOL)
        view = await lighter.account(HAS)
        [position] = view.positions
        assert view.venue == "lighter" and position.mark_px == Decimal(3700) and position.distance is not None
        with pytest.raises(NoAccount, match="Lighter lists no account for"):
            await lighter.account(NONE)
        sol = await pacifica.account(SOL)
        assert sol.venue == "pacifica" and sol.account_value_usd is None
        assert all(p.mark_px is None and p.distance is None and p.unrealized_pnl_usd is None for p in sol.positions)
    finally:
        await runtime.close()
        await other.close()


async def test_a_wallet_no_chat_watches_any_more_is_forgotten_with_its_book(venue: tuple[FakeRest, Accounts]) -> None:
    rest, _ = venue
    kv = MemoryKv()
    watched = {HAS}

    async def current() -> set[str]:
        return set(watched)

    watcher, runtime = _watcher(LIGHTER, rest.url(LIGHTER_PATH), kv, watched=current)
    task = asyncio.create_task(watcher.run(CollectingSink()))
    try:
        await eventually(lambda: ("lighter_accounts", "book:" + HAS) in kv.values)
        watched.clear()
        await eventually(lambda: HAS not in watcher.books)
        assert ("lighter_accounts", "book:" + HAS) not in kv.values
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.close()
