"""Buyback programmes, their buys and snapshots, and each source's cursor and health (`BuybackLedger`).

Summed amounts are scaled integers (`scaled`): tokens × 10^8 and USD × 10^6, truncated toward zero, NULL when
the source does not give the figure. Both engines sum integers exactly, where SQLite would sum text or
decimals as floats; a finer digit than 10^-8 of a token or a micro-dollar is below anything shown or
compared. A figure that is only shown (a balance, a cost basis, a programme's own published total) is kept
as exact text instead.

`record` is the one write of a source's step: its buys, its snapshot, its cursor, its published total and
its health commit together or not at all, so a crash between them can neither lose a buy (the cursor moved
past it) nor count one twice (the buy stored, the cursor not: the replay finds the key and counts nothing).

Removing a programme: a bundled one is only marked removed, because the bundled merge meets its id again at
every start and must not bring it back, and because restoring it should bring its history back with it. A
programme a chat added is deleted with its buys, snapshots and cursor: its history is only ours, and its id
is then free for a chat to add again with other parameters, whose buys must not be mixed with the old ones.

Snapshots are history, not alerts: nothing that prunes the event log touches these tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any, cast

from perpwatch.buybacks import (
    KINDS,
    PROGRAMME_ID,
    Buy,
    DayPoint,
    Fetched,
    Programme,
    ProgrammeHealth,
    ProgrammeKind,
    RunningTotal,
    Snapshot,
    WindowTotal,
)
from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.chats import Conflict
from storage.engine import BIGINT_MAX, Engine, Row, Tx, as_bool, as_time
from storage.watchers import decode_json, encode_json

TOKEN_PLACES = 8
USD_PLACES = 6

WINDOWS: tuple[tuple[str, timedelta | None], ...] = (
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    ("30d", timedelta(days=30)),
    ("all", None),
)
"""The windows `totals` answers for; `all` has no start."""

INSERT_ROWS = 500
"""Buys per INSERT statement: one statement returns which keys were new, and stays far below either
engine's limit on parameters."""

_BUY_COLUMNS = "programme, key, start_at, end_at, day, tokens_e8, usd_e6, basis, note"
_PROGRAMME_COLUMNS = (
    "programme, kind, token, symbol, params, source, origin, total_supply, supply_source, milestone_tokens, note, "
    "removed"
)


def scaled(value: Decimal | None, places: int, what: str) -> int | None:
    """`value` × 10^places truncated toward zero: the stored form of an amount that is summed.

    ValueError for a value that is not finite or does not fit a signed 64-bit integer (more than about
    92 billion tokens in one buy): such a buy cannot be stored, and its step is refused whole."""
    if value is None:
        return None
    if not value.is_finite():
        raise ValueError(f"{what} {value} is not a number that can be stored")
    if value and value.adjusted() > 19:  # past the range whatever its digits: refused before any arithmetic
        raise ValueError(f"{what} {value} is too large to store")
    with localcontext() as ctx:
        ctx.prec = 80  # quantize must see every digit the source gave before it truncates
        n = int(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN).scaleb(places))
    if abs(n) > BIGINT_MAX:
        raise ValueError(f"{what} {value} is too large to store")
    return n


def unscaled(value: Any, places: int) -> Decimal:
    """A stored (or summed) scaled integer as the exact Decimal it stands for; NULL as zero."""
    if value is None:
        return Decimal(0)
    with localcontext() as ctx:
        ctx.prec = 80
        return Decimal(int(value)).scaleb(-places)


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{what} {moment} has no time zone")
    return moment


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _time(value: Any) -> datetime | None:
    return None if value is None else as_time(value)


def _canonical(value: Any) -> Any:
    """Parameters with their keys in order, so the same programme always stores the same text and the bundled
    merge can tell a changed one from an unchanged one."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _programme_row(programme: Programme, origin: str) -> tuple[Any, ...]:
    if not PROGRAMME_ID.match(programme.id):
        raise ValueError(f"{programme.id!r} is not a programme id: lower-case letters, digits and '-', 2 to 40")
    if programme.kind not in KINDS:
        raise ValueError(f"{programme.kind!r} is not a kind of programme: {', '.join(KINDS)}")
    return (
        programme.id,
        programme.kind,
        programme.token,
        programme.symbol,
        encode_json(_canonical(programme.params)),
        programme.source,
        origin,
        _text(programme.total_supply),
        programme.supply_source,
        _text(programme.milestone_tokens),
        programme.note,
    )


def _programme(row: Row) -> Programme:
    return Programme(
        id=row["programme"],
        kind=cast(ProgrammeKind, row["kind"]),
        token=row["token"],
        symbol=row["symbol"],
        params=decode_json(row["params"]),
        source=row["source"],
        origin="chat" if row["origin"] == "chat" else "bundled",
        total_supply=_decimal(row["total_supply"]),
        supply_source=row["supply_source"],
        milestone_tokens=_decimal(row["milestone_tokens"]),
        note=row["note"],
    )


def _buy_row(programme_id: str, buy: Buy) -> tuple[Any, ...]:
    """The stored form of one buy, checked before anything is written."""
    start, end = _aware(buy.start, "a buy's start"), _aware(buy.end, "a buy's end")
    if not buy.key:
        raise ValueError("a buy needs a key")
    if start > end:
        raise ValueError(f"buy {buy.key} ends before it starts")
    if buy.basis not in ("measured", "estimated"):
        raise ValueError(f"buy {buy.key} has basis {buy.basis!r}")
    return (
        programme_id,
        buy.key,
        start,
        end,
        end.astimezone(UTC).date().isoformat(),
        scaled(buy.tokens, TOKEN_PLACES, f"buy {buy.key}: tokens"),
        scaled(buy.usd, USD_PLACES, f"buy {buy.key}: usd"),
        buy.basis,
        buy.note,
    )


def _chunks(rows: Sequence[tuple[Any, ...]], size: int) -> Iterable[Sequence[tuple[Any, ...]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


# Every window's sums in one pass over the programme's buys, and every window's longest gap in one over its
# snapshots: one statement, one trip off the loop. A buy counts in a window when it ended inside it.
_WINDOW_AGGREGATES = ", ".join(
    f"COUNT(*) FILTER (WHERE {cond}) AS n_{name}, "
    f"SUM(tokens_e8) FILTER (WHERE {cond}) AS tokens_{name}, "
    f"SUM(usd_e6) FILTER (WHERE {cond}) AS usd_{name}, "
    f"MIN(start_at) FILTER (WHERE {cond}) AS from_{name}, "
    f"COUNT(*) FILTER (WHERE {cond} AND basis = 'estimated') AS est_{name}, "
    f"COUNT(*) FILTER (WHERE {cond} AND tokens_e8 IS NULL) AS unknown_{name}"
    for name, cond in ((name, "TRUE" if span is None else f"end_at > :since_{name}") for name, span in WINDOWS)
)
_GAP_AGGREGATES = ", ".join(
    f"MAX(gap_ms) FILTER (WHERE {'TRUE' if span is None else f'taken_at > :since_{name}'}) AS gap_{name}"
    for name, span in WINDOWS
)
_TOTALS = (
    f"SELECT * FROM (SELECT {_WINDOW_AGGREGATES} FROM buyback_buys "  # noqa: S608 - built from constants
    "WHERE programme = :programme AND end_at <= :now) b, "
    f"(SELECT {_GAP_AGGREGATES} FROM buyback_snapshots "
    "WHERE programme = :programme AND taken_at <= :now) s"
)


class BuybackRepo:
    """`perpwatch.buybacks.BuybackLedger` over either engine, plus what the reports and `/buyback` read."""

    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    # --- programmes --------------------------------------------------------------------------------
    async def programmes(self) -> list[Programme]:
        """The programmes being followed (not removed), by id."""
        rows = await self.db.fetch(
            f"SELECT {_PROGRAMME_COLUMNS} FROM buyback_programmes WHERE NOT removed ORDER BY programme"  # noqa: S608
        )
        return [_programme(r) for r in rows]

    async def programme(self, programme_id: str, *, include_removed: bool = False) -> Programme | None:
        row = await self.db.fetchone(
            f"SELECT {_PROGRAMME_COLUMNS} FROM buyback_programmes WHERE programme = ?",  # noqa: S608
            (programme_id,),
        )
        if row is None or (as_bool(row["removed"]) and not include_removed):
            return None
        return _programme(row)

    async def merge_bundled(self, programmes: Sequence[Programme]) -> tuple[int, int]:
        """Bring the bundled defaults in: (added, updated). A bundled programme not stored yet is added; one
        whose definition changed in this release is updated, keeping its history and, if an operator removed
        it, staying removed. An id a chat took is the chat's: the bundled one of that id is not merged. A
        programme no longer bundled is left as it is. Running it again with the same list changes nothing."""
        wanted = [_programme_row(p, "bundled") for p in programmes]
        now = self.clock.now()
        added = updated = 0
        async with self.db.transaction() as tx:
            for row in wanted:
                stored = await tx.fetchone(
                    f"SELECT {_PROGRAMME_COLUMNS} FROM buyback_programmes WHERE programme = ?",  # noqa: S608
                    (row[0],),
                )
                if stored is None:
                    await tx.execute(
                        f"INSERT INTO buyback_programmes ({_PROGRAMME_COLUMNS}, created_at, updated_at) "  # noqa: S608
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,FALSE,?,?)",
                        (*row, now, now),
                    )
                    added += 1
                elif stored["origin"] == "bundled" and tuple(stored[i] for i in range(len(row))) != row:
                    await tx.execute(
                        "UPDATE buyback_programmes SET kind=?, token=?, symbol=?, params=?, source=?, "
                        "total_supply=?, supply_source=?, milestone_tokens=?, note=?, updated_at=? WHERE programme=?",
                        (*row[1:6], *row[7:], now, row[0]),
                    )
                    updated += 1
        return added, updated

    async def add(self, programme: Programme) -> Programme:
        """A programme a chat adds. Conflict when its id is taken, by any programme, removed ones included
        (a removed bundled one comes back with `restore`, its history with it)."""
        row = _programme_row(programme, "chat")
        now = self.clock.now()
        async with self.db.transaction() as tx:
            taken = await tx.fetchone(
                "SELECT origin, removed FROM buyback_programmes WHERE programme = ?", (programme.id,)
            )
            if taken is not None:
                if taken["origin"] == "bundled" and as_bool(taken["removed"]):
                    raise Conflict(f"{programme.id} is a bundled programme that was removed: restore it instead")
                raise Conflict(f"a programme named {programme.id} exists already")
            await tx.execute(
                f"INSERT INTO buyback_programmes ({_PROGRAMME_COLUMNS}, created_at, updated_at) "  # noqa: S608
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,FALSE,?,?)",
                (*row, now, now),
            )
        added = await self.programme(programme.id)
        assert added is not None
        return added

    async def remove(self, programme_id: str) -> bool:
        """Stop following a programme: a bundled one is marked removed (history kept), a chat's is deleted with
        its history (the module's docstring says why). False when there was no such programme to remove."""
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT origin, removed FROM buyback_programmes WHERE programme = ?", (programme_id,)
            )
            if row is None or as_bool(row["removed"]):
                return False
            if row["origin"] == "bundled":
                await tx.execute(
                    "UPDATE buyback_programmes SET removed = TRUE, updated_at = ? WHERE programme = ?",
                    (self.clock.now(), programme_id),
                )
                return True
            for table in ("buyback_buys", "buyback_snapshots", "buyback_sources"):
                await tx.execute(f"DELETE FROM {table} WHERE programme = ?", (programme_id,))  # noqa: S608
            await tx.execute("DELETE FROM buyback_programmes WHERE programme = ?", (programme_id,))
        return True

    async def restore(self, programme_id: str) -> bool:
        """Follow a removed bundled programme again, with the history it had; False when none was removed."""
        changed = await self.db.execute(
            "UPDATE buyback_programmes SET removed = FALSE, updated_at = ? WHERE programme = ? AND removed",
            (self.clock.now(), programme_id),
        )
        return changed > 0

    # --- a source's steps --------------------------------------------------------------------------
    async def cursor(self, programme_id: str) -> Any | None:
        row = await self.db.fetchone("SELECT cursor FROM buyback_sources WHERE programme = ?", (programme_id,))
        return None if row is None or row[0] is None else decode_json(row[0])

    async def last_snapshot(self, programme_id: str) -> Snapshot | None:
        row = await self.db.fetchone(
            "SELECT taken_at, balance, cost_usd, gap_ms FROM buyback_snapshots WHERE programme = ? "
            "ORDER BY taken_at DESC LIMIT 1",
            (programme_id,),
        )
        return None if row is None else _snapshot(row)

    async def record(self, programme_id: str, fetched: Fetched, *, at: datetime) -> int:
        """Store one step of a source in one transaction: its buys (a key already stored is skipped), its
        snapshot, its cursor and published total, and the source marked good. The buys that were new.

        Everything is converted before the transaction starts, so a buy that cannot be stored (ValueError)
        refuses the whole step with nothing written; the source will read the same step again."""
        _aware(at, "the time of a step")
        seen: dict[str, tuple[Any, ...]] = {}
        for buy in fetched.buys:
            seen.setdefault(buy.key, _buy_row(programme_id, buy))  # a key twice in one page: the first counts
        rows = list(seen.values())
        cursor = encode_json(fetched.cursor)
        snapshot = fetched.snapshot
        snap_row = None if snapshot is None else _snapshot_row(programme_id, snapshot)
        starts = [row[2] for row in rows] + ([snapshot.taken_at] if snapshot is not None else [])
        since = min(starts) if starts else None
        total = fetched.running_total
        new = 0
        async with self.db.transaction() as tx:
            await _must_exist(tx, programme_id)
            for chunk in _chunks(rows, INSERT_ROWS):
                values = ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(chunk))
                inserted = await tx.fetch(
                    f"INSERT INTO buyback_buys ({_BUY_COLUMNS}) VALUES {values} "  # noqa: S608 - placeholders only
                    "ON CONFLICT (programme, key) DO NOTHING RETURNING key",
                    [value for row in chunk for value in row],
                )
                new += len(inserted)
            if snap_row is not None:
                await tx.execute(
                    "INSERT INTO buyback_snapshots (programme, taken_at, balance, cost_usd, gap_ms) "
                    "VALUES (?,?,?,?,?) ON CONFLICT (programme, taken_at) DO NOTHING",
                    snap_row,
                )
            await tx.execute(
                "INSERT INTO buyback_sources (programme, cursor, last_good_at, tracked_since, total_tokens, "
                "total_usd, total_source, total_as_of) VALUES (?,?,?,?,?,?,?,?) "
                "ON CONFLICT (programme) DO UPDATE SET cursor = excluded.cursor, "
                "last_good_at = excluded.last_good_at, failing_since = NULL, "
                "tracked_since = CASE WHEN excluded.tracked_since IS NULL THEN buyback_sources.tracked_since "
                "WHEN buyback_sources.tracked_since IS NULL OR excluded.tracked_since < buyback_sources.tracked_since "
                "THEN excluded.tracked_since ELSE buyback_sources.tracked_since END, "
                "total_tokens = CASE WHEN excluded.total_source IS NULL THEN buyback_sources.total_tokens "
                "ELSE excluded.total_tokens END, "
                "total_usd = CASE WHEN excluded.total_source IS NULL THEN buyback_sources.total_usd "
                "ELSE excluded.total_usd END, "
                "total_as_of = CASE WHEN excluded.total_source IS NULL THEN buyback_sources.total_as_of "
                "ELSE excluded.total_as_of END, "
                "total_source = COALESCE(excluded.total_source, buyback_sources.total_source)",
                (
                    programme_id,
                    cursor,
                    at,
                    since,
                    _text(total.tokens) if total else None,
                    _text(total.usd) if total else None,
                    total.source if total else None,
                    _aware(total.as_of, "a running total's time") if total else None,
                ),
            )
        return new

    async def failed(self, programme_id: str, error: str, *, at: datetime) -> None:
        """The source's step failed: failing since the first failure after the last good step."""
        async with self.db.transaction() as tx:
            await _must_exist(tx, programme_id)
            await tx.execute(
                "INSERT INTO buyback_sources (programme, failing_since, last_error) VALUES (?,?,?) "
                "ON CONFLICT (programme) DO UPDATE SET last_error = excluded.last_error, "
                "failing_since = COALESCE(buyback_sources.failing_since, excluded.failing_since)",
                (programme_id, _aware(at, "the time of a failure"), error),
            )

    async def health(self, programme_id: str) -> ProgrammeHealth:
        """The source's health; `last_error` stays after a recovery, for `/status` to say what last went wrong."""
        row = await self.db.fetchone(
            "SELECT last_good_at, failing_since, last_error, tracked_since FROM buyback_sources WHERE programme = ?",
            (programme_id,),
        )
        if row is None:
            return ProgrammeHealth()
        return ProgrammeHealth(
            last_good_at=_time(row["last_good_at"]),
            failing_since=_time(row["failing_since"]),
            last_error=row["last_error"],
            tracked_since=_time(row["tracked_since"]),
        )

    async def running_total(self, programme_id: str) -> RunningTotal | None:
        row = await self.db.fetchone(
            "SELECT total_tokens, total_usd, total_source, total_as_of FROM buyback_sources WHERE programme = ?",
            (programme_id,),
        )
        if row is None or row["total_source"] is None:
            return None
        return RunningTotal(
            tokens=_decimal(row["total_tokens"]),
            usd=_decimal(row["total_usd"]),
            source=row["total_source"],
            as_of=as_time(row["total_as_of"]),
        )

    # --- reads for the reports (they visit the whole history: off the loop) -------------------------
    async def totals(self, programme_id: str, now: datetime) -> list[WindowTotal]:
        """What the programme bought in each window ending at `now`, in `WINDOWS` order."""
        params: dict[str, Any] = {"programme": programme_id, "now": _aware(now, "now")}
        for name, span in WINDOWS:
            if span is not None:
                params[f"since_{name}"] = now - span
        [row] = await self.db.fetch_slow(_TOTALS, params)
        result = []
        for name, _span in WINDOWS:
            gap = row[f"gap_{name}"]
            start = row[f"from_{name}"]
            result.append(
                WindowTotal(
                    window=name,
                    tokens=unscaled(row[f"tokens_{name}"], TOKEN_PLACES),
                    usd=unscaled(row[f"usd_{name}"], USD_PLACES),
                    buys=int(row[f"n_{name}"]),
                    tokens_known=int(row[f"unknown_{name}"]) == 0,
                    covered_from=None if start is None else as_time(start),
                    gap_s=None if gap is None else int(gap) / 1000,
                    estimated=int(row[f"est_{name}"]) > 0,
                )
            )
        return result

    async def cumulative_total(self, programme_id: str) -> tuple[Decimal | None, Decimal]:
        """(tokens, usd) bought over the whole history, for milestones; tokens None when the source does not
        give them for every buy."""
        [row] = await self.db.fetch_slow(
            "SELECT SUM(tokens_e8), SUM(usd_e6), COUNT(*) FILTER (WHERE tokens_e8 IS NULL) FROM buyback_buys "
            "WHERE programme = ?",
            (programme_id,),
        )
        tokens = None if int(row[2]) > 0 else unscaled(row[0], TOKEN_PLACES)
        return tokens, unscaled(row[1], USD_PLACES)

    async def days(self, programme_id: str) -> list[DayPoint]:
        """What was bought on each UTC day (by the day a buy ended), oldest first: the chart's points."""
        rows = await self.db.fetch_slow(
            "SELECT day, SUM(tokens_e8), SUM(usd_e6) FROM buyback_buys WHERE programme = ? GROUP BY day ORDER BY day",
            (programme_id,),
        )
        return [DayPoint(r[0], unscaled(r[1], TOKEN_PLACES), unscaled(r[2], USD_PLACES)) for r in rows]

    async def snapshot_count(self, programme_id: str) -> int:
        [row] = await self.db.fetch_slow("SELECT COUNT(*) FROM buyback_snapshots WHERE programme = ?", (programme_id,))
        return int(row[0])


def _snapshot_row(programme_id: str, snapshot: Snapshot) -> tuple[Any, ...]:
    if not snapshot.balance.is_finite() or (snapshot.cost_usd is not None and not snapshot.cost_usd.is_finite()):
        raise ValueError(f"the snapshot at {snapshot.taken_at} holds a value that is not a number")
    gap = None if snapshot.gap_s is None else round(snapshot.gap_s * 1000)
    return (
        programme_id,
        _aware(snapshot.taken_at, "a snapshot's time"),
        str(snapshot.balance),
        _text(snapshot.cost_usd),
        gap,
    )


def _snapshot(row: Row) -> Snapshot:
    gap = row["gap_ms"]
    return Snapshot(
        taken_at=as_time(row["taken_at"]),
        balance=Decimal(row["balance"]),
        cost_usd=_decimal(row["cost_usd"]),
        gap_s=None if gap is None else int(gap) / 1000,
    )


async def _must_exist(tx: Tx, programme_id: str) -> None:
    if await tx.fetchone("SELECT 1 FROM buyback_programmes WHERE programme = ?", (programme_id,)) is None:
        raise LookupError(f"no buyback programme {programme_id}")
