"""`perpwatch db copy`: every row of one database into another, empty one; the way up from SQLite to PostgreSQL.

The source is read in ONE read transaction, so the copy is a consistent snapshot, and the read never blocks
the bot, which may still be running on it: on SQLite a connection of its own reads beside the bot's writes
(WAL), on PostgreSQL a REPEATABLE READ transaction. (Not `Engine.transaction()` on SQLite: that is BEGIN
IMMEDIATE, the write lock, which would stall the bot for the whole copy.) What the bot accepts after the
snapshot is not in the copy, which is why the final cut-over stops the bot first. Nothing is written to the
source.

The target is migrated to the source's schema version, then filled in ONE transaction: table by table,
parents before children, ids kept, `CHUNK` rows per batch, so memory stays flat however long the tables
are, and a copy that fails leaves the target as empty as it was. Each value is converted to the type of its
target column, which the target's own schema tells (SQLite's timestamp text to timestamptz, its 0/1 to
boolean); then every identity sequence is set to the highest id copied, so new rows get fresh ids.

A target already holding exactly this copy (the same rows in every table, compared by an order-free digest
of each table) is left alone, so running the copy twice changes nothing; any other rows, and it refuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.admin import Reader, release_version, schema_version, table_names
from storage.engine import Engine, StorageStartError, Tx, as_bool, as_time

CHUNK = 5000
"""Rows per read from the source and per batch into the target."""

PROGRESS_EVERY = 100_000
"""A long table reports how far it got every this many rows."""

TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chats", ("id",)),
    ("subscriptions", ("id",)),
    ("chat_thresholds", ("chat_id", "topic")),
    ("watchlist", ("id",)),
    ("watcher_state", ("watcher",)),
    ("watcher_kv", ("watcher", "key")),
    ("events", ("id",)),
    ("deliveries", ("id",)),
    ("threads", ("chat_id", "thread")),
    ("buyback_programmes", ("programme",)),
    ("buyback_buys", ("programme", "key")),
    ("buyback_snapshots", ("programme", "taken_at")),
    ("buyback_sources", ("programme",)),
    ("calendar_entries", ("entry_id",)),
    ("calendar_reminders", ("entry_id", "revision", "lead")),
)
"""Every table of the schema but `schema_version`, parents before the children whose foreign keys name them,
each with its primary key: the order a table is read in, page after page."""

NOT_COPIED = frozenset({"schema_version"})
"""The target's own migrations write it."""

Progress = Callable[[str], None]


class CopyError(StorageStartError):
    """The copy refused, or failed: one line for the operator, and the target is as it was."""


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    version: int
    """The schema version both databases are at."""
    rows: Mapping[str, int]
    """Rows copied, by table (for an earlier copy found in place: the rows it holds)."""
    already_copied: bool = False
    """The target already held exactly this copy: nothing was written."""

    @property
    def total(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class _Column:
    name: str
    convert: Callable[[Any], Any] | None
    """To the target column's type; None when the value goes in as it is."""
    identity: bool = False


def _time(value: Any) -> datetime:
    moment = as_time(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_CONVERT: dict[str, Callable[[Any], Any]] = {"timestamp with time zone": _time, "boolean": as_bool}
"""PostgreSQL column types whose values SQLite stores as something else. A SQLite target needs none: its
engine stores datetimes as its fixed text, and booleans are 0/1 already."""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def copy_database(
    source: Engine, target: Engine, *, progress: Progress | None = None, chunk: int = CHUNK
) -> CopyReport:
    """Copy the open `source` into the open, empty `target` (opened without migrating: this migrates it).

    CopyError when the copy refuses (a target with rows other than this copy, schema versions that cannot
    meet) or fails (the target is left as it was)."""
    say = progress or (lambda _line: None)
    if source.display == target.display:
        raise CopyError(f"{target.display} is the database being copied: name another one to copy it into")
    async with read_snapshot(source) as src:
        version = await _source_version(src, source)
        await _check_tables(src, source, "source")
        counts = {table: await _count(src, table) for table, _key in TABLES}
        held = await _rows_held(target)
        if any(held.values()):
            return await _already_copied(src, source, target, version, counts, held, chunk)
        await _migrate(target)
        target_version = await schema_version(target, target.kind)
        if target_version != version:
            raise CopyError(
                f"target database {target.display} is at schema version {target_version} and the source "
                f"{source.display} at {version}: copy with the perpwatch release that migrated the target"
            )
        await _check_tables(target, target, "target")
        columns = {table: await _columns(src, source, target, table) for table, _key in TABLES}
        say(f"copying {source.display} (schema version {version}) into {target.display}")
        copied: dict[str, int] = {}
        stage = "while checking that it is empty"
        try:
            async with target.transaction() as tx:
                await tx.serialize("perpwatch db copy")  # two copies into one target take turns; the second refuses
                held = {t: await _count(tx, t) for t, _key in TABLES}
                if any(held.values()):
                    raise _not_empty(target, held)
                for table, key in TABLES:
                    stage = f"at table {table}"
                    copied[table] = await _copy_table(src, tx, table, key, columns[table], counts[table], chunk, say)
                if target.kind == "postgresql":
                    stage = "while setting its id sequences"
                    await _reset_sequences(tx, columns)
        except CopyError:
            raise
        except Exception as exc:
            detail = str(exc).strip() or "no detail"
            raise CopyError(
                f"copying into {target.display} failed {stage} ({type(exc).__name__}: {detail}); "
                "nothing of it was kept: the target is as empty as it was"
            ) from exc
    return CopyReport(source=source.display, target=target.display, version=version, rows=copied)


@contextlib.asynccontextmanager
async def read_snapshot(engine: Engine) -> AsyncIterator[Tx]:
    """One read transaction over the whole database, blocking none of its writers."""
    path = getattr(engine, "path", ":memory:")
    if engine.kind != "sqlite" or path == ":memory:":  # an in-memory database has its one connection
        async with engine.transaction() as tx:
            if engine.kind == "postgresql":  # before the first query: one snapshot for every statement after
                await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield tx
        return
    from storage.sqlite import _SqliteTx

    # While the snapshot is open the bot's checkpoints cannot restart the WAL, which grows until the copy ends.
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only=ON")
        conn.execute("PRAGMA busy_timeout=5000")  # only while the snapshot starts: WAL readers wait for nobody
        conn.execute("BEGIN")
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()  # the snapshot is taken here
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise CopyError(f"database {engine.display} cannot be read for the copy: {exc}") from None
    try:
        yield _SqliteTx(conn)
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        conn.close()


async def _source_version(src: Tx, source: Engine) -> int:
    version = await schema_version(src, source.kind)
    release = release_version(source.kind)
    if version == 0:
        raise CopyError(
            f"source database {source.display} has no perpwatch tables: is PERPWATCH_DATABASE_URL the bot's database?"
        )
    if version > release:
        raise CopyError(
            f"source database {source.display} is at schema version {version}, newer than this release knows "
            f"({release}): copy it with the perpwatch release that migrated it"
        )
    if version < release:
        raise CopyError(
            f"source database {source.display} is at schema version {version}, this release's is {release}: "
            "run `perpwatch db upgrade` first (with the bot stopped), then copy"
        )
    return version


async def _check_tables(db: Reader, engine: Engine, role: str) -> None:
    """The source must have exactly the tables the copy knows (one it does not know would be left behind);
    the target at least those (another application's tables beside them are none of its business)."""
    have = await table_names(db, engine.kind) - NOT_COPIED
    known = {table for table, _key in TABLES}
    unknown = sorted(have - known) if role == "source" else []
    missing = sorted(known - have)
    if unknown or missing:
        raise CopyError(
            f"{role} database {engine.display} does not have the tables this release copies"
            + (f"; it has {', '.join(unknown)}, which the copy does not know" if unknown else "")
            + (f"; it lacks {', '.join(missing)}" if missing else "")
        )


async def _count(db: Reader, table: str) -> int:
    rows = await db.fetch(f"SELECT COUNT(*) FROM {_q(table)}")  # noqa: S608 - a name from TABLES
    return int(rows[0][0])


async def _rows_held(target: Engine) -> dict[str, int]:
    """Rows in each of the tables the target has (a new database has none of them yet)."""
    present = await table_names(target, target.kind)
    return {table: await _count(target, table) for table, _key in TABLES if table in present}


async def _migrate(target: Engine) -> None:
    try:
        await target.migrate()
    except StorageStartError:
        raise
    except Exception as exc:
        raise CopyError(
            f"target database {target.display} could not be migrated: {type(exc).__name__}: {exc}"
        ) from None


def _not_empty(target: Engine, held: Mapping[str, int], why: str = "") -> CopyError:
    others = ", ".join(t for t, n in held.items() if n and t not in ("chats", "events"))
    also = f"; rows in {others} too" if others else ""
    return CopyError(
        f"target database {target.display} is not empty ({held.get('chats', 0)} chats, {held.get('events', 0)} "
        f"events{also}{why}): perpwatch db copy only fills an empty database"
    )


async def _columns(src: Reader, source: Engine, target: Engine, table: str) -> list[_Column]:
    """The target table's columns in its order, each with its conversion; the source must have the same."""
    if target.kind == "postgresql":
        rows = await target.fetch(
            "SELECT column_name, data_type, (is_identity = 'YES' OR column_default LIKE 'nextval(%') "
            "FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? "
            "ORDER BY ordinal_position",
            (table,),
        )
        columns = [_Column(str(r[0]), _CONVERT.get(str(r[1])), bool(r[2])) for r in rows]
    else:
        rows = await target.fetch("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))
        columns = [_Column(str(r[0]), None) for r in rows]
    have = await _column_names(src, source.kind, table)
    wanted = {c.name for c in columns}
    if have != wanted:
        raise CopyError(
            f"table {table} differs between the source ({', '.join(sorted(have - wanted)) or 'no'} other columns) "
            f"and the target ({', '.join(sorted(wanted - have)) or 'no'} other columns) at the same schema version: "
            "a fault in this release's migrations, please report it"
        )
    return columns


async def _column_names(db: Reader, kind: str, table: str) -> set[str]:
    if kind == "postgresql":
        rows = await db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ?",
            (table,),
        )
    else:
        rows = await db.fetch("SELECT name FROM pragma_table_info(?)", (table,))
    return {str(r[0]) for r in rows}


async def _pages(
    db: Reader, table: str, key: Sequence[str], columns: Sequence[_Column], chunk: int
) -> AsyncIterator[list[list[Any]]]:
    """The table's rows, `chunk` at a time in key order (each page a seek past the last key of the one
    before: no OFFSET, so a late page costs what the first did), converted to the target's types."""
    names = [c.name for c in columns]
    listed = ", ".join(_q(n) for n in names)
    keys = ", ".join(_q(k) for k in key)
    after = f"({keys}) > ({', '.join('?' * len(key))})" if len(key) > 1 else f"{_q(key[0])} > ?"
    at = [names.index(k) for k in key]
    converting = [(i, c.convert) for i, c in enumerate(columns) if c.convert is not None]
    last: tuple[Any, ...] | None = None
    while True:
        where = "" if last is None else f" WHERE {after}"
        rows = await db.fetch(
            f"SELECT {listed} FROM {_q(table)}{where} ORDER BY {keys} LIMIT ?",  # noqa: S608 - names from the schema
            (*(last or ()), chunk),
        )
        if not rows:
            return
        page = [list(row) for row in rows]
        for values in page:
            for i, convert in converting:
                if values[i] is not None:
                    values[i] = convert(values[i])
        yield page
        if len(rows) < chunk:
            return
        last = tuple(rows[-1][i] for i in at)


async def _copy_table(
    src: Reader,
    tx: Tx,
    table: str,
    key: Sequence[str],
    columns: Sequence[_Column],
    total: int,
    chunk: int,
    say: Progress,
) -> int:
    listed = ", ".join(_q(c.name) for c in columns)
    insert = f"INSERT INTO {_q(table)} ({listed}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
    copied = 0
    async for page in _pages(src, table, key, columns, chunk):
        await tx.executemany(insert, page)
        before, copied = copied, copied + len(page)
        if copied < total and copied // PROGRESS_EVERY > before // PROGRESS_EVERY:
            say(f"{table}: {copied:,} of {total:,} rows")
    say(f"{table}: {copied:,} {'row' if copied == 1 else 'rows'}")
    return copied


async def _reset_sequences(tx: Tx, columns: Mapping[str, Sequence[_Column]]) -> None:
    """Each identity (or serial) column's sequence to the highest id copied, so the next row gets the id after
    it (an empty table's starts at 1 again)."""
    for table, listed in columns.items():
        for column in listed:
            if column.identity:
                name = _q(column.name)
                await tx.fetch(
                    f"SELECT setval(pg_get_serial_sequence(?, ?), COALESCE(MAX({name}), 1), "  # noqa: S608
                    f"MAX({name}) IS NOT NULL) FROM {_q(table)}",
                    (table, column.name),
                )


async def _already_copied(
    src: Tx,
    source: Engine,
    target: Engine,
    version: int,
    counts: Mapping[str, int],
    held: Mapping[str, int],
    chunk: int,
) -> CopyReport:
    """The target has rows: the report of a copy that is already there, or the refusal. Nothing is written.

    Row counts first (a database in use differs at once), then every table's digest on both sides, which
    reads both databases whole: only a target that holds exactly the source's rows is "already copied"."""
    if await schema_version(target, target.kind) != version or any(
        held.get(table, 0) != n for table, n in counts.items()
    ):
        raise _not_empty(target, held)
    await _check_tables(target, target, "target")
    columns = {table: await _columns(src, source, target, table) for table, _key in TABLES}
    async with read_snapshot(target) as dst:
        for table, key in TABLES:
            wanted = await _digest(src, table, key, columns[table], chunk)
            if await _digest(dst, table, key, columns[table], chunk) != wanted:
                raise _not_empty(target, held, f"; its {table} differ from the source's")
    return CopyReport(
        source=source.display, target=target.display, version=version, rows=dict(counts), already_copied=True
    )


async def _digest(db: Reader, table: str, key: Sequence[str], columns: Sequence[_Column], chunk: int) -> int:
    """A digest of the table's rows that does not depend on their order (the engines collate text keys
    differently): the sum of each row's hash, with every value in one canonical form whichever engine held it."""
    total = 0
    async for page in _pages(db, table, key, columns, chunk):
        for row in page:
            text = repr(tuple(_canonical(v) for v in row)).encode()
            total += int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "big")
    return total % (1 << 128)


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):  # SQLite's stored form (storage.sqlite.to_db_time)
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, bool):
        return int(value)
    return value
