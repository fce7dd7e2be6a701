"""The node-fills reader against the documented line shape, and the tailer against files that grow, rotate,
shrink and are replaced while a sink takes or refuses what is read. Time moves only on a frozen clock."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.clock import FrozenClock
from perpwatch.events import Event, PositionSide, Topic, Venue
from tests.factories import liq
from watchers.base import SinkUnavailable, WatcherHealth, WatcherState
from watchers.hyperliquid_node import (
    BORROW_LIQUIDATION,
    LINE_TOO_LONG,
    NO_LIQUIDATED_USER,
    SIDE_MISMATCH,
    UNREADABLE_LINE,
    Cursor,
    HyperliquidNodeWatcher,
    MemoryCursorStore,
    NodeFillsTailer,
    block_time,
    hour_files,
    parse_line,
)
from watchers.validate import BAD_FIGURE


def note(event: Event) -> str:
    text = liq(event).note
    assert text is not None
    return text


SAMPLES = Path(__file__).parent / "node_fills" / "sample_blocks.jsonl"

VICTIM = "0x5ef843ccf26810073ee689a954f6d05f5b48fccb"
MAKER = "0xa775d1bd91ee2cc4cae6113e5fd9c0c17b355277"
VAULT = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"
WINNER = "0xe92d2041199b18f611b137457f3acee8bedb22d3"

CLOCK_START = datetime(2026, 7, 1, tzinfo=UTC)
T0_MS = int(CLOCK_START.timestamp() * 1000) - 60_000
BLOCK_TIME = "2026-06-30T23:59:00.000000000"


def fill(**fields: Any) -> dict[str, Any]:
    """A fill in the API fill shape (docs WsFill), a liquidated long's own by default."""
    base: dict[str, Any] = {
        "coin": "BTC",
        "px": "100000.0",
        "sz": "0.5",
        "side": "A",
        "time": T0_MS,
        "startPosition": "0.5",
        "dir": "Liquidated Cross Long",
        "closedPnl": "-50.0",
        "hash": "0x" + "ab" * 32,
        "oid": 10,
        "crossed": True,
        "fee": "0.0",
        "tid": 1,
        "liquidation": {"liquidatedUser": VICTIM, "markPx": "99990.0", "method": "market"},
        "feeToken": "USDC",
    }
    base.update(fields)
    return base


def maker_fill(**fields: Any) -> dict[str, Any]:
    """The book's side of the same trade: it carries the same `liquidation` object, naming the victim."""
    return fill(side="B", dir="Open Long", startPosition="0.0", crossed=False, oid=20, **fields)


def block(number: int, events: Sequence[Sequence[Any]], time: str = BLOCK_TIME) -> dict[str, Any]:
    return {"local_time": time, "block_time": time, "block_number": number, "events": [list(e) for e in events]}


def liquidation_block(number: int, *, tid: int, **fields: Any) -> dict[str, Any]:
    return block(number, [[MAKER, maker_fill(tid=tid, **fields)], [VICTIM, fill(tid=tid, **fields)]])


def quiet_block(number: int, time: str = BLOCK_TIME) -> dict[str, Any]:
    plain = fill(dir="Open Long", side="B", startPosition="0.0")
    del plain["liquidation"]
    return block(number, [[MAKER, plain]], time)


def encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def events_of(record: dict[str, Any]) -> tuple[Event, ...]:
    return parse_line(encode(record).rstrip(b"\n")).events


# ---------------------------------------------------------------------------------------------------------
# One line
# ---------------------------------------------------------------------------------------------------------


def test_the_samples_read_as_documented() -> None:
    blocks = [parse_line(line.rstrip(b"\n")) for line in SAMPLES.read_bytes().splitlines(keepends=True)]

    assert [b.number for b in blocks] == [676607012, 1052527672, 880000001, 758800641]
    assert all(not b.refused for b in blocks)
    assert blocks[0].events == ()
    assert blocks[0].time == datetime(2025, 7, 27, 8, 50, 10, 273720, tzinfo=UTC)

    [market] = blocks[1].events
    assert market.key == f"hyperliquid:liquidation:SOL:481702553777:340554939716632:{VICTIM}"
    assert (market.topic, market.source, market.venue, market.symbol) == (
        Topic.LIQUIDATION,
        "hyperliquid_node",
        Venue.HYPERLIQUID,
        "SOL",
    )
    # Two crossings of one liquidation order (one `oid`, two makers) are one liquidation.
    assert liq(market).side is PositionSide.SHORT
    assert liq(market).size == Decimal("1.58")
    assert liq(market).notional_usd == Decimal("0.58") * Decimal("72.153") + Decimal("72.16")
    assert market.usd == liq(market).notional_usd
    assert liq(market).price == liq(market).notional_usd / Decimal("1.58")
    assert liq(market).account == VICTIM
    assert market.subject == VICTIM
    assert market.occurred_at == datetime(2026, 6, 28, 8, 43, 53, 257000, tzinfo=UTC)
    assert market.link == "https://app.hyperliquid.xyz/trade/SOL"
    assert note(market).startswith("Market liquidation")
    assert "72.149" in note(market)

    [backstop] = blocks[2].events
    assert liq(backstop).side is PositionSide.LONG
    assert liq(backstop).account == "0x7ba283114573bde6fd304ad7b188a763e5402a52"
    assert liq(backstop).price == Decimal("67.5499")
    assert note(backstop).startswith("Backstop liquidation")

    adl, bankrupt = blocks[3].events
    assert adl.key.startswith("hyperliquid:adl:AVAX:194018286846:")
    assert liq(adl).account == WINNER
    assert liq(adl).side is PositionSide.SHORT  # B closes a short; startPosition -28.53 agrees
    assert liq(adl).cause == "adl" and liq(market).cause == "liquidation"
    assert (liq(market).method, liq(backstop).method) == ("market", "backstop")
    assert note(adl).startswith("Auto-deleveraged (ADL), not liquidated")
    assert VAULT in note(adl)
    assert bankrupt.key.startswith("hyperliquid:liquidation:AVAX:")
    assert liq(bankrupt).account == VAULT
    assert "closed by auto-deleveraging" in note(bankrupt)


def test_counterparties_are_never_reported() -> None:
    """The maker's fill and the liquidator vault's carry the same object, and the vault's even names the
    liquidated side in its `dir`: only `user == liquidatedUser` makes a fill someone's liquidation."""
    vault_fill = fill(side="B", dir="Liquidated Cross Long", startPosition="0.0", oid=30)
    events = events_of(block(1, [[MAKER, maker_fill()], [VAULT, vault_fill], [VICTIM, fill()]]))

    assert [liq(e).account for e in events] == [VICTIM]
    assert all(MAKER not in e.key and VAULT not in e.key for e in events)


def test_adl_is_reported_as_adl_never_as_the_counterpartys_liquidation() -> None:
    adl = fill(dir="Auto-Deleveraging", side="B", startPosition="-0.5", oid=40)
    [event] = events_of(block(1, [[WINNER, adl]]))

    assert event.key == f"hyperliquid:adl:BTC:40:1:{WINNER}"
    assert liq(event).account == WINNER
    assert liq(event).side is PositionSide.SHORT
    assert note(event).startswith("Auto-deleveraged (ADL), not liquidated")
    assert not any(e.key.startswith("hyperliquid:liquidation:") for e in events_of(block(1, [[WINNER, adl]])))


@pytest.mark.parametrize(
    ("direction", "side", "start", "expected"),
    [
        ("Liquidated Cross Long", "A", "0.5", PositionSide.LONG),
        ("Liquidated Isolated Long", "A", "0.5", PositionSide.LONG),
        ("Liquidated Cross Short", "B", "-0.5", PositionSide.SHORT),
        ("Liquidated Isolated Short", "B", "-0.5", PositionSide.SHORT),
        ("Close Long", "A", "0.5", PositionSide.LONG),
        ("Close Short", "B", "-0.5", PositionSide.SHORT),
        (None, "A", "0.5", PositionSide.LONG),  # no side named: the fill's side, checked by startPosition
        ("Something New", "B", "-0.5", PositionSide.SHORT),
    ],
)
def test_side_of_the_liquidated_position(direction: str | None, side: str, start: str, expected: PositionSide) -> None:
    [event] = events_of(block(1, [[VICTIM, fill(dir=direction, side=side, startPosition=start)]]))
    assert liq(event).side is expected


@pytest.mark.parametrize(
    ("direction", "side", "start"),
    [
        ("Liquidated Cross Long", "B", "0.5"),  # a long is closed by selling
        ("Liquidated Isolated Short", "A", "-0.5"),
        (None, "A", "-0.5"),  # selling closes a long, but the position was short
    ],
)
def test_a_contradiction_is_refused_not_guessed(direction: str | None, side: str, start: str) -> None:
    parsed = parse_line(encode(block(1, [[VICTIM, fill(dir=direction, side=side, startPosition=start)]])))
    assert parsed.events == ()
    assert [reason for reason, _ in parsed.refused] == [SIDE_MISMATCH]


def test_keys_come_from_the_fills_ids_and_are_stable() -> None:
    record = liquidation_block(7, tid=99)
    first, again = events_of(record), events_of(record)
    assert [e.key for e in first] == [e.key for e in again] == [f"hyperliquid:liquidation:BTC:10:99:{VICTIM}"]
    other = events_of(liquidation_block(7, tid=100))
    assert {e.key for e in other}.isdisjoint(e.key for e in first)


def test_addresses_are_matched_and_reported_in_lower_case() -> None:
    upper = "0x" + VICTIM[2:].upper()
    liquidation = {"liquidatedUser": VICTIM, "markPx": "1.0", "method": "market"}
    [event] = events_of(block(1, [[upper, fill(liquidation=liquidation)]]))
    assert liq(event).account == VICTIM and event.subject == VICTIM


def test_a_bad_fill_is_refused_alone() -> None:
    bad = fill(px="1e5", tid=2, oid=11)
    parsed = parse_line(encode(block(1, [[VICTIM, bad], [VICTIM, fill()]])))
    assert [liq(e).account for e in parsed.events] == [VICTIM]
    assert [reason for reason, _ in parsed.refused] == [BAD_FIGURE]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"dir": "Partial Borrow Liquidation"}, BORROW_LIQUIDATION),
        ({"liquidation": {"markPx": "1.0", "method": "backstop"}}, NO_LIQUIDATED_USER),
        ({"sz": "0.0"}, BAD_FIGURE),
        ({"side": "X"}, UNREADABLE_LINE),
        ({"tid": "1"}, UNREADABLE_LINE),
    ],
)
def test_fills_refused_with_a_reason(changes: dict[str, Any], reason: str) -> None:
    parsed = parse_line(encode(block(1, [[VICTIM, fill(**changes)]])))
    assert parsed.events == ()
    assert [r for r, _ in parsed.refused] == [reason]


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'{"block_number": "12", "events": []}',
        b'{"block_number": 12, "events": {}}',
        b'{"local_time":"2026-06-30T23:59:00","block_time":"2026-06-30T23:59:00","block_number":5,"events":[["0x',
        b'{"block_time":"2026-06-30T23:59:00","block_number":5,"events":[["0xab",{"liquidation":{}}]',
    ],
)
def test_a_line_that_is_no_block_raises(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_line(line)


def test_block_time_keeps_utc_and_drops_nanoseconds() -> None:
    assert block_time("2025-07-27T08:50:10.273720809") == datetime(2025, 7, 27, 8, 50, 10, 273720, tzinfo=UTC)
    assert block_time("2025-10-10T21:16:04.831874+00:00") == datetime(2025, 10, 10, 21, 16, 4, 831874, tzinfo=UTC)
    assert block_time("2025-01-01T00:00:00") == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        block_time("yesterday")


# ---------------------------------------------------------------------------------------------------------
# The tailer
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RecordingSink:
    """Records what it is handed; `stored` keeps each key once, as the pipeline's store does. While
    `unavailable` is set it takes nothing and raises `SinkUnavailable`."""

    unavailable: bool = False

    def __post_init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.refusals = 0
        self.stored: dict[str, Event] = {}

    async def __call__(self, events: Sequence[Event]) -> None:
        if self.unavailable:
            self.refusals += 1
            raise SinkUnavailable("database is locked")
        self.calls.append(list(events))
        for event in events:
            self.stored.setdefault(event.key, event)

    @property
    def handed(self) -> list[str]:
        return [event.key for call in self.calls for event in call]


class Files:
    """A node's `node_fills_by_block` directory, written to as the node would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hourly = root / "hourly"

    def path(self, name: str) -> Path:
        return self.hourly / name

    def append(self, name: str, data: bytes) -> None:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write(data)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path / "node_fills_by_block")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(CLOCK_START)


def tailer_for(
    files: Files, clock: FrozenClock, store: MemoryCursorStore | None = None, **options: Any
) -> NodeFillsTailer:
    options.setdefault("start_at_end", False)
    return NodeFillsTailer(
        files.root,
        store or MemoryCursorStore(),
        WatcherHealth(name="hyperliquid_node", clock=clock),
        clock=clock,
        **options,
    )


def key(tid: int) -> str:
    return f"hyperliquid:liquidation:BTC:10:{tid}:{VICTIM}"


async def test_a_partial_line_waits_for_its_newline(files: Files, clock: FrozenClock) -> None:
    store = MemoryCursorStore()
    tailer, sink = tailer_for(files, clock, store), RecordingSink()
    whole = encode(liquidation_block(1, tid=1))
    files.append("20260630/23", whole[:50])
    await tailer.poll(sink)
    assert sink.handed == []
    assert store.cursor is not None and store.cursor["offset"] == 0

    files.append("20260630/23", whole[50:-1])
    await tailer.poll(sink)
    assert sink.handed == []

    files.append("20260630/23", b"\n")
    await tailer.poll(sink)
    assert sink.handed == [key(1)]
    assert store.cursor["offset"] == len(whole)
    assert store.cursor["block_number"] == 1


async def test_reads_in_chunks_smaller_than_a_line(files: Files, clock: FrozenClock) -> None:
    tailer, sink = tailer_for(files, clock, chunk_bytes=7), RecordingSink()
    files.append("20260630/23", b"".join(encode(liquidation_block(n, tid=n)) for n in range(1, 4)))
    await tailer.poll(sink)
    assert sink.handed == [key(1), key(2), key(3)]


async def test_rotation_finishes_the_old_hour_first(files: Files, clock: FrozenClock) -> None:
    store = MemoryCursorStore()
    tailer, sink = tailer_for(files, clock, store), RecordingSink()
    files.append("20260630/23", encode(liquidation_block(1, tid=1)))
    await tailer.poll(sink)
    files.append("20260630/23", encode(liquidation_block(2, tid=2)))
    files.append("20260701/0", encode(liquidation_block(3, tid=3)))
    await tailer.poll(sink)

    assert sink.handed == [key(1), key(2), key(3)]
    assert store.cursor is not None and store.cursor["file"] == "20260701/0"
    assert tailer.health.extra["file"] == "20260701/0"


async def test_hours_sort_as_numbers(files: Files) -> None:
    for name in ("20260701/10", "20260701/9", "20260630/23", "20260701/08", "20260701/notes.txt", "20260701/3.lz4"):
        files.append(name, b"")
    assert hour_files(files.hourly) == ["20260630/23", "20260701/08", "20260701/9", "20260701/10"]


async def test_an_unfinished_last_line_of_a_rotated_hour_is_read_after_one_more_poll(
    files: Files, clock: FrozenClock
) -> None:
    tailer, sink = tailer_for(files, clock), RecordingSink()
    files.append("20260630/23", encode(liquidation_block(1, tid=1)) + encode(liquidation_block(2, tid=2))[:-1])
    files.append("20260701/0", encode(liquidation_block(3, tid=3)))
    await tailer.poll(sink)
    assert sink.handed == [key(1)]  # the writer may still flush the rest of line 2

    await tailer.poll(sink)
    assert sink.handed == [key(1), key(2), key(3)]


async def test_a_truncated_file_is_read_again_from_the_start(
    files: Files, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    tailer, sink = tailer_for(files, clock), RecordingSink()
    files.append("20260630/23", encode(liquidation_block(1, tid=1)) + encode(liquidation_block(2, tid=2)))
    await tailer.poll(sink)
    with files.path("20260630/23").open("r+b") as handle:
        handle.truncate(0)
    files.append("20260630/23", encode(liquidation_block(3, tid=3)))
    with caplog.at_level(logging.WARNING, logger="watchers.hyperliquid_node"):
        await tailer.poll(sink)
        await tailer.poll(sink)

    assert sink.handed == [key(1), key(2), key(3)]
    assert sum("truncated" in record.message for record in caplog.records) == 1


async def test_a_replaced_file_is_read_from_the_start(files: Files, clock: FrozenClock) -> None:
    tailer, sink = tailer_for(files, clock), RecordingSink()
    files.append("20260630/23", encode(liquidation_block(1, tid=1)))
    await tailer.poll(sink)
    replacement = files.path("20260630/23.new")
    replacement.write_bytes(encode(liquidation_block(1, tid=1)) + encode(liquidation_block(2, tid=2)))
    os.replace(replacement, files.path("20260630/23"))
    await tailer.poll(sink)

    assert sink.handed == [key(1), key(1), key(2)]
    assert list(sink.stored) == [key(1), key(2)]  # the re-read changes nothing the store holds


async def test_a_restart_resumes_from_the_cursor_without_repeating_or_skipping(
    files: Files, clock: FrozenClock
) -> None:
    store, sink = MemoryCursorStore(), RecordingSink()
    files.append("20260630/23", encode(liquidation_block(1, tid=1)) + encode(quiet_block(2)))
    await tailer_for(files, clock, store).poll(sink)
    files.append("20260630/23", encode(liquidation_block(3, tid=3)))
    files.append("20260701/0", encode(liquidation_block(4, tid=4)))

    restarted = tailer_for(files, clock, store, start_at_end=True)
    await restarted.poll(sink)
    assert sink.handed == [key(1), key(3), key(4)]
    assert Cursor.from_dict(store.cursor or {}).file == "20260701/0"


async def test_a_replayed_cursor_alerts_nobody_twice(files: Files, clock: FrozenClock) -> None:
    store, sink = MemoryCursorStore(), RecordingSink()
    files.append("20260630/23", encode(liquidation_block(1, tid=1)) + encode(liquidation_block(2, tid=2)))
    await tailer_for(files, clock, store).poll(sink)
    rewound = MemoryCursorStore({**(store.cursor or {}), "offset": 0})
    await tailer_for(files, clock, rewound).poll(sink)

    assert sink.handed == [key(1), key(2), key(1), key(2)]
    assert list(sink.stored) == [key(1), key(2)]


async def test_the_cursor_never_passes_events_the_sink_did_not_take(files: Files, clock: FrozenClock) -> None:
    store, sink = MemoryCursorStore(), RecordingSink(unavailable=True)
    first = encode(liquidation_block(1, tid=1))
    files.append("20260630/23", encode(quiet_block(0)))
    tailer = tailer_for(files, clock, store)
    await tailer.poll(sink)
    files.append("20260630/23", first)
    before = dict(store.cursor or {})

    polling = asyncio.create_task(tailer.poll(sink))
    for _ in range(5):
        await clock.advance(1.0)
    assert sink.refusals > 1
    assert store.cursor == before
    assert tailer.health.last_error == "sink: SinkUnavailable: database is locked"

    polling.cancel()  # the process is killed during the outage
    await asyncio.gather(polling, return_exceptions=True)
    recovered = RecordingSink()
    await tailer_for(files, clock, store).poll(recovered)
    assert recovered.handed == [key(1)]
    assert (store.cursor or {})["offset"] == len(encode(quiet_block(0))) + len(first)


async def test_an_outage_ends_with_the_held_events_delivered(files: Files, clock: FrozenClock) -> None:
    store, sink = MemoryCursorStore(), RecordingSink(unavailable=True)
    files.append("20260630/23", encode(liquidation_block(1, tid=1)))
    tailer = tailer_for(files, clock, store)
    polling = asyncio.create_task(tailer.poll(sink))
    await clock.advance(3.0)
    assert sink.handed == []
    sink.unavailable = False
    await clock.advance(10.0)
    await polling

    assert sink.handed == [key(1)]
    assert (store.cursor or {})["offset"] == len(encode(liquidation_block(1, tid=1)))
    assert tailer.health.events == 1


class StuckSave(MemoryCursorStore):
    """A store whose next save never completes: the process dies between the sink's commit and the cursor."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = asyncio.Event()

    async def save(self, cursor: dict[str, Any]) -> None:
        if self.saves >= 1:
            self.stuck.set()
            await asyncio.Event().wait()
        await super().save(cursor)


async def test_a_kill_between_commit_and_cursor_doubles_nothing(files: Files, clock: FrozenClock) -> None:
    store, sink = StuckSave(), RecordingSink()
    files.append("20260630/23", encode(quiet_block(0)))
    tailer = tailer_for(files, clock, store)
    await tailer.poll(sink)  # the first save: where the reader starts
    files.append("20260630/23", encode(liquidation_block(1, tid=1)))
    polling = asyncio.create_task(tailer.poll(sink))
    await store.stuck.wait()
    polling.cancel()
    await asyncio.gather(polling, return_exceptions=True)

    await tailer_for(files, clock, MemoryCursorStore(store.cursor)).poll(sink)
    assert sink.handed == [key(1), key(1)]
    assert list(sink.stored) == [key(1)]


async def test_malformed_lines_are_counted_and_reading_goes_on(files: Files, clock: FrozenClock) -> None:
    tailer, sink = tailer_for(files, clock, max_line_bytes=4096), RecordingSink()
    files.append(
        "20260630/23",
        b"not json\n"
        + b'{"block_number": 3, "events": {}}\n'
        + b"x" * 10_000
        + b"\n"
        + encode(block(4, [[VICTIM, fill(px="1e5")]]))
        + encode(liquidation_block(5, tid=5)),
    )
    await tailer.poll(sink)

    assert sink.handed == [key(5)]
    assert tailer.health.parse_errors == 4
    assert tailer.health.rejected == {UNREADABLE_LINE: 2, LINE_TOO_LONG: 1, BAD_FIGURE: 1}


async def test_without_a_cursor_it_starts_at_the_end_of_what_is_there(files: Files, clock: FrozenClock) -> None:
    store, sink = MemoryCursorStore(), RecordingSink()
    files.append("20260630/22", encode(liquidation_block(1, tid=1)))
    files.append("20260630/23", encode(liquidation_block(2, tid=2)) + encode(liquidation_block(3, tid=3))[:40])
    tailer = tailer_for(files, clock, store, start_at_end=True)
    await tailer.poll(sink)
    assert sink.handed == []
    files.append("20260630/23", encode(liquidation_block(3, tid=3))[40:])
    await tailer.poll(sink)
    assert sink.handed == [key(3)]  # the line half-written at start is read whole, once complete


async def test_a_missing_directory_waits_and_says_so(files: Files, clock: FrozenClock) -> None:
    tailer, sink = tailer_for(files, clock, start_at_end=True), RecordingSink()
    await tailer.poll(sink)
    await tailer.poll(sink)
    assert tailer.health.state is WatcherState.DOWN
    assert tailer.health.last_error == f"no directory {files.hourly}"
    assert tailer.health.errors == 1  # one down edge, not one per poll
    assert tailer.health.note is not None and "--batch-by-block" in tailer.health.note

    files.append("20260630/22", encode(liquidation_block(9, tid=9)))  # a backlog that came with it
    files.append("20260630/23", encode(liquidation_block(1, tid=1)))
    await tailer.poll(sink)
    health = tailer.health  # read afresh: the poll changed it
    assert health.state is WatcherState.UP
    assert health.last_error is None
    assert sink.handed == [key(1)]  # a file that appears while watched is news from its first line


async def test_the_watcher_polls_on_its_clock_and_reports_where_it_is(files: Files, clock: FrozenClock) -> None:
    @dataclass
    class Settings:
        hyperliquid_node_fills_dir: Path | None
        hyperliquid_node_poll_s: float = 2.0

    files.append("20260630/23", b"")
    watcher = HyperliquidNodeWatcher.from_settings(Settings(files.root), MemoryCursorStore(), clock=clock)
    assert watcher.covers == frozenset({(Topic.LIQUIDATION, Venue.HYPERLIQUID)})
    sink = RecordingSink()
    running = asyncio.create_task(watcher.run(sink))
    await clock.advance(0)
    files.append("20260630/23", encode(liquidation_block(1, tid=1)))
    await clock.advance(1.0)
    assert sink.handed == []  # the next poll is 2 s after the first
    await clock.advance(1.0)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    assert sink.handed == [key(1)]
    health = watcher.health
    assert health.state is WatcherState.UP
    assert health.events == 1 and health.last_event_at == clock.now()
    assert health.extra["file"] == "20260630/23"
    assert health.extra["block"] == "1"
    assert health.extra["lag_s"] == "62.0"  # block_time 23:59:00, now 00:00:02

    with pytest.raises(ValueError, match="PERPWATCH_HYPERLIQUID_NODE_FILLS_DIR"):
        HyperliquidNodeWatcher.from_settings(Settings(None), MemoryCursorStore(), clock=clock)
