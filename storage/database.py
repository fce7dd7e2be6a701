"""One SQLite connection, its pragmas, numbered migrations, and the lock that makes a transaction atomic.

aiosqlite runs every statement on one worker thread, so statements from different tasks would interleave
inside each other's transactions; every unit of work therefore holds `Database.lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)


def to_db_time(moment: datetime) -> str:
    """One fixed ISO form, so text comparison in SQL orders times correctly."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_db_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Database:
    def __init__(self, path: Path | str, *, synchronous: str = "NORMAL") -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.lock = asyncio.Lock()
        self._conn: aiosqlite.Connection | None = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute(f"PRAGMA synchronous={self.synchronous}")
        await self._conn.execute("PRAGMA foreign_keys=ON")
        await self._conn.execute("PRAGMA busy_timeout=5000")
        await self.migrate()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def migrate(self) -> None:
        """Apply `migrations/NNNN_*.sql` in order, each in its own transaction, recording the version."""
        await self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        async with self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        folder = resources.files("storage").joinpath("migrations")
        scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
        for script in scripts:
            version = int(script.name.split("_", 1)[0])
            if version <= current:
                continue
            log.info("migrating database path=%s version=%d", self.path, version)
            sql = script.read_text(encoding="utf-8")
            await self.conn.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_version VALUES ({version});\nCOMMIT;")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the lock; on any failure or cancellation, ROLLBACK.

        The ROLLBACK is queued even when BEGIN may not have run yet (a cancel while awaiting it): aiosqlite
        runs statements in order, so it lands after BEGIN, and a "no transaction" error is harmless. A
        transaction left open would make every later one on this shared connection fail.
        """
        async with self.lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
                yield self.conn
                await self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):
                    await asyncio.shield(self.conn.execute("ROLLBACK"))
                raise

    async def write(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """One statement on its own: atomic without BEGIN/COMMIT, so one trip to the database thread.

        Returns the rows changed. The dispatcher's bookkeeping is single statements, and on its hot path
        three trips instead of one were a third of a send's cost.
        """
        async with self.lock:
            cursor = await self.conn.execute(sql, params)
            return cursor.rowcount

    async def fetch(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[aiosqlite.Row]:
        """All rows of one query in one trip to the database thread (execute + fetch + close would be three)."""
        async with self.lock:
            return list(await self.conn.execute_fetchall(sql, params))
