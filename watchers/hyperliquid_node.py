"""Every Hyperliquid liquidation, market-wide, read from the fills a non-validating node writes to disk.

The public API has no market-wide liquidation feed: a liquidation is marked only on the fills of the accounts
involved, and `userFills` needs an address. A node started with `--write-fills --batch-by-block` writes every
fill of every account, so there each liquidation can be read exactly: who, which side, how much, at what
price, and whether the book (`market`) or the liquidator vault (`backstop`) took it.

The file format, as confirmed (nothing here is assumed beyond these sources):

- `hyperliquid-dex/node:README.md` (commit f256f31): "`--write-fills`: Streams fills in the API fills format
  to `~/hl/data/node_fills/hourly/{date}/{hour}`"; "`--batch-by-block`: Writes the above files with one block
  per line instead of one event per line. The batched data schema is `{local_time, block_time, block_number,
  events}`, where `events` is a list" (added in 247aea0, 2025-06-27); `--stream-with-block-info` (dc7a1c9)
  uses the same schema; `--disable-output-file-buffering` exists because output is buffered by default, so a
  partial last line is normal and waits for its newline here.
- The batched output lives in `node_fills_by_block/hourly/{YYYYMMDD}/{H}`: the name the public readers use,
  e.g. `uxuyprotocol/hyper-service:internal/service` (tails `{data}/node_fills_by_block/hourly/` + the UTC
  date `20060102` + `fmt.Sprintf("%d", hour)`, so the hour is not zero-padded; decodes
  `{local_time string, block_time string, block_number int64, events [][]interface{}}`), and Hyperliquid's
  own archive `s3://hl-mainnet-node-data/node_fills_by_block/hourly/20251010/15.lz4` (the archive is lz4;
  the node's live files are plain JSON lines). Hours are read as numbers, so `7` and `07` both sort right.
- One line, as public readers' tests quote it (e.g. a block of 2025-07-27):
  `{"local_time":"2025-07-27T08:50:10.334741319","block_time":"2025-07-27T08:50:10.273720809",
  "block_number":676607012,"events":[["0xabc",{"coin":"BTC","px":"118136.0","sz":"0.00009","side":"B",
  "time":1753606210273,"startPosition":"-1.41864","dir":"Close Short","closedPnl":"-0.003753",
  "hash":"0x…","oid":121670079265,"crossed":false,"fee":"-0.000212","tid":161270588369408,
  "feeToken":"USDC"}],…]}`: `events` are `[user, fill]` pairs, the fill in the API's fill shape
  (`/work/shared/research/exchange-apis.md` §1.2). `block_time` is UTC without a zone, in nanoseconds.

What a fill's `liquidation` object means (`{"liquidatedUser", "markPx", "method": "market"|"backstop"}`):

- It is on every fill of the trade, the liquidated account's and the counterparty's alike: a resting maker's
  fill carries it with another `liquidatedUser` (measured in a public probe of `userFills`: 328 of 8000 fills,
  e.g. `"dir":"Open Short", "liquidation":{"liquidatedUser":"0xbb8b…","method":"market"}` on a maker), and so
  does the liquidator vault's (`"side":"B","dir":"Liquidated Cross Long"` on an HLP child, `backstop`).
  So `dir` alone never says who was liquidated: only `user == liquidatedUser` does (the rule of
  `ConejoCapital/HyperMultiAssetedADL:docs/methodology/ADL_VS_LIQUIDATED_DISTINCTION.md`, checked on 34,983
  ADL and 63,637 liquidation fills of 2025-10-10). Every other fill with the object is the book or the vault
  taking the other side, and is never reported.
- The liquidated position's side is named by the liquidated account's own `dir`: "Liquidated Cross Long",
  "Liquidated Isolated Long", "Liquidated Cross Short", "Liquidated Isolated Short" (the values public readers
  of these files match, e.g. `LIQUIDATION_LONG = ["Liquidated Isolated Long", "Liquidated Cross Long"]`); a
  plain "Close Long"/"Close Short" is read the same way. It is cross-checked against the fill's `side`
  (docs "Notation": B = bid/buy, A = ask/sell): closing a long sells, closing a short buys, so a "Long" `dir`
  on a `B` fill is refused as contradictory rather than guessed. A `dir` that names no side falls back to
  `side`, checked against the sign of `startPosition`.
- `"dir": "Auto-Deleveraging"` (exact string: `ADL_ORDER_IDENTIFICATION_METHODOLOGY.md` of the same repo,
  raw fill from `node_fills_by_block/…/20251010/21`: `"side":"B","startPosition":"-28.53",
  "dir":"Auto-Deleveraging","liquidation":{"liquidatedUser":"0x2e3d…","method":"backstop"}`) is a profitable
  position closed against a bankrupt one: the ADL'd account lost a position it was *winning*, it was not
  liquidated. It is reported as ADL (its own key prefix and a note saying so), its side from `side` (B closes
  a short) checked against `startPosition`.
- "Backstop Borrow Liquidation"/"Partial Borrow Liquidation" are spot-margin borrows, not perp positions
  (listed beside the perp `dir`s by public readers): counted and skipped.

The tailer follows the newest hourly file, resumes from a durable cursor and saves it only once the sink has
accepted every event before it; a re-read after a crash between the two is harmless, because event keys come
from the fills' own ids and the sink stores each key once.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from perpwatch.backoff import Ladder
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import (
    MAX_USD,
    MIN_USD,
    SYMBOL_PATTERN,
    Event,
    LiquidationBody,
    PositionSide,
    Topic,
    Venue,
    parse_decimal,
    utc_from_ms,
)
from watchers.base import (
    EventRejected,
    EventSink,
    Watcher,
    WatcherHealth,
    WatcherState,
    describe,
    should_log,
)
from watchers.validate import (
    BAD_FIGURE,
    BAD_SYMBOL,
    BAD_TIME,
    IMPLAUSIBLE_USD,
    INVALID_EVENT,
    PLAUSIBLE,
    UNSTORABLE,
    Plausible,
    Refused,
    reason_of,
)

logger = logging.getLogger(__name__)

SOURCE = "hyperliquid_node"
WATCHER_NAME = "hyperliquid_node"

ADL_DIR = "Auto-Deleveraging"
SIDE_MISMATCH = "side_mismatch"
BORROW_LIQUIDATION = "borrow_liquidation"
NO_LIQUIDATED_USER = "no_liquidated_user"
UNREADABLE_LINE = "unreadable_line"
LINE_TOO_LONG = "line_too_long"

_NAMED_SIDES: Mapping[str, PositionSide] = {
    "Liquidated Cross Long": PositionSide.LONG,
    "Liquidated Isolated Long": PositionSide.LONG,
    "Close Long": PositionSide.LONG,
    "Liquidated Cross Short": PositionSide.SHORT,
    "Liquidated Isolated Short": PositionSide.SHORT,
    "Close Short": PositionSide.SHORT,
}
_BORROW_DIRS = frozenset({"Backstop Borrow Liquidation", "Partial Borrow Liquidation"})
# The side of the position a fill closes: a sell (A) closes a long, a buy (B) a short.
_CLOSED_BY: Mapping[str, PositionSide] = {"A": PositionSide.LONG, "B": PositionSide.SHORT}
_METHODS = frozenset({"market", "backstop"})
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BLOCK_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})?$")
# The schema's first fields, as the node writes them: enough to keep the cursor and the lag for the many
# blocks that hold no liquidation, without decoding thousands of fills nobody will alert on.
_HEAD = re.compile(rb'"block_time":"([^"]{1,40})","block_number":(\d{1,20})[,}]')
_HEAD_WINDOW = 200

PUBLIC_FEED_NOTE = (
    "Hyperliquid's public feed shows backstop liquidations only: those on the order book are not marked. "
    "A node's fills (PERPWATCH_HYPERLIQUID_NODE_FILLS_DIR) show them all."
)
"""For the public-feed watcher's alerts and `/status` when no node is configured."""

NODE_NOTE = "Every Hyperliquid liquidation, read from a node's fills; ADL is reported as ADL, not as liquidation."


def market_page(coin: str) -> str:
    """The venue's trade page, as linked by public tools (app.hyperliquid.xyz/trade/BTC). A link only."""
    return f"https://app.hyperliquid.xyz/trade/{coin}"


# ---------------------------------------------------------------------------------------------------------
# One line of a file
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """What one line held: its block, the events in it, and the fills refused, as (reason, message)."""

    number: int
    time: datetime | None
    events: tuple[Event, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Part:
    """Fills of one liquidation order in one block, summed: a market liquidation crosses several makers,
    and each crossing is a fill of its own with its own `tid`, but it is one liquidation to a trader."""

    kind: str
    user: str
    coin: str
    oid: int
    tid: int
    side: PositionSide
    time_ms: int
    method: str
    mark_px: Decimal | None
    liquidated_user: str | None
    size: Decimal
    notional: Decimal
    prices: set[Decimal]
    closed_by_adl: bool = False


def block_time(raw: object) -> datetime:
    """`block_time` as aware UTC: the node writes it zoneless in UTC with nanoseconds, which `datetime` cannot
    hold, so the fraction is cut to microseconds; an explicit offset (as some re-exports write) is honoured."""
    if not isinstance(raw, str):
        raise ValueError(f"block_time={raw!r} is not a string")
    match = _BLOCK_TIME.match(raw)
    if match is None:
        raise ValueError(f"block_time={raw[:40]!r} is not an ISO time")
    whole, fraction, zone = match.groups()
    text = whole + (f".{fraction[:6].ljust(6, '0')}" if fraction else "")
    moment = datetime.fromisoformat(text + ("+00:00" if zone in (None, "Z") else zone))
    return moment.astimezone(UTC)


def _optional_time(raw: object) -> datetime | None:
    try:
        return block_time(raw)
    except ValueError:
        return None


def _block_number(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ValueError(f"block_number={raw!r} is not a block height")
    return raw


def parse_line(line: bytes | str) -> Block:
    """One line of `node_fills_by_block` as the liquidations (and ADLs) in its block.

    A line that is no block (not JSON, no `block_number`, no `events` list) raises ValueError: the caller
    counts it and reads on. A fill in it that cannot be read is refused alone, with its reason, in
    `Block.refused`; the other fills of the block still count. Pure: the same line always gives the same
    events with the same keys.
    """
    data = line.encode() if isinstance(line, str) else line
    if b'"liquidation"' not in data:
        head = _HEAD.search(data, 0, _HEAD_WINDOW)
        if head is not None and data.rstrip().endswith(b"}"):
            return Block(number=int(head.group(2)), time=_optional_time(head.group(1).decode()))
    try:
        record = json.loads(data, parse_float=Decimal)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(record, Mapping):
        raise ValueError(f"a line is a JSON object, not {type(record).__name__}")
    number = _block_number(record.get("block_number"))
    events = record.get("events")
    if not isinstance(events, list):
        raise ValueError(f"block {number} has no list 'events' (is the node run with --batch-by-block?)")
    parts: dict[tuple[str, str, str, int], _Part] = {}
    refused: list[tuple[str, str]] = []
    for pair in events:
        try:
            part = _liquidation_part(pair)
        except Refused as exc:
            refused.append((exc.reason, str(exc)))
            continue
        except ValueError as exc:
            refused.append((UNREADABLE_LINE, str(exc)))
            continue
        if part is None:
            continue
        group = (part.kind, part.user, part.coin, part.oid)
        known = parts.get(group)
        if known is None:
            parts[group] = part
        elif known.side is not part.side:
            refused.append((SIDE_MISMATCH, f"order {part.oid} of {part.user} closes both sides in one block"))
        else:
            known.size += part.size
            known.notional += part.notional
            known.prices |= part.prices
            known.time_ms = min(known.time_ms, part.time_ms)
    # The bankrupt side of an ADL carries the method of the liquidation that failed (e.g. "backstop"), yet its
    # position was closed against the ADL'd accounts, so its note says that, not what the method would.
    deleveraged = {(part.coin, part.liquidated_user) for part in parts.values() if part.kind == "adl"}
    built: list[Event] = []
    for part in parts.values():
        if part.kind == "liquidation" and (part.coin, part.user) in deleveraged:
            part.closed_by_adl = True
        try:
            built.append(_event(part))
        except Refused as exc:
            refused.append((exc.reason, str(exc)))
        except ValueError as exc:  # pydantic's ValidationError is one
            refused.append((reason_of(exc) or INVALID_EVENT, str(exc)[:300]))
    return Block(
        number=number, time=_optional_time(record.get("block_time")), events=tuple(built), refused=tuple(refused)
    )


def _figure(fill: Mapping[str, Any], name: str, *, positive: bool = True) -> Decimal:
    try:
        value = parse_decimal(fill.get(name), f"fill.{name}")
    except ValueError as exc:
        raise Refused(BAD_FIGURE, str(exc)) from None
    if positive and value <= 0:
        raise Refused(BAD_FIGURE, f"fill.{name}={value} is not positive")
    return value


def _integer(fill: Mapping[str, Any], name: str) -> int:
    raw = fill.get(name)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ValueError(f"fill.{name}={raw!r} is not an id")
    return raw


def _liquidation_part(pair: object) -> _Part | None:
    """The liquidation or ADL one `[user, fill]` pair records, or None for any other fill (most of them, and
    every counterparty of a liquidation: the book's makers and the liquidator vault)."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], Mapping):
        raise ValueError("an event is a [user, fill] pair")
    user, fill = pair
    liquidation = fill.get("liquidation")
    if liquidation is None:
        return None
    if not isinstance(user, str) or not _ADDRESS.match(user):
        raise ValueError(f"event user {str(user)[:60]!r} is not an address")
    if not isinstance(liquidation, Mapping):
        raise ValueError("fill.liquidation is not an object")
    user = user.lower()
    liquidated = liquidation.get("liquidatedUser")
    liquidated = liquidated.lower() if isinstance(liquidated, str) and _ADDRESS.match(liquidated) else None
    direction = fill.get("dir")
    if direction == ADL_DIR:
        kind = "adl"
    elif liquidated == user:
        kind = "liquidation"
    elif liquidated is None and isinstance(direction, str) and direction.startswith("Liquidated "):
        # Whose liquidation this is cannot be told (the vault's fill names the same side): counted, not guessed.
        raise Refused(NO_LIQUIDATED_USER, f"{direction} fill of {user} names no liquidatedUser")
    else:
        return None
    if direction in _BORROW_DIRS:
        raise Refused(BORROW_LIQUIDATION, f"{direction} of {user} is a spot borrow, not a perp position")
    coin = fill.get("coin")
    if not isinstance(coin, str) or not coin:
        raise ValueError(f"fill.coin={coin!r} is not a coin")
    if not SYMBOL_PATTERN.match(coin):
        raise Refused(BAD_SYMBOL, f"fill.coin={coin[:60]!r} is not a plain venue symbol")
    order_side = fill.get("side")
    if order_side not in _CLOSED_BY:
        raise ValueError(f"fill.side={order_side!r} is neither A nor B")
    side = _position_side(kind, direction, order_side, fill, coin, user)
    time_ms = fill.get("time")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or time_ms <= 0:
        raise Refused(BAD_TIME, f"fill.time={time_ms!r} is not a millisecond timestamp")
    size, price = _figure(fill, "sz"), _figure(fill, "px")
    method = liquidation.get("method")
    mark_raw = liquidation.get("markPx")
    mark_px = None if mark_raw is None else _figure(liquidation, "markPx")
    return _Part(
        kind=kind,
        user=user,
        coin=coin,
        oid=_integer(fill, "oid"),
        tid=_integer(fill, "tid"),
        side=side,
        time_ms=time_ms,
        method=method if method in _METHODS else "unknown",
        mark_px=mark_px,
        liquidated_user=liquidated,
        size=size,
        notional=size * price,
        prices={price},
    )


def _position_side(
    kind: str, direction: object, order_side: str, fill: Mapping[str, Any], coin: str, user: str
) -> PositionSide:
    """The side of the position that was closed, named by `dir` where it names one, and always consistent
    with the fill's own side: a contradiction is refused, never resolved by picking one."""
    by_order = _CLOSED_BY[order_side]
    named = _NAMED_SIDES.get(direction) if kind == "liquidation" and isinstance(direction, str) else None
    if named is not None:
        if named is not by_order:
            raise Refused(SIDE_MISMATCH, f"{coin} fill of {user}: dir={direction!r} but side={order_side}")
        return named
    start = fill.get("startPosition")
    if start is not None:
        position = _figure(fill, "startPosition", positive=False)
        if position != 0 and (position > 0) != (by_order is PositionSide.LONG):
            raise Refused(SIDE_MISMATCH, f"{coin} fill of {user}: side={order_side} but startPosition={position}")
    return by_order


def _note(part: _Part) -> str:
    mark = f" (mark {part.mark_px})" if part.mark_px is not None else ""
    if part.kind == "adl":
        against = f" of {part.liquidated_user}" if part.liquidated_user else ""
        return (
            f"Auto-deleveraged (ADL), not liquidated: a profitable position closed against the {part.method} "
            f"liquidation{against}{mark}. Read from a Hyperliquid node."
        )
    if part.closed_by_adl:
        return (
            f"Liquidation closed by auto-deleveraging (ADL) of profitable positions{mark}. "
            "Read from a Hyperliquid node."
        )
    if part.method == "backstop":
        return f"Backstop liquidation: the liquidator vault took the position over{mark}. Read from a Hyperliquid node."
    if part.method == "market":
        return f"Market liquidation, closed on the order book{mark}. Read from a Hyperliquid node."
    return f"Liquidation by an unnamed method{mark}. Read from a Hyperliquid node."


def _event(part: _Part) -> Event:
    notional = part.notional
    if not MIN_USD <= notional <= MAX_USD:
        raise Refused(IMPLAUSIBLE_USD, f"{part.coin} {part.kind} of {part.user} has a notional of {notional:f}")
    price = next(iter(part.prices)) if len(part.prices) == 1 else notional / part.size
    return Event(
        key=f"hyperliquid:{part.kind}:{part.coin}:{part.oid}:{part.tid}:{part.user}",
        topic=Topic.LIQUIDATION,
        source=SOURCE,
        venue=Venue.HYPERLIQUID,
        symbol=part.coin,
        usd=notional,
        occurred_at=utc_from_ms(part.time_ms),
        link=market_page(part.coin),
        subject=part.user,
        body=LiquidationBody(
            side=part.side,
            size=part.size,
            price=price,
            notional_usd=notional,
            account=part.user,
            cause="adl" if part.kind == "adl" else "liquidation",
            method="market" if part.method == "market" else "backstop" if part.method == "backstop" else None,
            note=_note(part),
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# The cursor
# ---------------------------------------------------------------------------------------------------------


class CursorStore(Protocol):
    """Where the cursor survives a restart. The bot's durable watcher state implements it; tests use
    `MemoryCursorStore`. `save` returns once the cursor is durable."""

    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, cursor: dict[str, Any]) -> None: ...


class MemoryCursorStore:
    """A cursor kept in memory: survives a watcher being rebuilt in a test, not a process exit."""

    def __init__(self, cursor: dict[str, Any] | None = None) -> None:
        self.cursor = dict(cursor) if cursor is not None else None
        self.saves = 0

    async def load(self) -> dict[str, Any] | None:
        return dict(self.cursor) if self.cursor is not None else None

    async def save(self, cursor: dict[str, Any]) -> None:
        self.cursor = dict(cursor)
        self.saves += 1


CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    """The first byte not yet handed over: always a line's start. `file` is relative to `hourly/`
    (`20260101/7`), so the data directory can move; `inode` tells a replaced file from the one read."""

    file: str
    offset: int
    inode: int | None = None
    block_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CURSOR_VERSION,
            "file": self.file,
            "offset": self.offset,
            "inode": self.inode,
            "block_number": self.block_number,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Cursor:
        file, offset, inode, number = raw.get("file"), raw.get("offset"), raw.get("inode"), raw.get("block_number")
        if raw.get("version") != CURSOR_VERSION:
            raise ValueError(f"cursor version {raw.get('version')!r} is not {CURSOR_VERSION}")
        if not isinstance(file, str) or _hour_key(file) is None:
            raise ValueError(f"cursor file {file!r} is not YYYYMMDD/H")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"cursor offset {offset!r} is not a byte offset")
        if inode is not None and (isinstance(inode, bool) or not isinstance(inode, int)):
            raise ValueError(f"cursor inode {inode!r} is not an inode")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            raise ValueError(f"cursor block_number {number!r} is not a height")
        return cls(file=file, offset=offset, inode=inode, block_number=number)


_DAY = re.compile(r"^\d{8}$")
_HOUR = re.compile(r"^\d{1,2}$")


def _hour_key(relative: str) -> tuple[str, int] | None:
    day, _, hour = relative.partition("/")
    if not _DAY.match(day) or not _HOUR.match(hour) or int(hour) > 23:
        return None
    return day, int(hour)


def hour_files(hourly: Path) -> list[str]:
    """The hourly files present, oldest first, as `YYYYMMDD/H` relative to `hourly/`. Anything else there
    (an `.lz4` archive, a stray file) is not the node's live output and is ignored."""
    found: list[tuple[tuple[str, int], str]] = []
    try:
        days = [entry for entry in os.scandir(hourly) if _DAY.match(entry.name) and entry.is_dir()]
    except FileNotFoundError:
        return []
    for day in days:
        try:
            entries = list(os.scandir(day.path))
        except FileNotFoundError:
            continue
        for entry in entries:
            relative = f"{day.name}/{entry.name}"
            key = _hour_key(relative)
            if key is not None and entry.is_file():
                found.append((key, relative))
    return [relative for _, relative in sorted(found)]


# ---------------------------------------------------------------------------------------------------------
# The tailer
# ---------------------------------------------------------------------------------------------------------

SINK_WAITS = Ladder((0.05, 0.25, 0.5, 1.0, 2.0, 5.0))
"""Waits between tries of a batch the sink did not take. The events stay in the file, so nothing is dropped
for an outage however long: the cursor simply does not move until the sink takes them."""


@dataclass
class _Pending:
    """Lines read from the current file whose events have not been handed over yet."""

    events: list[Event] = field(default_factory=list)
    end: int = 0
    block_number: int | None = None
    block_time: datetime | None = None


class NodeFillsTailer:
    """Follows `node_fills_by_block/hourly/` and hands each liquidation to the sink once.

    Reads are plain blocking reads of at most `chunk_bytes`, on the loop: a local file answers in well under
    a millisecond, and a thread per read would make a test's frozen clock race real threads. A line longer
    than `max_line_bytes` is skipped (counted), so memory stays bounded whatever the file holds.
    """

    def __init__(
        self,
        fills_dir: Path,
        store: CursorStore,
        health: WatcherHealth,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll_s: float = 1.0,
        chunk_bytes: int = 1 << 16,
        max_line_bytes: int = 64 << 20,
        max_batch: int = 100,
        save_every_s: float = 5.0,
        start_at_end: bool = True,
        plausible: Plausible = PLAUSIBLE,
        sink_waits: Ladder = SINK_WAITS,
    ) -> None:
        if poll_s <= 0 or chunk_bytes < 1 or max_line_bytes < 1 or max_batch < 1:
            raise ValueError("poll_s, chunk_bytes, max_line_bytes and max_batch must be positive")
        self.fills_dir = fills_dir
        self.store = store
        self.health = health
        self.clock = clock
        self.poll_s = poll_s
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self.max_batch = max_batch
        self.save_every_s = save_every_s
        self.start_at_end = start_at_end
        self.plausible = plausible
        self.sink_waits = sink_waits
        self.cursor: Cursor | None = None
        self._loaded = False
        self._saved: Cursor | None = None
        self._saved_at = 0.0
        self._tail_waits = 0
        self._empty_seen = False
        self._block_time: datetime | None = None

    @property
    def hourly(self) -> Path:
        """The setting may name `node_fills_by_block` (as the node's data directory has it) or its `hourly/`."""
        return self.fills_dir if self.fills_dir.name == "hourly" else self.fills_dir / "hourly"

    async def run(self, sink: EventSink) -> None:
        """Polls forever on the clock; returns only when cancelled."""
        while True:
            await self.poll(sink)
            await self.clock.sleep(self.poll_s)

    async def poll(self, sink: EventSink) -> None:
        """Reads and hands over everything complete that is on disk now."""
        if not self._loaded:
            self.cursor = await self._load()
            self._loaded = True
        hourly = self.hourly
        if not hourly.is_dir():
            self._missing(hourly)
            return
        if self.health.state is not WatcherState.UP:
            self._up(hourly)
        files = hour_files(hourly)
        if not files:
            self._empty_seen = True
            self.health.note = f"waiting for the first file in {hourly}"
            return
        self.health.note = None
        if self.cursor is None:
            await self._first_cursor(hourly, files)
        await self._follow(hourly, files, sink)
        self._report()

    async def _follow(self, hourly: Path, files: Sequence[str], sink: EventSink) -> None:
        """The cursor's file to its end, then each newer one in turn; the old file is always finished first."""
        while self.cursor is not None:
            current = self.cursor.file
            newer = [name for name in files if _sort_key(name) > _sort_key(current)]
            path = hourly / current
            if not path.is_file():
                if not newer:
                    return
                logger.warning("node fills file gone, moving on venue=hyperliquid file=%s next=%s", current, newer[0])
                await self._move_to(newer[0], hourly)
                continue
            tail = await self._read(path, sink, final=bool(newer) and self._tail_waits >= 1)
            if not newer:
                return
            if tail and self._tail_waits < 1:
                # The hour rotated, but the old file still ends without a newline: its writer may not have
                # flushed yet (output is buffered by default), so give it one more poll before reading the
                # rest as the last line.
                self._tail_waits += 1
                return
            await self._move_to(newer[0], hourly)

    # -- cursor -------------------------------------------------------------------------------------------

    async def _load(self) -> Cursor | None:
        raw = await self.store.load()
        if raw is None:
            return None
        try:
            cursor = Cursor.from_dict(raw)
        except ValueError as exc:
            logger.error("node fills cursor unreadable, starting afresh venue=hyperliquid error=%s", exc)
            return None
        logger.info("node fills resuming venue=hyperliquid file=%s offset=%d", cursor.file, cursor.offset)
        self._saved = cursor
        return cursor

    async def _first_cursor(self, hourly: Path, files: Sequence[str]) -> None:
        """Without a cursor, the watcher starts at the end of what is there: an hour of history is no news.
        A file that appears while it watches is read from its start, because all of it was written since (if a
        whole backlog appears at once, a mounted old directory, only its newest hour is read). Without
        `start_at_end`, everything present is read from the oldest file on."""
        if not self.start_at_end:
            first = files[0]
            self.cursor = Cursor(file=first, offset=0, inode=(hourly / first).stat().st_ino)
        elif self._empty_seen:
            newest = files[-1]
            self.cursor = Cursor(file=newest, offset=0, inode=(hourly / newest).stat().st_ino)
        else:
            newest = files[-1]
            stat = (hourly / newest).stat()
            offset = _last_line_end(hourly / newest, stat.st_size)
            self.cursor = Cursor(file=newest, offset=offset, inode=stat.st_ino)
        logger.info("node fills starting venue=hyperliquid file=%s offset=%d", self.cursor.file, self.cursor.offset)
        await self._save(force=True)

    async def _move_to(self, name: str, hourly: Path) -> None:
        try:
            inode: int | None = (hourly / name).stat().st_ino
        except FileNotFoundError:
            inode = None
        number = self.cursor.block_number if self.cursor is not None else None
        self.cursor = Cursor(file=name, offset=0, inode=inode, block_number=number)
        self._tail_waits = 0
        await self._save(force=True)

    async def _save(self, *, force: bool = False) -> None:
        if self.cursor is None or self.cursor == self._saved:
            return
        if not force and self.clock.monotonic() - self._saved_at < self.save_every_s:
            return
        await self.store.save(self.cursor.to_dict())
        self._saved, self._saved_at = self.cursor, self.clock.monotonic()

    # -- reading ------------------------------------------------------------------------------------------

    async def _read(self, path: Path, sink: EventSink, *, final: bool) -> bool:
        """Reads `path` from the cursor to its end, handing over each chunk's events before the cursor moves
        past them. Returns whether an incomplete last line remains. With `final` (the file is finished), that
        remainder is read as the last line."""
        assert self.cursor is not None
        stat = _stat(path)
        if self.cursor.inode is not None and stat.st_ino != self.cursor.inode:
            logger.warning("node fills file replaced, reading it from the start venue=hyperliquid file=%s", path)
            self.cursor = Cursor(self.cursor.file, 0, stat.st_ino, self.cursor.block_number)
        elif stat.st_size < self.cursor.offset:
            logger.warning(
                "node fills file truncated, reading it from the start venue=hyperliquid file=%s size=%d offset=%d",
                path,
                stat.st_size,
                self.cursor.offset,
            )
            self.cursor = Cursor(self.cursor.file, 0, stat.st_ino, self.cursor.block_number)
        elif self.cursor.inode is None:
            self.cursor = Cursor(self.cursor.file, self.cursor.offset, stat.st_ino, self.cursor.block_number)
        with path.open("rb") as handle:
            handle.seek(self.cursor.offset)
            position = self.cursor.offset
            partial = bytearray()
            skipping = False
            while True:
                chunk = handle.read(self.chunk_bytes)
                if not chunk:
                    break
                pending = _Pending(end=self.cursor.offset)
                start = 0
                while True:
                    newline = chunk.find(b"\n", start)
                    if newline < 0:
                        break
                    piece = chunk[start:newline]
                    line_end = position + newline + 1
                    if skipping or len(partial) + len(piece) > self.max_line_bytes:
                        skipping = False
                        self._unreadable(LINE_TOO_LONG, f"a line over {self.max_line_bytes} bytes", piece[:200])
                    else:
                        line = bytes(partial) + piece if partial else piece
                        self._take(line, pending)
                    partial.clear()
                    pending.end = line_end
                    start = newline + 1
                rest = chunk[start:]
                if not skipping:
                    partial += rest
                    if len(partial) > self.max_line_bytes:
                        partial.clear()
                        skipping = True
                position += len(chunk)
                await self._commit(pending, sink)
            if final and (partial or skipping):
                pending = _Pending(end=position)
                if skipping:
                    self._unreadable(LINE_TOO_LONG, f"a line over {self.max_line_bytes} bytes", b"")
                else:
                    self._take(bytes(partial), pending)
                await self._commit(pending, sink)
                return False
            return bool(partial) or skipping

    def _take(self, line: bytes, pending: _Pending) -> None:
        if not line.strip():
            return
        try:
            block = parse_line(line)
        except ValueError as exc:
            self._unreadable(UNREADABLE_LINE, str(exc), line)
            return
        self.health.last_frame_at = self.clock.now()
        pending.block_number = block.number
        if block.time is not None:
            pending.block_time = block.time
        for reason, message in block.refused:
            self.health.parse_errors += 1
            if should_log(self.health.reject(reason)):
                logger.warning(
                    "node fill refused venue=hyperliquid block=%d reason=%s error=%s", block.number, reason, message
                )
        now = self.clock.now()
        for event in block.events:
            implausible = self.plausible.check(event, now)
            if implausible is None:
                pending.events.append(event)
            elif should_log(self.health.reject(implausible)):
                logger.warning(
                    "implausible event venue=hyperliquid reason=%s key=%.120r occurred_at=%s",
                    implausible,
                    event.key,
                    event.occurred_at.isoformat(),
                )

    def _unreadable(self, reason: str, message: str, line: bytes) -> None:
        self.health.parse_errors += 1
        self.health.reject(reason)
        if should_log(self.health.parse_errors):
            logger.warning(
                "unreadable node fills line venue=hyperliquid parse_errors=%d reason=%s error=%s line=%.200r",
                self.health.parse_errors,
                reason,
                message,
                line,
            )

    async def _commit(self, pending: _Pending, sink: EventSink) -> None:
        """Hands the events over, then moves the cursor past their lines: a kill in between re-reads them,
        which the sink's keys make harmless, while the other order could lose them."""
        assert self.cursor is not None
        for batch in _batches(pending.events, self.max_batch):
            await self._hand_over(batch, sink)
        if pending.block_time is not None:
            self._block_time = pending.block_time
        if pending.end == self.cursor.offset:
            return
        number = pending.block_number if pending.block_number is not None else self.cursor.block_number
        self.cursor = Cursor(self.cursor.file, pending.end, self.cursor.inode, number)
        await self._save(force=bool(pending.events))
        self._report()

    async def _hand_over(self, batch: list[Event], sink: EventSink) -> None:
        waits = 0
        while True:
            try:
                await sink(batch)
            except EventRejected as exc:
                if len(batch) == 1:
                    if should_log(self.health.reject(UNSTORABLE)):
                        logger.error(
                            "sink rejected an event for good, skipped venue=hyperliquid key=%.120r error=%s",
                            batch[0].key,
                            describe(exc),
                        )
                    return
                for event in batch:
                    await self._hand_over([event], sink)
                return
            except Exception as exc:
                # SinkUnavailable or any other failure: the events are still in the file and the cursor has
                # not moved, so waiting loses nothing; dropping them would.
                delay_s = self.sink_waits.at(waits)
                waits += 1
                self.health.last_error = f"sink: {describe(exc)}"
                if should_log(waits):
                    logger.warning(
                        "sink did not take events, holding the cursor venue=hyperliquid events=%d tries=%d "
                        "delay_s=%g error=%s",
                        len(batch),
                        waits,
                        delay_s,
                        describe(exc),
                    )
                await self.clock.sleep(delay_s)
                continue
            if waits:
                logger.warning("sink took events again venue=hyperliquid tries=%d", waits)
            self.health.events += len(batch)
            self.health.last_event_at = self.clock.now()
            return

    # -- health -------------------------------------------------------------------------------------------

    def _missing(self, hourly: Path) -> None:
        self._empty_seen = True
        if self.health.state is not WatcherState.DOWN:
            logger.warning("node fills directory missing venue=hyperliquid dir=%s", hourly)
            self.health.mark_down(f"no directory {hourly}")
        self.health.note = f"waiting for {hourly} (a node run with --write-fills --batch-by-block)"

    def _up(self, hourly: Path) -> None:
        if self.health.state is WatcherState.DOWN:
            logger.info("node fills directory found venue=hyperliquid dir=%s", hourly)
        self.health.mark_up()
        self.health.last_error = None

    def _report(self) -> None:
        if self.cursor is None:
            return
        extra = self.health.extra
        extra["file"] = self.cursor.file
        extra["offset"] = str(self.cursor.offset)
        if self.cursor.block_number is not None:
            extra["block"] = str(self.cursor.block_number)
        if self._block_time is not None:
            extra["block_time"] = self._block_time.isoformat()
            extra["lag_s"] = f"{max((self.clock.now() - self._block_time).total_seconds(), 0.0):.1f}"


def _stat(path: Path) -> os.stat_result:
    """On the loop on purpose: see `NodeFillsTailer` (a local stat is microseconds)."""
    return path.stat()


def _sort_key(relative: str) -> tuple[str, int]:
    key = _hour_key(relative)
    return key if key is not None else ("", -1)


def _batches(events: Sequence[Event], size: int) -> Iterator[list[Event]]:
    for start in range(0, len(events), size):
        yield list(events[start : start + size])


def _last_line_end(path: Path, size: int, window: int = 1 << 16) -> int:
    """Where the last complete line of a file ends: a live start never begins inside a half-written line."""
    with path.open("rb") as handle:
        end = size
        while end > 0:
            start = max(0, end - window)
            handle.seek(start)
            found = handle.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
    return 0


# ---------------------------------------------------------------------------------------------------------
# The watcher
# ---------------------------------------------------------------------------------------------------------


class HyperliquidNodeSettings(Protocol):
    @property
    def hyperliquid_node_fills_dir(self) -> Path | None: ...
    @property
    def hyperliquid_node_poll_s(self) -> float: ...


class HyperliquidNodeWatcher(Watcher):
    """Every Hyperliquid liquidation from a node's fills directory. `/status` shows the file and offset read
    to, the block and how far behind its `block_time` the reader is (`extra`)."""

    def __init__(
        self,
        fills_dir: Path,
        store: CursorStore,
        *,
        clock: Clock = SYSTEM_CLOCK,
        poll_s: float = 1.0,
        start_at_end: bool = True,
        name: str = WATCHER_NAME,
    ) -> None:
        super().__init__(name, frozenset({(Topic.LIQUIDATION, Venue.HYPERLIQUID)}), clock=clock)
        self.health.note = NODE_NOTE
        self.tailer = NodeFillsTailer(
            fills_dir, store, self.health, clock=clock, poll_s=poll_s, start_at_end=start_at_end
        )

    @classmethod
    def from_settings(
        cls,
        settings: HyperliquidNodeSettings,
        store: CursorStore,
        *,
        clock: Clock = SYSTEM_CLOCK,
        name: str = WATCHER_NAME,
    ) -> HyperliquidNodeWatcher:
        """`name` is the registry's: the `hyperliquid` watcher runs this reader when a fills directory is set."""
        fills_dir = settings.hyperliquid_node_fills_dir
        if fills_dir is None:
            raise ValueError("hyperliquid_node_fills_dir is not set (PERPWATCH_HYPERLIQUID_NODE_FILLS_DIR)")
        return cls(fills_dir.expanduser(), store, clock=clock, poll_s=settings.hyperliquid_node_poll_s, name=name)

    async def run(self, sink: EventSink) -> None:
        await self.tailer.run(sink)
