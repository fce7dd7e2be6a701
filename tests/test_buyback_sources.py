"""Each buyback source kind stepped through a real `RestPoller` (its `get_json` is the budgeted path every
request takes) against the loopback fakes of tests/fakes/buyback_sources.py: figures exact, keys stable under
replay, cursors durable, and each kind's failure modes (caps, range errors, removed logs, gaps, rate limits,
server errors, malformed bodies). Time for budgets is a frozen clock; each step's `now` is given by the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from perpwatch.buybacks import KINDS, BuybackSource, Fetched, Programme, ProgrammeKind, Snapshot, SourceContext
from perpwatch.clock import FrozenClock
from tests.fakes.buyback_sources import (
    AF,
    HYPE_INDEX,
    HYPE_TOKEN_ID,
    FakeAsterChain,
    FakeDefiLlama,
    FakeEvmNode,
    FakeHyperliquidInfo,
    FakeLighterExplorer,
    load,
    malformed,
    rate_limited,
    server_error,
)
from watchers import (
    buyback_aster,
    buyback_defillama,
    buyback_evm,
    buyback_hyperliquid,
    buyback_lighter,
    buyback_sources,
)
from watchers.poller import BudgetRegistry, HttpStatusError, PollTuning, RateLimited, RestPoller

T0 = datetime(2026, 10, 10, 11, 44, 44, tzinfo=UTC)

Step = Callable[[Callable[..., Awaitable[Any]]], Awaitable[Fetched]]


class SourcePoller(RestPoller):
    """A poller whose one poll serves steps handed to it, each fetching through `self.get_json`."""

    def __init__(self, budgets: BudgetRegistry, clock: FrozenClock) -> None:
        super().__init__("buybacks", PollTuning(interval_s=3600), budgets=budgets, clock=clock)
        self.steps: asyncio.Queue[tuple[Step, asyncio.Future[Fetched]]] = asyncio.Queue()

    async def poll(self) -> None:
        while True:
            step, done = await self.steps.get()
            try:
                done.set_result(await step(self.get_json))
            except Exception as exc:
                done.set_exception(exc)

    async def fetch(
        self,
        source: BuybackSource,
        params: Mapping[str, Any],
        *,
        now: datetime,
        urls: Mapping[str, str],
        cursor: Any = None,
        last_snapshot: Snapshot | None = None,
    ) -> Fetched:
        programme = Programme(
            id="test-programme", kind=source.kind, token="t", symbol="T", params=params, source="https://example"
        )

        def step(get_json: Callable[..., Awaitable[Any]]) -> Awaitable[Fetched]:
            ctx = SourceContext(programme, cursor, now, get_json, last_snapshot=last_snapshot, urls=urls)
            return source.fetch(ctx)

        done: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        await self.steps.put((step, done))
        async with asyncio.timeout(10):  # a hang guard only
            return await done


@contextlib.asynccontextmanager
async def driving() -> AsyncIterator[tuple[SourcePoller, BudgetRegistry, FrozenClock]]:
    clock = FrozenClock(T0)
    budgets = BudgetRegistry(clock=clock, default_limit=1200)
    poller = SourcePoller(budgets, clock)
    task = asyncio.create_task(poller.run())
    try:
        yield poller, budgets, clock
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# ---------------------------------------------------------------------------------------------------------
# hyperliquid_spot_balance
# ---------------------------------------------------------------------------------------------------------

HL = buyback_hyperliquid.SOURCE
HL_PARAMS = {"user": AF, "token_id": HYPE_TOKEN_ID}


def hl_urls(fake: FakeHyperliquidInfo) -> dict[str, str]:
    return {"hyperliquid_info_url": fake.url("/info")}


async def test_hl_first_snapshot_reads_the_real_capture_and_buys_nothing() -> None:
    async with FakeHyperliquidInfo() as fake, driving() as (poller, budgets, _):
        got = await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))
        assert got.buys == ()
        assert got.snapshot is not None
        assert got.snapshot.balance == Decimal("47942118.5447392315")
        assert got.snapshot.cost_usd == Decimal("1359925585.3465132713")
        assert got.snapshot.gap_s is None and got.snapshot.taken_at == T0
        assert got.running_total is not None and got.running_total.tokens == Decimal("47942118.5447392315")
        assert got.running_total.usd == Decimal("1359925585.3465132713") and AF in got.running_total.source
        assert "spotClearinghouseState" in got.running_total.source
        assert got.cursor["token_index"] == HYPE_INDEX
        assert [s.body["type"] for s in fake.seen] == ["spotMeta", "spotClearinghouseState"]
        assert fake.seen[1].body["user"] == AF
        assert fake.weight_seen == 22 and budgets.for_url(fake.url("/info")).used == fake.weight_seen


async def test_hl_the_rise_since_the_last_snapshot_is_a_buy_and_the_index_is_cached() -> None:
    async with FakeHyperliquidInfo() as fake, driving() as (poller, budgets, _):
        first = await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))
        fake.total, fake.entry_ntl = "47942218.5447392315", "1359928420.3465132713"
        later = T0 + timedelta(seconds=300)
        got = await poller.fetch(
            HL, HL_PARAMS, now=later, urls=hl_urls(fake), cursor=first.cursor, last_snapshot=first.snapshot
        )
        assert [s.body["type"] for s in fake.seen] == ["spotMeta", "spotClearinghouseState", "spotClearinghouseState"]
        assert fake.weight_seen == 24 and budgets.for_url(fake.url("/info")).used == 24
        (buy,) = got.buys
        assert buy.tokens == Decimal(100) and buy.usd == Decimal("2835")
        assert buy.key == "snapshot:2026-10-10T11:49:44.000+00:00"
        assert (buy.start, buy.end, buy.basis, buy.note) == (T0, later, "measured", None)
        assert got.snapshot is not None and got.snapshot.gap_s is None


async def test_hl_a_buy_after_missed_snapshots_says_how_long_the_gap_was() -> None:
    async with FakeHyperliquidInfo() as fake, driving() as (poller, _, _):
        last = Snapshot(T0, Decimal("47942000"), Decimal("1359925000"))
        now = T0 + timedelta(hours=3, minutes=10)
        got = await poller.fetch(HL, HL_PARAMS, now=now, urls=hl_urls(fake), last_snapshot=last)
        assert got.snapshot is not None and got.snapshot.gap_s == 11400.0
        (buy,) = got.buys
        assert buy.note == "spans a 3 h 10 min gap without snapshots"
        assert buy.tokens == Decimal("118.5447392315") and buy.usd == Decimal("585.3465132713")
        assert (buy.start, buy.end) == (T0, now)
        # Under 2.5 intervals is no gap: 12 min with an expected interval of 300 s.
        params = dict(HL_PARAMS, expected_interval_s=300)
        got = await poller.fetch(HL, params, now=T0 + timedelta(minutes=12), urls=hl_urls(fake), last_snapshot=last)
        assert got.snapshot is not None and got.snapshot.gap_s is None and got.buys[0].note is None
        got = await poller.fetch(HL, params, now=T0 + timedelta(minutes=13), urls=hl_urls(fake), last_snapshot=last)
        assert got.snapshot is not None and got.snapshot.gap_s == 780.0
        assert got.buys[0].note == "spans a 13 min gap without snapshots"


async def test_hl_a_fall_is_no_buy_but_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="watchers.buyback_hyperliquid")
    async with FakeHyperliquidInfo() as fake, driving() as (poller, _, _):
        last = Snapshot(T0, Decimal("48000000"), Decimal("1360000000"))
        got = await poller.fetch(HL, HL_PARAMS, now=T0 + timedelta(minutes=5), urls=hl_urls(fake), last_snapshot=last)
        assert got.buys == [] and got.snapshot is not None
        assert got.snapshot.balance == Decimal("47942118.5447392315")
    assert any("fell" in r.message for r in caplog.records)


async def test_hl_the_token_is_found_by_tokenid_never_by_name_and_its_index_refreshed_daily() -> None:
    async with FakeHyperliquidInfo(decoy=True) as fake, driving() as (poller, _, _):
        first = await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))
        assert first.snapshot is not None and first.snapshot.balance == Decimal("47942118.5447392315")
        await poller.fetch(HL, HL_PARAMS, now=T0 + timedelta(hours=23), urls=hl_urls(fake), cursor=first.cursor)
        await poller.fetch(HL, HL_PARAMS, now=T0 + timedelta(hours=24), urls=hl_urls(fake), cursor=first.cursor)
        kinds = [s.body["type"] for s in fake.seen]
        assert kinds.count("spotMeta") == 2 and kinds[-2:] == ["spotMeta", "spotClearinghouseState"]


async def test_hl_failures_raise_and_a_429_pauses_the_host() -> None:
    async with FakeHyperliquidInfo() as fake, driving() as (poller, budgets, clock):
        fake.faults = [rate_limited("30")]
        with pytest.raises(RateLimited):
            await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))
        assert budgets.for_url(fake.url("/info")).paused_for_s == pytest.approx(30)
        await clock.advance(30)
        fake.faults = [server_error()]
        with pytest.raises(HttpStatusError, match="500"):
            await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))
        fake.faults = [malformed('{"tokens": "none"}')]
        with pytest.raises(ValueError, match="tokens list"):
            await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))
        fake.listed = False
        with pytest.raises(ValueError, match="no balance of token index 150"):
            await poller.fetch(HL, HL_PARAMS, now=T0, urls=hl_urls(fake))


def test_hl_parameters_are_checked_and_normalised() -> None:
    got = HL.validate({"user": AF.upper().replace("0X", "0x"), "token_id": HYPE_TOKEN_ID.upper().replace("0X", "0x")})
    assert got == {"user": AF, "token_id": HYPE_TOKEN_ID, "expected_interval_s": 300}
    with pytest.raises(ValueError, match="user must be a 0x address, got 'abc'"):
        HL.validate({"user": "abc", "token_id": HYPE_TOKEN_ID})
    with pytest.raises(ValueError, match="token_id must be a hex tokenId"):
        HL.validate({"user": AF, "token_id": "HYPE"})
    with pytest.raises(ValueError, match="unknown parameter coin"):
        HL.validate({"user": AF, "token_id": HYPE_TOKEN_ID, "coin": "HYPE"})


# ---------------------------------------------------------------------------------------------------------
# aster_chain_fills
# ---------------------------------------------------------------------------------------------------------

ASTER = buyback_aster.SOURCE
WALLET = "0xa0edbabcb48034e368de286b49f9603c7afa1b60"
START = ms(datetime(2026, 6, 17, tzinfo=UTC))
ASTER_PARAMS = {"wallet": "0xa0edBaBcb48034e368de286b49F9603C7AfA1b60", "start_ms": START}


def aster_urls(fake: FakeAsterChain) -> dict[str, str]:
    return {"aster_chain_rpc_url": fake.url("/info")}


async def test_aster_counts_buy_fills_of_the_symbol_at_price_times_qty() -> None:
    async with FakeAsterChain() as fake, driving() as (poller, _, _):
        fake.fill(WALLET, START + 5, "0.7012", "1500.5")
        fake.fill(WALLET, START + 9, "0.7020", "10", side="SELL")
        fake.fill(WALLET, START + 11, "0.7030", "20", symbol="BTCUSDT")
        fake.fill(WALLET, START + 3_599_999, "0.71", "2")
        fake.fill(WALLET, START + 3_600_000, "0.72", "3")  # the next window's
        now = datetime(2026, 6, 17, 5, tzinfo=UTC)
        got = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake))
        assert fake.seen[0].body["params"] == [WALLET, None, START, START + 3_599_999, "latest"]
        assert fake.seen[0].body["method"] == "aster_spotUserFills"
        assert [(b.tokens, b.usd) for b in got.buys] == [
            (Decimal("1500.5"), Decimal("1052.15060")),
            (Decimal("2"), Decimal("1.42")),
        ]
        assert got.buys[0].key == f"fill:{START + 5}:ASTERUSDT:BUY:0.7012:1500.5:0"
        assert got.buys[0].start == got.buys[0].end == datetime(2026, 6, 17, 0, 0, 0, 5000, tzinfo=UTC)
        assert got.cursor["from_ms"] == START + 3_600_000 and got.more
        nxt = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake), cursor=got.cursor)
        assert [b.usd for b in nxt.buys] == [Decimal("2.16")]


async def test_aster_a_capped_window_is_halved_and_no_millisecond_is_split() -> None:
    async with FakeAsterChain() as fake, driving() as (poller, _, _):
        # 1,200 fills in the first ten minutes, three in each millisecond: over the cap of one response.
        for i in range(400):
            for qty in ("1", "1", "2"):
                fake.fill(WALLET, START + i * 1500, "0.5", qty)
        now = datetime(2026, 6, 17, 2, tzinfo=UTC)
        cursor: Any = None
        keys: list[str] = []
        for _ in range(30):
            got = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake), cursor=cursor)
            keys += [b.key for b in got.buys]
            cursor = got.cursor
            if not got.more:
                break
        assert len(keys) == len(set(keys)) == 1200
        assert sum(Decimal(k.split(":")[5]) for k in keys) == 1600
        assert f"fill:{START}:ASTERUSDT:BUY:0.5:1:0" in keys and f"fill:{START}:ASTERUSDT:BUY:0.5:1:1" in keys
        widths = [end - start + 1 for start, end in fake.windows()]
        assert widths[0] == 3_600_000 and widths[1] == 1_800_000 and min(widths) < 600_000


async def test_aster_a_millisecond_over_the_cap_is_an_error_not_a_partial_count() -> None:
    async with FakeAsterChain() as fake, driving() as (poller, _, _):
        for _ in range(1200):
            fake.fill(WALLET, START, "0.5", "1")
        now = datetime(2026, 6, 17, 2, tzinfo=UTC)
        first = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake))
        assert first.buys == () and first.more and first.cursor["from_ms"] == START
        assert len(fake.seen) == buyback_aster.MAX_REQUESTS
        assert first.cursor["window_ms"] == 3_600_000 >> buyback_aster.MAX_REQUESTS
        with pytest.raises(ValueError, match="1000 fills in the one millisecond"):
            await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake), cursor=first.cursor)


async def test_aster_a_replayed_window_gives_the_same_keys() -> None:
    async with FakeAsterChain() as fake, driving() as (poller, _, _):
        for qty in ("5", "5", "7"):
            fake.fill(WALLET, START + 42, "0.6", qty)
        now = datetime(2026, 6, 18, tzinfo=UTC)
        once = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake))
        fake.fill(WALLET, START + 42, "0.6", "5", side="SELL")  # another fill of the same ms, not ours
        again = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake))
        assert [b.key for b in once.buys] == [b.key for b in again.buys]
        assert [b.key.rsplit(":", 2)[1:] for b in once.buys] == [["5", "0"], ["5", "1"], ["7", "0"]]


async def test_aster_stops_short_of_now_and_refuses_bad_answers() -> None:
    async with FakeAsterChain() as fake, driving() as (poller, _, _):
        now = datetime.fromtimestamp((START + 30_000) / 1000, tz=UTC)
        got = await poller.fetch(ASTER, ASTER_PARAMS, now=now, urls=aster_urls(fake))
        assert got.buys == () and not got.more and fake.seen == []
        later = datetime(2026, 6, 17, 0, 10, tzinfo=UTC)
        got = await poller.fetch(ASTER, ASTER_PARAMS, now=later, urls=aster_urls(fake))
        assert fake.windows() == [(START, ms(later) - 60_000 - 1)] and not got.more
        fake.faults = [malformed('{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"rpc down"}}')]
        with pytest.raises(ValueError, match="-32000: rpc down"):
            await poller.fetch(ASTER, ASTER_PARAMS, now=later, urls=aster_urls(fake))
        fake.faults = [malformed('{"jsonrpc":"2.0","id":1,"result":{"fills":[{"symbol":"ASTERUSDT"}]}}')]
        with pytest.raises(ValueError, match="side"):
            await poller.fetch(ASTER, ASTER_PARAMS, now=later, urls=aster_urls(fake))
        fake.faults = [malformed("<html>bad gateway</html>")]
        with pytest.raises(json.JSONDecodeError):
            await poller.fetch(ASTER, ASTER_PARAMS, now=later, urls=aster_urls(fake))
    with pytest.raises(ValueError, match="wallet must be a 0x address, got 'abc'"):
        ASTER.validate({"wallet": "abc", "start_ms": 0})
    with pytest.raises(ValueError, match="start_ms"):
        ASTER.validate({"wallet": WALLET})


# ---------------------------------------------------------------------------------------------------------
# evm_erc20_inflow
# ---------------------------------------------------------------------------------------------------------

EVM = buyback_evm.SOURCE
EDGE = "0xb0076de78dc50581770bba1d211ddc0ad4f2a241"
EDGE_WALLET = "0x221e7fca09589ab2d7dc552ee72acf1a2ff10048"
EVM_PARAMS = {
    "rpc": "ethereum_rpc_url",
    "token": EDGE,
    "wallet": EDGE_WALLET,
    "decimals": 18,
    "from_block": 100,
    "chunk": 500,
}


def evm_urls(fake: FakeEvmNode) -> dict[str, str]:
    return {"ethereum_rpc_url": fake.url("/")}


async def test_evm_inflows_are_read_in_chunks_below_the_confirmed_head() -> None:
    async with FakeEvmNode(head=1112) as fake, driving() as (poller, _, _):
        fake.transfer(EDGE, EDGE_WALLET, 150, 1_500_000_000_000_000_000, log_index=3)
        fake.transfer(EDGE, EDGE_WALLET, 150, 1, log_index=4)
        fake.transfer(EDGE, EDGE_WALLET, 700, 25 * 10**18, log_index=0)
        fake.transfer(EDGE, EDGE_WALLET, 1101, 10**18)  # above head - 12: not yet
        fake.transfer(EDGE, "0x" + "22" * 20, 160, 10**18)  # to someone else
        got = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake))
        (query,) = fake.calls("eth_getLogs")[0]
        assert (query["fromBlock"], query["toBlock"]) == (hex(100), hex(599))
        assert query["topics"] == [buyback_evm.TRANSFER_TOPIC, None, "0x" + "0" * 24 + EDGE_WALLET[2:]]
        tx150 = "0x" + format(150 * 1000 + 3, "064x")
        assert [(b.key, b.tokens, b.usd) for b in got.buys] == [
            (f"{tx150}:3", Decimal("1.5"), None),
            ("0x" + format(150 * 1000 + 4, "064x") + ":4", Decimal("1E-18"), None),
        ]
        assert got.buys[0].start == got.buys[0].end == datetime.fromtimestamp(fake.block_time(150), tz=UTC)
        assert fake.calls("eth_getBlockByNumber") == [[hex(150), False]]  # one call for the block's two logs
        assert got.cursor == {"block": 599, "chunk": 500, "decimals": 18} and got.more
        got = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert [b.tokens for b in got.buys] == [Decimal(25)]
        assert got.cursor == {"block": 1099, "chunk": 500, "decimals": 18} and got.more
        got = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert got.buys == [] and got.cursor == {"block": 1100, "chunk": 500, "decimals": 18} and not got.more
        idle = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert idle.buys == () and idle.cursor == got.cursor
        fake.head = 1113
        got = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert [b.tokens for b in got.buys] == [Decimal(1)] and got.cursor["block"] == 1101


async def test_evm_without_a_start_block_counts_from_the_confirmed_head_and_reads_decimals_once() -> None:
    """No block is guessed from a date: the first step only marks where counting starts, and the token's own
    `decimals()` scales the amounts (a 6-decimal token's 2,500,000 units are 2.5 tokens, not 2.5e-12)."""
    async with FakeEvmNode(head=1000, decimals=6) as fake, driving() as (poller, _, _):
        params = {k: v for k, v in EVM_PARAMS.items() if k not in ("decimals", "from_block")}
        fake.transfer(EDGE, EDGE_WALLET, 500, 9 * 10**6)  # before the start: never counted
        got = await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake))
        assert got.buys == () and got.cursor == {"block": 988, "chunk": 500} and not got.more
        fake.transfer(EDGE, EDGE_WALLET, 995, 2_500_000)
        fake.head = 1010
        got = await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert [b.tokens for b in got.buys] == [Decimal("2.5")] and got.cursor["decimals"] == 6
        assert len(fake.calls("eth_call")) == 1
        await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert len(fake.calls("eth_call")) == 1  # kept in the cursor


async def test_evm_a_range_error_shrinks_the_chunk_and_the_cursor_keeps_it() -> None:
    async with FakeEvmNode(head=5000, max_range=200) as fake, driving() as (poller, _, _):
        fake.transfer(EDGE, EDGE_WALLET, 120, 7 * 10**18)
        fake.transfer(EDGE, EDGE_WALLET, 900, 8 * 10**18)
        params = dict(EVM_PARAMS, chunk=2000)
        got = await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake))
        ranges = [(int(q["fromBlock"], 16), int(q["toBlock"], 16)) for (q,) in fake.calls("eth_getLogs")]
        assert ranges == [(100, 2099), (100, 1099), (100, 599), (100, 349), (100, 224)]
        assert got.cursor == {"block": 224, "chunk": 125, "decimals": 18}
        assert [b.tokens for b in got.buys] == [Decimal(7)]
        got = await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert fake.calls("eth_getLogs")[-1][0]["fromBlock"] == hex(225)
        assert fake.calls("eth_getLogs")[-1][0]["toBlock"] == hex(349)
        assert got.cursor == {"block": 349, "chunk": 125, "decimals": 18}


async def test_evm_a_step_that_keeps_hitting_the_limit_stores_the_narrowed_chunk() -> None:
    async with FakeEvmNode(head=5000, max_range=10) as fake, driving() as (poller, _, _):
        fake.transfer(EDGE, EDGE_WALLET, 103, 10**18)
        params = dict(EVM_PARAMS, chunk=2000)
        got = await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake))
        assert got.buys == () and got.more and got.cursor == {"block": 99, "chunk": 31, "decimals": 18}
        assert len(fake.calls("eth_getLogs")) == buyback_evm.MAX_SHRINKS
        got = await poller.fetch(EVM, params, now=T0, urls=evm_urls(fake), cursor=got.cursor)
        assert got.cursor == {"block": 106, "chunk": 7, "decimals": 18} and [b.tokens for b in got.buys] == [Decimal(1)]
        fake.max_range = 0  # not even one block: nothing left to halve
        with pytest.raises(buyback_evm.RpcError, match="-32005"):
            await poller.fetch(EVM, dict(params, chunk=1), now=T0, urls=evm_urls(fake), cursor=got.cursor)


async def test_evm_removed_logs_are_dropped_and_a_replayed_range_gives_the_same_keys() -> None:
    async with FakeEvmNode(head=1000) as fake, driving() as (poller, _, _):
        fake.transfer(EDGE, EDGE_WALLET, 200, 10**18, log_index=1, removed=True)
        fake.transfer(EDGE, EDGE_WALLET, 201, 2 * 10**18, log_index=2)
        once = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake))
        again = await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake))
        assert [b.tokens for b in once.buys] == [Decimal(2)]
        assert [b.key for b in once.buys] == [b.key for b in again.buys]
        assert fake.calls("eth_getBlockByNumber") == [[hex(201), False]] * 2


async def test_evm_refuses_logs_it_did_not_ask_for_and_raises_other_node_errors() -> None:
    async with FakeEvmNode(head=1000) as fake, driving() as (poller, _, _):
        log = fake.transfer(EDGE, EDGE_WALLET, 200, 10**18)
        log["data"] = "0x1234"
        with pytest.raises(ValueError, match="not one uint256"):
            await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake))
        fake.faults = [malformed('{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"internal"}}')]
        with pytest.raises(buyback_evm.RpcError, match="-32603"):
            await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake))
        fake.faults = [server_error()]
        with pytest.raises(HttpStatusError):
            await poller.fetch(EVM, EVM_PARAMS, now=T0, urls=evm_urls(fake))
    with pytest.raises(ValueError, match="rpc must name one of the settings ethereum_rpc_url"):
        EVM.validate(dict(EVM_PARAMS, rpc="https://my.node"))
    with pytest.raises(ValueError, match="wallet must be a 0x address, got 'abc'"):
        EVM.validate(dict(EVM_PARAMS, wallet="abc"))
    assert EVM.validate(EVM_PARAMS)["confirmations"] == 12


# ---------------------------------------------------------------------------------------------------------
# lighter_account_trades
# ---------------------------------------------------------------------------------------------------------

LIGHTER = buyback_lighter.SOURCE


def lighter_urls(fake: FakeLighterExplorer) -> dict[str, str]:
    return {"lighter_explorer_url": fake.url("")}


def at(i: int) -> str:
    return (datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill_history(fake: FakeLighterExplorer, n: int) -> None:
    """`n` trades, oldest first: the treasury buys as taker, buys as maker, sells, and buys on another market."""
    for i in range(n):
        match i % 4:
            case 0:
                fake.trade(at(i), "2.5", "10", maker=77, taker=0, is_taker_ask=0)
            case 1:
                fake.trade(at(i), "2.5", "4", maker=0, taker=78, is_taker_ask=1, with_funding=True)
            case 2:
                fake.trade(at(i), "2.6", "3", maker=79, taker=0, is_taker_ask=1)
            case _:
                fake.trade(at(i), "90", "1", maker=80, taker=0, is_taker_ask=0, market=1)


async def test_lighter_scans_back_to_the_start_and_counts_the_treasury_buys() -> None:
    async with FakeLighterExplorer() as fake, driving() as (poller, _, _):
        fill_history(fake, 250)
        got = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))
        assert fake.offsets() == [0, 100, 200]
        assert fake.seen[0].path == "/api/accounts/0/logs" and fake.seen[0].query["pub_data_type"] == "Trade"
        assert fake.seen[0].query["limit"] == "100"
        assert len(got.buys) == 63 + 63 and not got.more
        assert sum(b.usd or 0 for b in got.buys) == 63 * 25 + 63 * 10
        assert got.cursor == {"newest": datetime.fromisoformat(at(249)).isoformat(), "scan": None}
        newest = got.buys[0]
        assert newest.start == newest.end == datetime.fromisoformat(at(249)) and newest.basis == "measured"


async def test_lighter_stops_paging_at_the_newest_trade_counted() -> None:
    async with FakeLighterExplorer() as fake, driving() as (poller, _, _):
        fill_history(fake, 120)
        first = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))
        fake.seen.clear()
        fake.trade(at(119), "3", "1", maker=5, taker=0, is_taker_ask=0)  # listed late, in the same microsecond
        fake.trade(at(500), "3", "2", maker=5, taker=0, is_taker_ask=0)
        got = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake), cursor=first.cursor)
        assert fake.offsets() == [0]
        # The boundary's microsecond is read again (its old log is another market's): both new trades count.
        assert [b.usd for b in got.buys] == [Decimal(6), Decimal(3)]
        assert got.cursor["newest"] == datetime.fromisoformat(at(500)).isoformat()


async def test_lighter_overlapping_pages_miss_nothing_and_count_nothing_twice() -> None:
    async with FakeLighterExplorer() as fake, driving() as (poller, _, _):
        fill_history(fake, 300)

        def trade_arrives(seen: Any) -> None:
            if seen.query.get("offset") == "100":  # three new trades push every log down between pages
                for i in range(3):
                    fake.trade(at(1000 + i), "3", "1", maker=9, taker=0, is_taker_ask=0)

        fake.before = trade_arrives
        got = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))
        keys = [b.key for b in got.buys]
        assert len(keys) == len(set(keys)) == 150  # the 150 buys of the history; the new ones wait
        fake.before = None
        nxt = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake), cursor=got.cursor)
        assert [b.usd for b in nxt.buys] == [Decimal(3)] * 3


@dataclass
class _ShallowExplorer(FakeLighterExplorer):
    """An explorer that refuses offsets past `deepest`, as a paging depth limit would."""

    deepest: int = 100

    def answer(self, request: web.Request, body: Any) -> web.Response:
        if int(request.query.get("offset", "0")) > self.deepest:
            return web.Response(status=400, text='{"code":400,"message":"invalid param: offset"}')
        return super().answer(request, body)


async def test_lighter_history_ends_where_the_explorer_refuses_to_page_deeper() -> None:
    """Counted up to there and finished, not failing forever at the same page; a refused first page is a fault."""
    async with _ShallowExplorer() as fake, driving() as (poller, _, _):
        fill_history(fake, 400)
        got = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))
        assert fake.offsets() == [0, 100] and not got.more and len(got.buys) == 100
        assert got.cursor["newest"] == datetime.fromisoformat(at(399)).isoformat()
        fake.deepest = -1
        with pytest.raises(HttpStatusError, match="HTTP 400"):
            await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))


async def test_lighter_a_long_scan_is_kept_in_the_cursor_between_steps() -> None:
    async with FakeLighterExplorer() as fake, driving() as (poller, _, _):
        fill_history(fake, 720)
        first = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))
        assert first.more and first.cursor["scan"] == {
            "offset": 500,
            "top": datetime.fromisoformat(at(719)).isoformat(),
        }
        assert first.cursor["newest"] is None
        rest = await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake), cursor=first.cursor)
        assert not rest.more and rest.cursor["scan"] is None
        assert rest.cursor["newest"] == datetime.fromisoformat(at(719)).isoformat()
        keys = {b.key for b in first.buys} | {b.key for b in rest.buys}
        assert len(keys) == 360
        with pytest.raises(ValueError, match="newest first"):
            fake.faults = [malformed(json.dumps([fake.logs[5], fake.logs[0]]))]
            await poller.fetch(LIGHTER, {}, now=T0, urls=lighter_urls(fake))
    assert LIGHTER.validate({}) == {"account_index": 0, "market_index": 2049}
    with pytest.raises(ValueError, match="account_index must be a whole number"):
        LIGHTER.validate({"account_index": "zero"})


# ---------------------------------------------------------------------------------------------------------
# defillama_holders_revenue
# ---------------------------------------------------------------------------------------------------------

LLAMA = buyback_defillama.SOURCE
DAY = 86_400


def llama_urls(fake: FakeDefiLlama) -> dict[str, str]:
    return {"defillama_api_url": fake.url("")}


async def test_defillama_counts_complete_days_as_estimated_usd() -> None:
    chart = load("defillama_summaryFees_hyperliquid_dailyHoldersRevenue_real2026_excerpt.json")["totalDataChart"]
    async with FakeDefiLlama(charts={"hyperliquid": chart}) as fake, driving() as (poller, _, _):
        now = datetime(2026, 10, 9, 18, tzinfo=UTC)  # the chart's last day is under way
        got = await poller.fetch(LLAMA, {"slug": "hyperliquid"}, now=now, urls=llama_urls(fake))
        assert fake.seen[0].path == "/summary/fees/hyperliquid"
        assert fake.seen[0].query == {"dataType": "dailyHoldersRevenue"}
        assert [(b.key, b.usd, b.tokens, b.basis) for b in got.buys] == [
            ("day:2024-12-23", Decimal(1424462), None, "estimated"),
            ("day:2024-12-24", Decimal(1303665), None, "estimated"),
            ("day:2026-10-08", Decimal(2452737), None, "estimated"),
        ]
        assert got.buys[0].start == datetime(2024, 12, 23, tzinfo=UTC)
        assert got.buys[0].end == datetime(2024, 12, 24, tzinfo=UTC)
        assert got.cursor == "2026-10-08"
        assert got.running_total is not None and got.running_total.usd == Decimal(1335520262)
        assert got.running_total.tokens is None and "DefiLlama" in got.running_total.source
        nxt = await poller.fetch(
            LLAMA, {"slug": "hyperliquid"}, now=now + timedelta(days=1), urls=llama_urls(fake), cursor=got.cursor
        )
        assert [b.key for b in nxt.buys] == ["day:2026-10-09"] and nxt.cursor == "2026-10-09"


UNKNOWN_SLUG = r"no holders revenue for slug 'hyperliquid-perp' \(HTTP 400 from .*Fees for hyperliquid-perp not found"


async def test_defillama_unknown_slug_and_malformed_bodies_raise_clearly() -> None:
    chart = [[1791331200, 0], [1791417600, 5]]
    async with FakeDefiLlama(charts={"hyperliquid": chart}) as fake, driving() as (poller, _, _):
        got = await poller.fetch(LLAMA, {"slug": "hyperliquid"}, now=T0, urls=llama_urls(fake))
        assert [b.key for b in got.buys] == ["day:2026-10-08"] and got.cursor == "2026-10-08"  # a zero day buys nothing
        with pytest.raises(
            ValueError,
            match=UNKNOWN_SLUG,
        ):
            await poller.fetch(LLAMA, {"slug": "hyperliquid-perp"}, now=T0, urls=llama_urls(fake))
        for body, words in (
            (json.dumps(json.dumps({"totalDataChart": [], "totalAllTime": 1})), "JSON string"),
            ('{"totalAllTime": 1}', "no totalDataChart"),
            ('{"totalAllTime": 1, "totalDataChart": [[1791417601, 5]]}', "not a UTC midnight"),
            ('{"totalAllTime": 1, "totalDataChart": [[1791417600, 5], [1791417600, 6]]}', "a second time"),
        ):
            fake.faults = [malformed(body)]
            with pytest.raises(ValueError, match=words):
                await poller.fetch(LLAMA, {"slug": "hyperliquid"}, now=T0, urls=llama_urls(fake))
        fake.faults = [rate_limited("Thu, 01 Jan 2099 00:00:00 GMT")]
        with pytest.raises(RateLimited):
            await poller.fetch(LLAMA, {"slug": "hyperliquid"}, now=T0, urls=llama_urls(fake))
    with pytest.raises(ValueError, match="slug must be a DefiLlama slug"):
        LLAMA.validate({"slug": "Hyper Liquid"})


# ---------------------------------------------------------------------------------------------------------
# The table of kinds
# ---------------------------------------------------------------------------------------------------------


def test_every_kind_has_a_source_and_an_unknown_kind_names_them() -> None:
    assert set(buyback_sources.SOURCES) == set(KINDS)
    for name, source in buyback_sources.SOURCES.items():
        assert source.kind == name
    with pytest.raises(ValueError, match="unknown kind 'binance'; the kinds are hyperliquid_spot_balance, aster"):
        buyback_sources.validate("binance", {})
    samples: dict[ProgrammeKind, dict[str, Any]] = {
        "hyperliquid_spot_balance": HL_PARAMS,
        "aster_chain_fills": ASTER_PARAMS,
        "evm_erc20_inflow": EVM_PARAMS,
        "lighter_account_trades": {},
        "defillama_holders_revenue": {"slug": "edgex"},
    }
    for name, params in samples.items():  # what validate returns is what a programme stores: it validates again
        once = buyback_sources.validate(name, params)
        assert buyback_sources.validate(name, once) == once
    kind: ProgrammeKind = "defillama_holders_revenue"
    assert buyback_sources.validate(kind, {"slug": "edgex"}) == {"slug": "edgex"}
    assert buyback_sources.DEFAULT_URLS == {
        "hyperliquid_info_url": "https://api.hyperliquid.xyz/info",
        "aster_chain_rpc_url": "https://tapi.asterdex.com/info",
        "ethereum_rpc_url": "https://ethereum.publicnode.com",
        "bsc_rpc_url": "https://bsc-dataseed.bnbchain.org",
        "arbitrum_rpc_url": "https://arb1.arbitrum.io/rpc",
        "lighter_explorer_url": "https://explorer.elliot.ai",
        "defillama_api_url": "https://api.llama.fi",
    }
