"""PostgreSQL through asyncpg: a small pool, the shared SQL dialect translated once per statement, and every
way the server can be away mapped to `StorageUnavailable`.

Why asyncpg and not psycopg 3: measured by `bench/pg_drivers.py` (figures in the README and the commit
that chose it), asyncpg spent less of the loop's CPU per statement and per fetched row, which is what the
bot's single event loop pays for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import asyncpg

from storage.engine import (
    DATABASE_SETTING,
    DatabaseUrl,
    Engine,
    Params,
    Row,
    StorageStartError,
    StorageUnavailable,
    Tx,
    migration_scripts,
)

log = logging.getLogger(__name__)

POOL_SIZE = 8
"""Connections at most: the dispatcher's workers read in parallel, while writes of the event log take
turns anyway (`Tx.serialize`)."""

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
"""A statement that takes this long is a server in trouble: the caller holds its work and tries again."""

_MIGRATION_LOCK = 0x7065_7270_7761_7463  # "perpwatc": one process migrates at a time
_TOKEN = re.compile(r"'(?:[^']|'')*'|::|\?|:([A-Za-z_][A-Za-z0-9_]*)")

_UNAVAILABLE_STATES = (
    "08",  # connection exceptions
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57P",  # operator intervention: admin shutdown, crash shutdown, cannot connect now
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    "25006",  # read-only transaction: a failover left us on a standby for now
    "58",  # system errors (I/O)
)


@lru_cache(maxsize=512)
def _translate(sql: str, named: bool) -> tuple[str, tuple[str, ...]]:
    """`?` and `:name` placeholders as `$n`, and the names in their order (string literals and `::` casts
    are left alone)."""
    names: list[str] = []
    position = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal position
        text = match.group(0)
        if text.startswith("'") or text == "::":
            return text
        if text == "?":
            position += 1
            return f"${position}"
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    translated = _TOKEN.sub(swap, sql)
    if names and position:
        raise ValueError("a statement mixes ? and :name placeholders")
    if named != bool(names) and (names or position):
        raise ValueError("named placeholders need a mapping of parameters, ? placeholders a sequence")
    return translated, tuple(names)


def _args(sql: str, params: Params) -> tuple[str, Sequence[Any]]:
    if isinstance(params, Mapping):
        text, names = _translate(sql, True)
        return text, [params[name] for name in names]
    text, _ = _translate(sql, False)
    return text, params


def _unavailable(exc: BaseException) -> StorageUnavailable | None:
    """The error as a StorageUnavailable when waiting may cure it; None for a fault in the work itself."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state.startswith(_UNAVAILABLE_STATES):
            return StorageUnavailable(f"postgresql {state}: {exc}")
        return None
    if isinstance(exc, OSError | TimeoutError | asyncpg.exceptions.ConnectionDoesNotExistError) or (
        # "the underlying connection is closed" after a restart; any other InterfaceError is our bug
        isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
    ):
        return StorageUnavailable(f"postgresql unreachable: {type(exc).__name__}: {exc}")
    return None


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """The pool's default reset on every release (unlock all, CLOSE ALL, UNLISTEN *, RESET ALL) is a round
    trip that doubled a pooled statement's latency (bench/pg_drivers.py); the bot leaves no session state
    behind: its advisory locks are transaction-scoped, and migrate() unlocks its own."""


class _PgTx(Tx):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        text, args = _args(sql, params)
        status = await self.conn.execute(text, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        prepared = [_args(sql, r) for r in rows]
        await self.conn.executemany(prepared[0][0], [args for _, args in prepared])

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        text, args = _args(sql, params)
        return list(await self.conn.fetch(text, *args))

    async def serialize(self, name: str) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)


class PostgresEngine(Engine):
    kind = "postgresql"

    def __init__(self, url: DatabaseUrl, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.display = url.masked
        self.pool_size = pool_size
        self.concurrency = pool_size
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def open(self, *, migrate: bool = True) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url.dsn,
                min_size=1,
                max_size=self.pool_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                server_settings={"application_name": "perpwatch", "timezone": "UTC"},
                reset=_no_reset,
            )
        except BaseException as exc:
            raise self._start_error(exc) from None
        try:
            if migrate:
                await self.migrate()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, asyncpg.PostgresError | OSError | asyncpg.InterfaceError):
                raise self._start_error(exc) from None
            raise

    def _start_error(self, exc: BaseException) -> BaseException:
        """One line for the operator: what went wrong and what to change, the password masked."""
        where = f"database {self.display} ({DATABASE_SETTING})"
        if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
            return StorageStartError(f"{where} refused the user or password: check the credentials in the URL")
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return StorageStartError(f"{where} names a database the server does not have: create it (createdb)")
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return StorageStartError(f"{where} lets this user connect but not create tables: grant it")
        if isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            return StorageStartError(f"{where} cannot be reached ({reason}): is the server running and the host right?")
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | ValueError):
            message = str(exc).replace(self.url.dsn, self.display)
            return StorageStartError(f"{where} cannot be used: {type(exc).__name__}: {message}")
        return exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                yield _PgTx(conn)
        except Exception as exc:
            if (unavailable := _unavailable(exc)) is not None:
                raise unavailable from exc
            raise

    async def execute(self, sql: str, params: Params = ()) -> int:
        """One statement, committed on its own: no BEGIN/COMMIT round trips."""
        text, args = _args(sql, params)
        try:
            status = await self.pool.execute(text, *args)
        except Exception as exc:
            if (unavailable := _unavailable(exc)) is not None:
                raise unavailable from exc
            raise
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        text, args = _args(sql, params)
        try:
            return list(await self.pool.fetch(text, *args))
        except Exception as exc:
            if (unavailable := _unavailable(exc)) is not None:
                raise unavailable from exc
            raise

    async def fetch_slow(self, sql: str, params: Params = ()) -> list[Row]:
        """The server does the work; the loop only waits for its answer."""
        return await self.fetch(sql, params)

    async def schema_version(self) -> int:
        rows = await self.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    async def migrate(self) -> list[int]:
        """Apply `migrations/postgresql/NNNN_*.sql` in order, each in its own transaction; an advisory lock
        keeps two processes starting together from applying the same one twice."""
        applied: list[int] = []
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY)")
                current = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
                for version, _name, sql in migration_scripts("postgresql"):
                    if version <= current:
                        continue
                    log.info("migrating database engine=postgresql url=%s version=%d", self.display, version)
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
                    applied.append(version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return applied
