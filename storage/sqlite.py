"""One SQLite connection on the event loop's thread, its pragmas, numbered migrations, and a checkpointer.

Why the loop's own thread and not a database thread (aiosqlite, which this replaced): every statement the
bot issues is an index seek or a small insert into a page-cached database (0.02-0.2 ms measured on
aiosqlite's thread). A thread hop per statement cost more than the statement, a transaction took one hop
per statement under a loop-side lock, and the GIL made the two threads wait on each other (5-12 ms before
a queued statement started, under load). With this change the frame-to-send benchmark's p99 fell from
about 60 ms to 18-38 ms (six runs), and the bot's CPU from about 58% to about 40% of a core (README, "Performance").
The one SQLite operation that can take long is fsync, and in WAL mode with synchronous=NORMAL a commit only
appends to the WAL without syncing; syncing happens at checkpoints, and once more when a commit starts the
WAL afresh after one: SQLite syncs the WAL's new header then, on the committing thread, which is the loop's
(short when the disk is idle, longer while it writes much back; not moved off the loop yet). A worker thread
checkpoints on its own connection four times a second (`_checkpoint_forever`), so at ordinary rates the loop
never does. In a sustained flood of commits every such checkpoint races a commit, so the WAL would never
restart and would grow without end; bulk writers therefore wait for the worker's checkpoint every
`ROWS_BEFORE_CHECKPOINT` rows (`make_room`), and a WAL still past `RESTART_FRAMES` (many writers, none of
them bulk: the dispatcher's hundreds of workers) is checkpointed next with every writer waiting for it, and
truncated, so the WAL restarts as an empty file (why empty: `RESTART_FRAMES`). SQLite's own checkpoint after
a commit stays on as the hard bound (`WAL_CHECKPOINT_PAGES`): only past it does the loop checkpoint
itself.

Transactions are `async with` blocks (the contract in `storage.engine`), but every statement inside runs
synchronously and never yields, so no other task's statement can land inside one. Should a transaction
body await something that does yield, a statement from another task raises at once instead of
interleaving (`_busy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from storage.engine import (
    DATABASE_SETTING,
    Engine,
    Params,
    Row,
    StorageStartError,
    StorageUnavailable,
    Tx,
    migration_scripts,
)

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 0.25
"""How often the worker thread copies the WAL back into the database file (the only step that syncs)."""

WAL_CHECKPOINT_PAGES = 4000
"""The WAL's bound: past it the loop's connection checkpoints after its commit (SQLite's default is 1,000;
measured in the accept benchmark, 4,000 gave 15-25% more events/s in a flood, for a WAL of about 16 MiB)."""

ROWS_BEFORE_CHECKPOINT = 1000
"""Rows a bulk writer may change before `make_room` waits for the worker's checkpoint. A row costs one to
three WAL pages (its table's and its indexes' pages: fewer when a commit holds many rows), so this stays
inside the WAL's bound."""

RESTART_FRAMES = 1000
"""A WAL this long at a checkpoint has not restarted: commits kept landing during the checkpoints. A second
checkpoint follows at once, holding writers (they wait, the loop does not) until it is done, and truncating
the WAL, so the next commit starts it afresh. Without it, draining a burst to many chats kept the WAL near
its bound, where the loop's own connection checkpoints and syncs (bench/pipeline.py drain-typical).

Why truncate rather than let SQLite reuse the file: a WAL frame is a page plus a 24-byte header, so frames
never line up with the OS's pages, and a commit that overwrites part of a page the OS has dropped from its
cache reads that page from disk first, inside the commit, on the loop's thread. Kernels reclaim cold file
pages even with memory to spare, and the tail of a WAL that once grew long is cold. Pages past the end of
the file are never read. The truncation (which can wait for the disk too: freeing blocks on a filesystem
mounted with `discard`) happens on the worker's thread, not in the loop's commit."""

CHECKPOINT_WAIT_S = 0.1
"""How long the worker's checkpoint waits for a reader before it gives up. Only a truncating one waits
(a passive one never does), and it holds every writer meanwhile, so it waits about as long as one of the
loop's statements lasts. A reader on a thread (`/status`'s counts over a large outbox) outlasts it: the
WAL is then cut on a later round. Python's own default, 5 s, would hold every commit that long."""

WAL_SIZE_LIMIT_BYTES = 32 * 1024 * 1024
"""A WAL that grew past this in a burst, and restarted in a passive checkpoint, is cut back to it by the
loop's next commit, so the disk is returned."""


_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_BUSY,  # another process holds the lock
        sqlite3.SQLITE_PROTOCOL,  # a lock race SQLite gave up on
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,  # e.g. the filesystem was remounted read-only after disk errors
    }
)
"""Not SQLITE_LOCKED: on our single connection it means a statement was left unfinished, a bug to raise."""


_WRITABLE = f"make the file and its folder writable by this user, or point {DATABASE_SETTING} at a writable place"

_START_REFUSALS = {
    sqlite3.SQLITE_CANTOPEN: (
        "cannot be opened or created ({error})",
        "SQLite needs the file, its folder and the -wal and -shm files beside it writable by this user; fix "
        f"that, or point {DATABASE_SETTING} at a writable place",
    ),
    sqlite3.SQLITE_READONLY: ("is read-only ({error})", _WRITABLE),
    sqlite3.SQLITE_PERM: ("may not be written ({error})", _WRITABLE),
    sqlite3.SQLITE_NOTADB: (
        "is not a SQLite database, or its header is damaged",
        f"point {DATABASE_SETTING} at the right file, or move this one away to start with an empty database",
    ),
    sqlite3.SQLITE_CORRUPT: (
        "is damaged ({error})",
        "restore it from a backup (or try `sqlite3 {path} .recover`), or move it away to start with an empty database",
    ),
    sqlite3.SQLITE_BUSY: (
        "is locked by another process",
        f"stop the other process (another perpwatch on the same {DATABASE_SETTING}?) and start again",
    ),
    sqlite3.SQLITE_FULL: ("cannot grow: the disk is full", "free some space and start again"),
    sqlite3.SQLITE_IOERR: ("cannot be read or written ({error})", "check the disk, then start again"),
}
"""What start-up refuses, by SQLite's primary result code. Any other code is a bug in our own SQL, and raises."""


def _start_error(path: str, code: int, error: object) -> StorageStartError:
    shown = os.path.abspath(path)
    problem, remedy = _START_REFUSALS[code]
    if code == sqlite3.SQLITE_CANTOPEN and os.path.isdir(path):
        problem, remedy = "is a folder, not a file", f"point {DATABASE_SETTING} at a file, e.g. one inside it"
    elif code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY) and _on_read_only_mount(path):
        problem, remedy = (
            "is on a read-only file system",
            f"remount it read-write, or point {DATABASE_SETTING} elsewhere",
        )
    return StorageStartError(
        f"database {shown} ({DATABASE_SETTING}) {problem.format(error=error)}: {remedy.format(path=shown)}"
    )


def _on_read_only_mount(path: str) -> bool:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _unavailable(exc: BaseException) -> StorageUnavailable | None:
    """The error as a StorageUnavailable when waiting may cure it; None for a fault in the work itself."""
    if not isinstance(exc, sqlite3.Error) or exc.sqlite_errorcode is None:
        return None
    if exc.sqlite_errorcode & 0xFF not in _UNAVAILABLE:  # extended codes keep the primary code in the low byte
        return None
    return StorageUnavailable(f"{exc.sqlite_errorname}: {exc}")


def to_db_time(moment: datetime) -> str:
    """One fixed ISO form, so text comparison in SQL orders times correctly."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _adapt(params: Params) -> Params:
    """Datetimes as the fixed ISO text (SQLite has no timestamp type); everything else as it is."""
    if isinstance(params, Mapping):
        if any(isinstance(v, datetime) for v in params.values()):
            return {k: to_db_time(v) if isinstance(v, datetime) else v for k, v in params.items()}
        return params
    if any(isinstance(v, datetime) for v in params):
        return [to_db_time(v) if isinstance(v, datetime) else v for v in params]
    return params


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self.conn.execute(sql, _adapt(params)).rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self.conn.executemany(sql, [_adapt(r) for r in rows])

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return self.conn.execute(sql, _adapt(params)).fetchall()

    async def serialize(self, name: str) -> None:
        """BEGIN IMMEDIATE already holds the one write lock: writers commit one after another."""


class SqliteEngine(Engine):
    kind = "sqlite"

    def __init__(self, path: Path | str, *, checkpoint_every_s: float = CHECKPOINT_EVERY_S) -> None:
        self.path = str(path)
        self.display = f"sqlite:///{self.path}"
        self.checkpoint_every_s = checkpoint_every_s
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[tuple[int, int]] | None = None
        self._changes_at_checkpoint = 0
        self._writers_held: asyncio.Future[None] | None = None
        self._busy = False

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self, *, migrate: bool = True) -> None:
        """Connect, check and migrate. A database that cannot be used at all (no way to create it, read-only,
        not a database, damaged) raises StorageStartError, and nothing stays open. The quick check reads every
        page once: a damaged database refused here would otherwise start and fail on every write."""
        in_memory = self.path == ":memory:"
        try:
            if not in_memory:
                self._make_folder()
            conn = self._conn = sqlite3.connect(self.path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL: a commit survives a crash of the process; no fsync per commit
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Only another process (an operator's sqlite3 shell) can hold a lock against this connection. Waiting
            # for it stops the loop, so the wait is short; what fails then is held and tried again by its caller.
            conn.execute("PRAGMA busy_timeout=100")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._check_usable(conn)
            if migrate:
                self._migrate()
        except BaseException as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if isinstance(exc, sqlite3.Error) and (code := (exc.sqlite_errorcode or 0) & 0xFF) in _START_REFUSALS:
                raise _start_error(self.path, code, exc) from None
            raise
        if not in_memory:
            self._checkpointer = asyncio.create_task(self._checkpoint_forever(), name="storage:checkpoint")

    def _make_folder(self) -> None:
        folder = Path(self.path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = "a file is in the way" if isinstance(exc, FileExistsError | NotADirectoryError) else exc.strerror
            raise StorageStartError(
                f"database {os.path.abspath(self.path)} ({DATABASE_SETTING}) has no folder, and "
                f"{os.path.abspath(folder)} cannot be created ({why}): create it, or point {DATABASE_SETTING} at a "
                "folder this user can write"
            ) from None

    def _check_usable(self, conn: sqlite3.Connection) -> None:
        """SQLite opens a damaged file, and a write-protected one read-only, without a word: ask both now."""
        self._read_ahead()
        [(verdict,)] = conn.execute("PRAGMA quick_check(1)").fetchall()
        if verdict != "ok":
            detail = next((line for line in str(verdict).splitlines() if not line.startswith("***")), verdict)
            raise _start_error(self.path, sqlite3.SQLITE_CORRUPT, f"quick check: {detail[:160]}")
        # A read-only connection fails at its first write; this one leaves nothing behind. A lock another
        # process holds says nothing about that, and the work after start waits for it as usual.
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                return
            raise
        try:
            conn.execute(f"PRAGMA user_version={int(conn.execute('PRAGMA user_version').fetchone()[0])}")
        finally:
            conn.execute("ROLLBACK")

    def _read_ahead(self) -> None:
        """The quick check visits pages in b-tree order, which on a cold disk cache is one random read per
        page; one sequential read first puts the file in the cache and makes the check several times faster."""
        if self.path == ":memory:":
            return
        with contextlib.suppress(OSError), open(self.path, "rb", buffering=0) as file:  # SQLite reports errors
            chunk = bytearray(1 << 20)
            while file.readinto(chunk):
                pass

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
            self._checkpointer = None
        if self._checkpointing is not None:  # a cancel does not stop the thread: let it finish first
            with contextlib.suppress(Exception):
                await self._checkpointing
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()
            self._checkpoint_conn = None
        if self._conn is not None:
            self._conn.close()  # the last connection to close checkpoints what is left and removes the WAL
            self._conn = None

    def _migrate(self) -> list[int]:
        """Apply `migrations/sqlite/NNNN_*.sql` in order, each in its own transaction, recording the version."""
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        applied: list[int] = []
        for version, _name, sql in migration_scripts("sqlite"):
            if version <= current:
                continue
            log.info("migrating database engine=sqlite path=%s version=%d", self.path, version)
            conn.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_version VALUES ({version});\nCOMMIT;")
            applied.append(version)
        return applied

    async def migrate(self) -> list[int]:
        with self._unit():
            return self._migrate()

    async def schema_version(self) -> int:
        rows = await self.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """BEGIN IMMEDIATE … COMMIT; on any failure, ROLLBACK."""
        await self._writers_may_go()
        with self._unit() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # some errors (a full disk) already rolled it back
                    with contextlib.suppress(sqlite3.Error):  # if even this fails, SQLite rolls back on next use
                        conn.execute("ROLLBACK")
                raise

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement on its own (atomic without BEGIN/COMMIT). Returns the rows changed."""
        await self._writers_may_go()
        with self._unit() as conn:
            return conn.execute(sql, _adapt(params)).rowcount

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        with self._unit() as conn:
            return conn.execute(sql, _adapt(params)).fetchall()

    async def fetch_slow(self, sql: str, params: Params = ()) -> list[Row]:
        """On a thread with a connection of its own (WAL lets it read beside the loop's writes). An
        in-memory database has only the one connection, so there it runs here."""
        if self.path == ":memory:":
            return await self.fetch(sql, params)
        adapted = _adapt(params)

        def read() -> list[Row]:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA busy_timeout=1000")
                return conn.execute(sql, adapted).fetchall()
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error as exc:
            if (unavailable := _unavailable(exc)) is not None:
                raise unavailable from exc
            raise

    @contextlib.contextmanager
    def _unit(self) -> Iterator[sqlite3.Connection]:
        """The connection for one unit of work. Refuses to run inside another (only an `await` inside a
        transaction block could get here), and reports a passing fault as StorageUnavailable."""
        if self._busy:
            raise RuntimeError("a statement ran while a transaction was open: something awaited inside one")
        self._busy = True
        try:
            yield self.conn
        except sqlite3.Error as exc:
            if (unavailable := _unavailable(exc)) is not None:
                raise unavailable from exc
            raise
        finally:
            self._busy = False

    # --- checkpoints ------------------------------------------------------------------------------
    async def checkpoint(self, *, truncate: bool = False) -> tuple[int, int]:
        """Copy the WAL back into the database file on a worker thread: (WAL frames, frames copied). A caller
        that finds one running shares it, except one that asks to `truncate`: it waits its turn, and its
        checkpoint also cuts the WAL to nothing (when no reader still needs it), which reports (0, 0)."""
        while truncate and self._checkpointing is not None and not self._checkpointing.done():
            await asyncio.wait([self._checkpointing])
        if self._checkpointing is None or self._checkpointing.done():
            self._changes_at_checkpoint = self.conn.total_changes
            mode = "TRUNCATE" if truncate else "PASSIVE"
            self._checkpointing = asyncio.ensure_future(asyncio.to_thread(self._checkpoint_once, mode))
        return await asyncio.shield(self._checkpointing)

    async def make_room(self) -> None:
        """For bulk writers, between their units of work: a turn for every other task and, once they changed
        many rows since the last checkpoint, the worker's checkpoint awaited. Commits of a flood would
        otherwise race every checkpoint, the WAL would never restart, and at its bound the loop's own
        connection would checkpoint and sync the disk (measured: 40-98 ms stalls in a large prune)."""
        if self._checkpointer is not None and self.conn.total_changes - self._changes_at_checkpoint >= (
            ROWS_BEFORE_CHECKPOINT
        ):
            with contextlib.suppress(Exception):  # the checkpointer reports a failing disk; a writer goes on
                await self.checkpoint()
                return
        await asyncio.sleep(0)

    async def _writers_may_go(self) -> None:
        while self._writers_held is not None:
            await asyncio.shield(self._writers_held)

    async def _checkpoint_holding_writers(self) -> tuple[int, int]:
        """A checkpoint no commit can race: writers wait for it (statements never yield, so none is open).
        It truncates the WAL on the worker's thread, so the commits after it append to an empty file."""
        held = self._writers_held = asyncio.get_running_loop().create_future()
        try:
            return await self.checkpoint(truncate=True)
        finally:
            self._writers_held = None
            held.set_result(None)

    def _checkpoint_once(self, mode: str = "PASSIVE") -> tuple[int, int]:
        # Its own connection, used by one worker thread at a time (the calls never overlap). PASSIVE never
        # waits for, and never blocks, the loop's connection. TRUNCATE takes the write lock, which is why
        # it runs only while writers are held; it waits `CHECKPOINT_WAIT_S` at most for a reader that still
        # needs the WAL, then gives up (it was a passive one).
        if self._checkpoint_conn is None:
            self._checkpoint_conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=CHECKPOINT_WAIT_S
            )
        [(_busy, frames, copied)] = self._checkpoint_conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        return int(frames), int(copied)

    async def _checkpoint_forever(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.checkpoint_every_s)
            try:
                frames, _ = await self.checkpoint()
                if frames >= RESTART_FRAMES:  # at once: it has only what landed during this one to copy
                    await self._checkpoint_holding_writers()
                failures = 0
            except Exception as exc:  # e.g. a full disk: the WAL keeps growing, and the operator must hear of it
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.error("database checkpoint failed path=%s failures=%d error=%s", self.path, failures, exc)
