"""`perpwatch backfill buybacks` (bot/backfill.py) on the real store and the loopback sources: plain lines in a
pipe and a bar on a terminal with pages, buys and how far the cursor got; a rerun changes nothing; a run
interrupted mid-history goes on from its cursor and counts nothing twice; a source that keeps failing and an
unknown programme each end the run with one line."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from bot.backfill import BackfillError, backfill_buybacks
from bot.buyback_programmes import bundled, programme_from
from bot.cli import main
from bot.progress import CLEAR_LINE
from perpwatch.buybacks import Programme
from perpwatch.clock import FrozenClock
from storage import Store
from tests.fakes.buyback_sources import (
    FakeAsterChain,
    FakeEvmNode,
    FakeLighterExplorer,
    Seen,
    rate_limited,
    server_error,
)

pytestmark = pytest.mark.engines

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WALLET = "0xa0edbabcb48034e368de286b49f9603c7afa1b60"
EDGE = "0xb0076de78dc50581770bba1d211ddc0ad4f2a241"
EDGE_WALLET = "0x221e7fca09589ab2d7dc552ee72acf1a2ff10048"


class SteppingClock(FrozenClock):
    """Frozen wall time; a sleep (a retry's delay, a budget's wait) moves monotonic time on at once."""

    async def sleep(self, seconds: float) -> None:
        self._mono += max(seconds, 0.0)
        await asyncio.sleep(0)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _aster(days: int) -> Programme:
    base = next(p for p in bundled()[0] if p.id == "aster")
    return programme_from(
        {
            "id": "aster",
            "kind": base.kind,
            "token": base.token,
            "symbol": base.symbol,
            "source": base.source,
            "params": {**base.params, "start_ms": int((T0 - timedelta(days=days)).timestamp() * 1000)},
        }
    )


def _edge() -> Programme:
    return programme_from(
        {
            "id": "edge",
            "kind": "evm_erc20_inflow",
            "token": f"ethereum:{EDGE}",
            "symbol": "EDGE",
            "source": "https://example.org/edge-buybacks",
            "params": {
                "rpc": "ethereum_rpc_url",
                "token": EDGE,
                "wallet": EDGE_WALLET,
                "decimals": 18,
                "from_block": 100,
                "chunk": 200,
                "confirmations": 0,
            },
        }
    )


def _fills(aster: FakeAsterChain, days: int) -> None:
    """One buy of 10 tokens at 0.50 each six hours over the last `days` days."""
    for hours in range(6, days * 24, 6):
        aster.fill(WALLET, int((T0 - timedelta(hours=hours)).timestamp() * 1000), "0.50", "10")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with Store(database_url, clock=FrozenClock(T0)) as s:
        yield s


async def _all_time(store: Store, pid: str) -> tuple[Decimal, Decimal | None, int]:
    [total] = [t for t in await store.buybacks.totals(pid, T0) if t.window == "all"]
    return total.tokens, total.usd, total.buys


async def test_plain_lines_show_pages_buys_and_the_cursor_and_a_rerun_changes_nothing(store: Store) -> None:
    await store.buybacks.merge_bundled([_aster(5)])
    async with FakeAsterChain() as aster:
        _fills(aster, 5)
        urls = {"aster_chain_rpc_url": aster.url("/info")}
        out = io.StringIO()
        [done] = await backfill_buybacks(store.buybacks, urls, out, clock=SteppingClock(T0), tty=False)
        assert done.buys == 19 and done.pages == len(aster.seen) > 1
        lines = out.getvalue().splitlines()
        assert lines[0].startswith("aster: 0 of 5 days (0%); 1 page; ")  # the first page always shows
        assert lines[-2].startswith(f"aster: 5 days; {done.pages} pages; 19 new buys stored; cursor at 2026-12-02 ")
        assert lines[-1] == "backfill done: 1 programme, 19 new buys stored"
        assert "\r" not in out.getvalue()
        assert await _all_time(store, "aster") == (Decimal(190), Decimal("95.00"), 19)

        asked = len(aster.seen)
        again = io.StringIO()
        [rerun] = await backfill_buybacks(store.buybacks, urls, again, clock=SteppingClock(T0), tty=False)
        assert (rerun.pages, rerun.buys) == (1, 0)
        assert len(aster.seen) == asked  # already at the settled edge: not even a request
        assert again.getvalue().splitlines() == [
            "aster: 5 days; 1 page; 0 new buys stored; cursor at 2026-12-02 11:59 UTC",
            "backfill done: 1 programme, 0 new buys stored",
        ]
        assert await _all_time(store, "aster") == (Decimal(190), Decimal("95.00"), 19)


async def test_a_lighter_history_scan_shows_its_offset_and_only_the_programmes_named_are_read(store: Store) -> None:
    lighter = next(p for p in bundled()[0] if p.id == "lighter-treasury")
    await store.buybacks.merge_bundled([lighter, _aster(2)])
    async with FakeLighterExplorer() as explorer:
        for i in range(1200):  # oldest first: the treasury (account 0) buys LIT as taker of a bid
            at = (T0 - timedelta(hours=1200 - i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            explorer.trade(at, "2.5", "10", maker=77, taker=0, is_taker_ask=0)
        out = io.StringIO()
        [done] = await backfill_buybacks(
            store.buybacks,
            {"lighter_explorer_url": explorer.url("")},
            out,
            ids=["lighter-treasury"],
            clock=SteppingClock(T0),
        )
    assert (done.pages, done.buys) == (3, 1200)  # five requests of 100 logs a step
    assert out.getvalue().splitlines() == [
        "lighter-treasury: 1 page; 500 new buys stored; history scan at offset 500",
        "lighter-treasury: 3 pages; 1,200 new buys stored; counted to 2026-12-02T11:00:00+00:00",
        "backfill done: 1 programme, 1,200 new buys stored",
    ]
    assert await store.buybacks.cursor("aster") is None  # not named: not read


async def test_a_bar_on_a_terminal_counts_blocks_to_the_head(store: Store) -> None:
    await store.buybacks.merge_bundled([_edge()])
    async with FakeEvmNode(head=1100) as node:
        for block in (150, 480, 990):
            node.transfer(EDGE, EDGE_WALLET, block, 10**18)
        out = Terminal()
        [done] = await backfill_buybacks(
            store.buybacks, {"ethereum_rpc_url": node.url("/")}, out, clock=SteppingClock(T0), tty=None
        )
    assert (done.pages, done.buys) == (6, 3)  # blocks 100-1100, 200 a page
    text, end = out.getvalue(), "backfill done: 1 programme, 3 new buys stored\n"
    assert text.count(CLEAR_LINE) >= 1 and "[" in text and "blocks" in text
    finished = text.split(CLEAR_LINE)[-1].splitlines()[0]
    assert finished.startswith("edge [") and "100%" in finished and "1,001 blocks" in finished
    assert text.endswith("\nedge: 6 pages; 3 new buys stored; cursor at block 1,100 of head 1,100\n" + end)
    tokens, _usd, buys = await _all_time(store, "edge")
    assert (tokens, buys) == (Decimal(3), 3)


async def test_an_interrupted_run_goes_on_from_its_cursor_and_counts_nothing_twice(store: Store) -> None:
    await store.buybacks.merge_bundled([_aster(5)])
    async with FakeAsterChain() as aster:
        _fills(aster, 5)
        urls = {"aster_chain_rpc_url": aster.url("/info")}
        run = asyncio.create_task(backfill_buybacks(store.buybacks, urls, io.StringIO(), clock=SteppingClock(T0)))

        def interrupt(seen: Seen) -> None:  # Ctrl-C, as asyncio.run delivers it: the task is cancelled
            if len(aster.seen) == 3:
                run.cancel()

        aster.before = interrupt
        with pytest.raises(asyncio.CancelledError):
            await run
        aster.before = None
        cursor = await store.buybacks.cursor("aster")
        assert cursor is not None
        stored = (await _all_time(store, "aster"))[2]
        assert 0 < stored < 19

        asked = len(aster.seen)
        [rest] = await backfill_buybacks(store.buybacks, urls, io.StringIO(), clock=SteppingClock(T0))
        assert aster.windows()[asked][0] == cursor["from_ms"]  # from the stored cursor, not the start
        assert rest.buys == 19 - stored
        assert await _all_time(store, "aster") == (Decimal(190), Decimal("95.00"), 19)


async def test_a_source_that_keeps_failing_ends_the_run_with_one_line(store: Store) -> None:
    await store.buybacks.merge_bundled([_aster(2), _edge()])
    async with FakeAsterChain(faults=[server_error()] * 3) as aster, FakeEvmNode(head=300) as node:
        urls = {"aster_chain_rpc_url": aster.url("/info"), "ethereum_rpc_url": node.url("/")}
        out = io.StringIO()
        with pytest.raises(BackfillError) as failed:
            await backfill_buybacks(
                store.buybacks, urls, out, ids=["aster", "edge"], clock=SteppingClock(T0), retries=3
            )
        assert len(aster.seen) == 3
        assert await store.buybacks.cursor("edge") == {"block": 300, "chunk": 200, "decimals": 18}  # still read
        assert out.getvalue().splitlines()[-1] == "backfill done: 1 programme, 0 new buys stored"
        message = str(failed.value)
        assert message.startswith("aster: HttpStatusError: HTTP 500 from ") and "failed 3 times in a row" in message
        assert "\n" not in message
        assert out.getvalue().count("retrying in") == 2  # 10 s, then 20 s
        health = await store.buybacks.health("aster")
        assert health.failing_since == T0 and "HTTP 500" in (health.last_error or "")

        aster.faults.append(server_error())  # one failure among successes is retried and costs nothing
        [done] = await backfill_buybacks(
            store.buybacks, urls, io.StringIO(), ids=["aster"], clock=SteppingClock(T0), retries=3
        )
        assert done.pages > 1 and (await store.buybacks.health("aster")).failing_since is None


async def test_a_429_pauses_the_host_for_what_the_venue_said_and_the_run_goes_on(store: Store) -> None:
    await store.buybacks.merge_bundled([_aster(1)])
    async with FakeAsterChain(faults=[rate_limited("45")]) as aster:
        _fills(aster, 1)
        clock = SteppingClock(T0)
        started = clock.monotonic()
        out = io.StringIO()
        [done] = await backfill_buybacks(
            store.buybacks, {"aster_chain_rpc_url": aster.url("/info")}, out, clock=clock, retry_initial_s=1.0
        )
    assert done.buys == 3 and "host paused for 45s; retrying in 1s" in out.getvalue()
    assert clock.monotonic() - started >= 45  # the retry waited out the pause in the host's budget


async def test_an_unknown_programme_is_named_with_those_the_store_has(store: Store) -> None:
    await store.buybacks.merge_bundled([_aster(2)])
    with pytest.raises(BackfillError, match=r"^unknown programme nope; the store has aster$"):
        await backfill_buybacks(store.buybacks, {}, io.StringIO(), ids=["aster", "nope"])


def test_the_command_exits_1_with_one_line_for_an_unknown_programme(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("PERPWATCH_DATABASE_URL", database_url)
    assert main(["backfill", "buybacks", "no-such-programme"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("perpwatch:")]  # beside logs
    assert len(err) == 1 and err[0].startswith("perpwatch: unknown programme no-such-programme; the store has ")
    assert "aster" in err[0]  # the bundled programmes were merged as the bot's start merges them
