"""The buyback store's promises, on both engines: a replayed step counts nothing, a step is stored whole or
not at all, windows count what ended inside them with the exact sums, the bundled merge is idempotent and
keeps an operator's removal, the history survives a restart and `perpwatch db copy`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from perpwatch.buybacks import Buy, BuybackLedger, DayPoint, Fetched, Programme, ProgrammeHealth, RunningTotal, Snapshot
from perpwatch.clock import FrozenClock
from storage import Conflict, Engine, Store, open_engine
from storage.buybacks import BuybackRepo
from storage.copy import copy_database
from storage.engine import Params, Row, Tx

pytestmark = pytest.mark.engines

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

AF = Programme(
    id="hyperliquid-af",
    kind="hyperliquid_spot_balance",
    token="hyperliquid",
    symbol="HYPE",
    params={"user": "0xfefefefefefefefefefefefefefefefefefefefe", "token_index": 150},
    source="https://hyperliquid.gitbook.io/hyperliquid-docs/trading/fees",
    total_supply=Decimal("1000000000"),
    supply_source="https://example.org/hype-supply",
    milestone_tokens=Decimal("1000000"),
)
LLAMA = Programme(
    id="llama-hl",
    kind="defillama_holders_revenue",
    token="hyperliquid",
    symbol="HYPE",
    params={"slug": "hyperliquid", "share": Decimal("0.99")},
    source="https://api.llama.fi/summary/fees/hyperliquid",
)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
async def store(database_url: str, clock: FrozenClock) -> AsyncIterator[Store]:
    async with Store(database_url, clock=clock) as s:
        await s.buybacks.merge_bundled([AF, LLAMA])
        yield s


def buy(key: str, end: datetime, tokens: str | None, usd: str | None, *, span: timedelta = HOUR, **kw: Any) -> Buy:
    return Buy(
        key=key,
        start=end - span,
        end=end,
        tokens=None if tokens is None else Decimal(tokens),
        usd=None if usd is None else Decimal(usd),
        **kw,
    )


def step(*buys: Buy, cursor: Any = None, snapshot: Snapshot | None = None, **kw: Any) -> Fetched:
    return Fetched(buys=buys, cursor=cursor, snapshot=snapshot, **kw)


def by_window(totals: Sequence[Any]) -> dict[str, Any]:
    return {t.window: t for t in totals}


# --- recording ---------------------------------------------------------------------------------------------
async def test_a_replayed_step_counts_nothing(store: Store) -> None:
    fetched = step(
        buy("f1", NOW - HOUR, "10.5", "300"),
        buy("f2", NOW - 2 * HOUR, "0.25", "7.25"),
        buy("f1", NOW - HOUR, "999", "999"),  # the same key twice in a page: the first one counts
        cursor={"from_ms": 1764158400000, "tid": Decimal("12.50")},
    )
    assert await store.buybacks.record(AF.id, fetched, at=NOW) == 2
    assert await store.buybacks.record(AF.id, fetched, at=NOW + HOUR) == 0
    day = by_window(await store.buybacks.totals(AF.id, NOW))["24h"]
    assert (day.tokens, day.usd, day.buys) == (Decimal("10.75"), Decimal("307.25"), 2)
    assert await store.buybacks.cursor(AF.id) == {"from_ms": 1764158400000, "tid": Decimal("12.50")}
    more = step(buy("f2", NOW - 2 * HOUR, "0.25", "7.25"), buy("f3", NOW, "1", "30"), cursor=[3])
    assert await store.buybacks.record(AF.id, more, at=NOW) == 1
    assert await store.buybacks.cumulative_total(AF.id) == (Decimal("11.75"), Decimal("337.25"))


async def test_a_page_larger_than_one_statement_is_counted_whole(store: Store) -> None:
    many = [buy(f"k{i}", NOW - timedelta(seconds=i), "0.00000001", "0.000001") for i in range(1234)]
    assert await store.buybacks.record(AF.id, step(*many), at=NOW) == 1234
    assert await store.buybacks.record(AF.id, step(*many[1000:], buy("new", NOW, "1", "1")), at=NOW) == 1
    assert await store.buybacks.cumulative_total(AF.id) == (Decimal("1.00001234"), Decimal("1.001234"))


async def test_amounts_are_summed_exactly_and_truncated_past_their_places(store: Store) -> None:
    buys = [buy(f"t{i}", NOW - i * HOUR, "0.1", "0.1") for i in range(3)]
    buys.append(buy("fine", NOW, "1.123456789999", "2.0000019"))  # kept to 10^-8 tokens and 10^-6 USD
    buys.append(buy("neg", NOW, "-0.000000019", "-0.0000019"))  # toward zero
    await store.buybacks.record(AF.id, step(*buys), at=NOW)
    assert await store.buybacks.cumulative_total(AF.id) == (Decimal("1.42345677"), Decimal("2.300000"))


async def test_a_step_that_cannot_be_stored_leaves_nothing(store: Store) -> None:
    await store.buybacks.record(AF.id, step(buy("old", NOW - DAY, "1", "1"), cursor="c1"), at=NOW - DAY)
    before = await _everything(store.buybacks)
    huge = step(
        buy("ok", NOW, "5", "5"),
        buy("huge", NOW, "100000000000", "1"),  # 10^11 tokens in one buy: past the 64-bit scaled range
        cursor="c2",
        snapshot=Snapshot(taken_at=NOW, balance=Decimal(5), cost_usd=None),
    )
    with pytest.raises(ValueError, match="huge: tokens 100000000000 is too large"):
        await store.buybacks.record(AF.id, huge, at=NOW)
    with pytest.raises(ValueError, match=r"usd 1E\+100 is too large"):
        await store.buybacks.record(AF.id, step(buy("e100", NOW, "1", "1E+100")), at=NOW)
    with pytest.raises(ValueError, match="NaN is not a number"):
        await store.buybacks.record(AF.id, step(buy("nan", NOW, "NaN", "1")), at=NOW)
    with pytest.raises(LookupError, match="no buyback programme nobody"):
        await store.buybacks.record("nobody", step(buy("x", NOW, "1", "1")), at=NOW)
    assert await _everything(store.buybacks) == before


async def test_a_step_that_fails_inside_its_transaction_is_rolled_back_whole(store: Store) -> None:
    """The cursor is written last: a fault there must take the buys and the snapshot already inserted with it."""
    await store.buybacks.record(AF.id, step(buy("old", NOW - DAY, "1", "1"), cursor="c1"), at=NOW - DAY)
    before = await _everything(store.buybacks)
    faulty = BuybackRepo(cast(Engine, _FailingAt(store.db, "INSERT INTO buyback_sources")), clock=store.clock)
    fetched = step(
        buy("new", NOW, "5", "5"),
        cursor="c2",
        snapshot=Snapshot(taken_at=NOW, balance=Decimal(5), cost_usd=Decimal(1)),
        running_total=RunningTotal(tokens=Decimal(5), usd=None, source="fund", as_of=NOW),
    )
    with pytest.raises(RuntimeError, match="injected fault"):
        await faulty.record(AF.id, fetched, at=NOW)
    assert await _everything(store.buybacks) == before
    assert await store.buybacks.record(AF.id, fetched, at=NOW) == 1  # and the same step stores whole later


class _FailingAt:
    """An engine whose transactions fail at the first statement starting with `sql`."""

    def __init__(self, db: Engine, sql: str) -> None:
        self.db, self.sql = db, sql

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.db.transaction() as tx:
            yield _FailingTx(tx, self.sql)


class _FailingTx(Tx):
    def __init__(self, tx: Tx, sql: str) -> None:
        self.tx, self.sql = tx, sql

    def _check(self, sql: str) -> None:
        if sql.startswith(self.sql):
            raise RuntimeError("injected fault")

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check(sql)
        return await self.tx.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._check(sql)
        await self.tx.executemany(sql, rows)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        self._check(sql)
        return await self.tx.fetch(sql, params)

    async def serialize(self, name: str) -> None:
        await self.tx.serialize(name)


async def _everything(repo: BuybackRepo) -> tuple[Any, ...]:
    """What the repository tells of the programme AF: a step stored in part would change some of it."""
    return (
        await repo.cursor(AF.id),
        await repo.days(AF.id),
        await repo.cumulative_total(AF.id),
        await repo.last_snapshot(AF.id),
        await repo.snapshot_count(AF.id),
        await repo.health(AF.id),
        await repo.running_total(AF.id),
        await repo.totals(AF.id, NOW + DAY),
    )


# --- windows -----------------------------------------------------------------------------------------------
async def test_windows_count_the_buys_that_ended_inside_them(store: Store) -> None:
    await store.buybacks.record(
        AF.id,
        step(
            buy("1h", NOW - HOUR, "1", "10", span=2 * HOUR),
            buy("edge", NOW - DAY, "2", "20"),  # ended exactly a day ago: not in the last 24 h
            buy("3d", NOW - 3 * DAY, "4", "40", basis="estimated"),
            buy("20d", NOW - 20 * DAY, "8", "80"),
            buy("60d", NOW - 60 * DAY, "16", "160", span=DAY),
            buy("later", NOW + HOUR, "32", "320"),  # after `now`: in no window of it
        ),
        at=NOW,
    )
    totals = await store.buybacks.totals(AF.id, NOW)
    assert [t.window for t in totals] == ["24h", "7d", "30d", "all"]
    got = {t.window: (t.tokens, t.usd, t.buys, t.covered_from, t.estimated, t.tokens_known) for t in totals}
    assert got == {
        "24h": (Decimal(1), Decimal(10), 1, NOW - 3 * HOUR, False, True),
        "7d": (Decimal(7), Decimal(70), 3, NOW - 3 * DAY - HOUR, True, True),
        "30d": (Decimal(15), Decimal(150), 4, NOW - 20 * DAY - HOUR, True, True),
        "all": (Decimal(31), Decimal(310), 5, NOW - 61 * DAY, True, True),
    }
    assert totals[0].price == Decimal(10)
    empty = by_window(await store.buybacks.totals(AF.id, NOW - 90 * DAY))["all"]
    assert (empty.tokens, empty.usd, empty.buys, empty.covered_from, empty.gap_s) == (0, 0, 0, None, None)


async def test_a_source_without_token_figures_says_so(store: Store) -> None:
    await store.buybacks.record(
        LLAMA.id,
        step(
            buy("2026-11-25", NOW - HOUR, None, "1708227.5", span=DAY, basis="estimated"),
            buy("2026-11-01", NOW - 25 * DAY, None, "1000000", span=DAY, basis="estimated"),
        ),
        at=NOW,
    )
    day, week, month, _ = await store.buybacks.totals(LLAMA.id, NOW)
    assert (day.tokens_known, day.usd, day.estimated, day.price) == (False, Decimal("1708227.5"), True, None)
    assert week.buys == 1 and (month.usd, month.buys) == (Decimal("2708227.5"), 2)
    assert await store.buybacks.cumulative_total(LLAMA.id) == (None, Decimal("2708227.5"))
    assert await store.buybacks.days(LLAMA.id) == [
        DayPoint("2026-11-01", Decimal(0), Decimal(1000000)),
        DayPoint("2026-11-26", Decimal(0), Decimal("1708227.5")),
    ]


async def test_days_group_buys_by_the_utc_day_they_ended(store: Store) -> None:
    late = datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC)
    await store.buybacks.record(
        AF.id,
        step(
            buy("a", late, "1.5", "30"),
            buy("b", late + timedelta(seconds=2), "2", "40"),  # the next UTC day
            buy("c", datetime(2026, 11, 25, 1, 0, tzinfo=UTC), "0.5", "10"),
            buy("d", datetime(2026, 11, 20, 8, 0, tzinfo=UTC), "3", "60"),
        ),
        at=NOW,
    )
    assert await store.buybacks.days(AF.id) == [
        DayPoint("2026-11-20", Decimal(3), Decimal(60)),
        DayPoint("2026-11-24", Decimal("1.5"), Decimal(30)),
        DayPoint("2026-11-25", Decimal("2.5"), Decimal(50)),
    ]


async def test_a_window_reports_the_longest_snapshot_gap_inside_it(store: Store) -> None:
    gaps = [(NOW - 40 * DAY, 90000.0), (NOW - 10 * DAY, 7200.5), (NOW - 2 * DAY, 3600.0), (NOW - HOUR, None)]
    balance = Decimal(100)
    for taken_at, gap in gaps:
        balance += 1
        snapshot = Snapshot(taken_at=taken_at, balance=balance, cost_usd=balance * 30, gap_s=gap)
        await store.buybacks.record(AF.id, step(buy(str(taken_at), taken_at, "1", "30"), snapshot=snapshot), at=NOW)
    got = {t.window: t.gap_s for t in await store.buybacks.totals(AF.id, NOW)}
    assert got == {"24h": None, "7d": 3600.0, "30d": 7200.5, "all": 90000.0}
    assert await store.buybacks.snapshot_count(AF.id) == 4
    assert await store.buybacks.last_snapshot(AF.id) == Snapshot(NOW - HOUR, Decimal(104), Decimal(3120), None)


# --- programmes ----------------------------------------------------------------------------------------------
async def test_the_bundled_merge_is_idempotent_and_keeps_a_removal(store: Store) -> None:
    repo = store.buybacks
    assert [p.id for p in await repo.programmes()] == ["hyperliquid-af", "llama-hl"]
    assert await repo.programme(AF.id) == AF
    assert await repo.merge_bundled([AF, LLAMA]) == (0, 0)
    assert await repo.merge_bundled([LLAMA, AF]) == (0, 0)  # order and parameter order do not matter
    reordered = replace(LLAMA, params={"share": Decimal("0.99"), "slug": "hyperliquid"})
    assert await repo.merge_bundled([reordered]) == (0, 0)

    await repo.record(AF.id, step(buy("kept", NOW, "7", "70")), at=NOW)
    assert await repo.remove(AF.id) is True
    assert await repo.remove(AF.id) is False
    assert [p.id for p in await repo.programmes()] == ["llama-hl"]
    assert await repo.programme(AF.id) is None and await repo.programme(AF.id, include_removed=True) == AF
    changed = replace(AF, note="new in this release", milestone_tokens=Decimal(500000))
    assert await repo.merge_bundled([changed, LLAMA]) == (0, 1)  # its definition follows the release …
    assert await repo.merge_bundled([changed, LLAMA]) == (0, 0)
    assert [p.id for p in await repo.programmes()] == ["llama-hl"]  # … and it stays removed
    with pytest.raises(Conflict, match="removed: restore it"):
        await repo.add(replace(AF, origin="chat"))
    assert await repo.restore(AF.id) is True and await repo.restore(AF.id) is False
    assert await repo.programme(AF.id) == changed
    assert await repo.cumulative_total(AF.id) == (Decimal(7), Decimal(70))  # with its history


async def test_a_programme_a_chat_added_is_never_touched_by_the_merge(store: Store) -> None:
    repo = store.buybacks
    mine = Programme(
        id="edgex",
        kind="evm_erc20_inflow",
        token="ethereum:0xb0076de78dc50581770bba1d211ddc0ad4f2a241",
        symbol="EDGE",
        params={"wallet": "0x221e7fca09589ab2d7dc552ee72acf1a2ff10048"},
        source="https://example.org/edgex",
    )
    added = await repo.add(mine)
    assert added.origin == "chat" and added.params == mine.params
    with pytest.raises(Conflict, match="exists already"):
        await repo.add(mine)
    with pytest.raises(Conflict, match="exists already"):
        await repo.add(replace(AF, origin="chat"))
    bundled = replace(mine, params={"wallet": "0x" + "11" * 20}, origin="bundled")
    assert await repo.merge_bundled([AF, LLAMA, bundled]) == (0, 0)
    assert await repo.programme("edgex") == added
    with pytest.raises(ValueError, match="not a programme id"):
        await repo.add(replace(mine, id="Bad Id"))


async def test_removing_a_chat_programme_deletes_its_history(store: Store) -> None:
    repo = store.buybacks
    mine = replace(AF, id="my-fund", origin="chat")
    await repo.add(mine)
    snapshot = Snapshot(taken_at=NOW, balance=Decimal(3), cost_usd=None)
    await repo.record("my-fund", step(buy("b", NOW, "3", "9"), cursor=1, snapshot=snapshot), at=NOW)
    await repo.failed("my-fund", "boom", at=NOW)
    assert await repo.remove("my-fund") is True
    assert await repo.programme("my-fund", include_removed=True) is None
    await repo.add(mine)  # the id is free again, and starts with no history
    assert await repo.cursor("my-fund") is None and await repo.days("my-fund") == []
    assert await repo.snapshot_count("my-fund") == 0 and await repo.health("my-fund") == ProgrammeHealth()
    assert await repo.remove("nobody") is False


# --- health ------------------------------------------------------------------------------------------------
async def test_health_follows_failures_and_the_next_good_step(store: Store) -> None:
    repo = store.buybacks
    assert await repo.health(AF.id) == ProgrammeHealth()
    await repo.failed(AF.id, "HTTP 502", at=NOW - 2 * HOUR)
    await repo.failed(AF.id, "timeout", at=NOW - HOUR)
    assert await repo.health(AF.id) == ProgrammeHealth(failing_since=NOW - 2 * HOUR, last_error="timeout")
    assert await repo.cursor(AF.id) is None

    total = RunningTotal(tokens=Decimal("47942118.5447392315"), usd=Decimal("1359925585.34"), source="AF", as_of=NOW)
    first = step(buy("b1", NOW - HOUR, "1", "30", span=HOUR), cursor="c1", running_total=total)
    await repo.record(AF.id, first, at=NOW)
    assert await repo.health(AF.id) == ProgrammeHealth(
        last_good_at=NOW, failing_since=None, last_error="timeout", tracked_since=NOW - 2 * HOUR
    )
    assert await repo.running_total(AF.id) == total
    older = Snapshot(taken_at=NOW - 5 * HOUR, balance=Decimal(1), cost_usd=None)
    await repo.record(AF.id, step(cursor="c2", snapshot=older), at=NOW + HOUR)  # no total this time: kept
    assert (await repo.health(AF.id)).tracked_since == NOW - 5 * HOUR  # a snapshot starts a period too
    await repo.record(AF.id, step(buy("b2", NOW, "1", "30", span=HOUR)), at=NOW + 2 * HOUR)  # later: kept
    assert (await repo.health(AF.id)).tracked_since == NOW - 5 * HOUR
    await repo.record(AF.id, step(buy("b3", NOW, "1", "30", span=DAY)), at=NOW + 2 * HOUR)
    health = await repo.health(AF.id)
    assert (health.tracked_since, health.last_good_at) == (NOW - DAY, NOW + 2 * HOUR)
    assert await repo.running_total(AF.id) == total
    await repo.failed(AF.id, "HTTP 429", at=NOW + 3 * HOUR)
    assert (await repo.health(AF.id)).failing_since == NOW + 3 * HOUR
    with pytest.raises(LookupError):
        await repo.failed("nobody", "x", at=NOW)


# --- restart and copy --------------------------------------------------------------------------------------
async def _history(repo: BuybackRepo) -> None:
    """A few days of both programmes, as their sources would have stored them."""
    for i in range(5):
        at = NOW - (4 - i) * DAY
        snapshot = Snapshot(taken_at=at, balance=Decimal(100 + i), cost_usd=Decimal("28.37") * (100 + i))
        fetched = step(
            buy(f"af{i}", at, str(Decimal("1.00000001") * i), str(30 * i), span=DAY),
            cursor={"day": i},
            snapshot=snapshot,
            running_total=RunningTotal(tokens=Decimal(100 + i), usd=None, source="AF balance", as_of=at),
        )
        await repo.record(AF.id, fetched, at=at)
        await repo.record(LLAMA.id, step(buy(f"d{i}", at, None, f"{i}.5", basis="estimated"), cursor=i), at=at)
    await repo.failed(LLAMA.id, "HTTP 500", at=NOW)


async def _seen(repo: BuybackRepo) -> dict[str, Any]:
    seen: dict[str, Any] = {"programmes": await repo.programmes()}
    for p in (AF, LLAMA):
        seen[p.id] = (
            await repo.cursor(p.id),
            await repo.totals(p.id, NOW),
            await repo.days(p.id),
            await repo.cumulative_total(p.id),
            await repo.last_snapshot(p.id),
            await repo.snapshot_count(p.id),
            await repo.health(p.id),
            await repo.running_total(p.id),
        )
    return seen


async def test_the_history_survives_a_restart(database_url: str, clock: FrozenClock) -> None:
    async with Store(database_url, clock=clock) as store:
        await store.buybacks.merge_bundled([AF, LLAMA])
        await _history(store.buybacks)
        before = await _seen(store.buybacks)
    async with Store(database_url, clock=clock) as store:
        ledger: BuybackLedger = store.buybacks  # the sources' poller sees the store through the protocol
        assert await ledger.cursor(AF.id) == {"day": 4}
        assert await _seen(store.buybacks) == before
        assert await store.buybacks.merge_bundled([AF, LLAMA]) == (0, 0)
        assert await store.buybacks.cursor(AF.id) == {"day": 4}
        assert before[AF.id][5] == 5 and len(before[LLAMA.id][2]) == 5


async def test_db_copy_carries_the_buyback_tables(database_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'bot.db'}"
    async with Store(source_url, clock=clock) as store:
        await store.buybacks.merge_bundled([AF, LLAMA])
        await store.buybacks.remove(LLAMA.id)
        await _history(store.buybacks)
        await store.buybacks.restore(LLAMA.id)
        before = await _seen(store.buybacks)
    source, target = open_engine(source_url), open_engine(database_url)
    await source.open(migrate=False)
    await target.open(migrate=False)
    try:
        report = await copy_database(source, target)
    finally:
        await target.close()
        await source.close()
    assert {t: n for t, n in report.rows.items() if t.startswith("buyback_")} == {
        "buyback_programmes": 2,
        "buyback_buys": 10,
        "buyback_snapshots": 5,
        "buyback_sources": 2,
    }
    async with Store(database_url, clock=clock) as copied:
        assert await _seen(copied.buybacks) == before
        assert await copied.buybacks.record(AF.id, step(buy("af4", NOW, "1", "1")), at=NOW) == 0


async def test_pruning_the_event_log_keeps_the_buyback_history(store: Store) -> None:
    old = NOW - 400 * DAY
    snapshot = Snapshot(taken_at=old, balance=Decimal(1), cost_usd=None)
    await store.buybacks.record(AF.id, step(buy("old", old, "1", "1"), snapshot=snapshot), at=old)
    await store.outbox.prune(before=NOW)
    assert await store.buybacks.snapshot_count(AF.id) == 1
    assert await store.buybacks.days(AF.id) == [DayPoint(old.date().isoformat(), Decimal(1), Decimal(1))]
