"""The storage contract every repository speaks, whichever engine is underneath.

A repository writes its SQL once, in the dialect both engines share: `?` or `:name` placeholders, CAST for
the type of a parameter that stands alone (`CAST(:cents AS BIGINT) IS NULL`), `CASE` instead of two-argument
`MAX`, `ON CONFLICT` instead of `OR IGNORE`, `RETURNING id` instead of `lastrowid`, `COUNT(*) FILTER (WHERE
…)`, booleans as TRUE/FALSE. Timestamps go in as aware datetimes and come back through `as_time`. No engine's
types, placeholders or error codes leave `storage/`: callers see `StorageUnavailable` (wait and try again)
or `StorageStartError` (the operator must fix something), and rows as `Row`.

Transactions are `async with engine.transaction() as tx:`. On SQLite the statements inside run on the
loop's thread and never yield, so nothing interleaves; on PostgreSQL each transaction holds a pooled
connection and other tasks go on while it waits for the server.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

DATABASE_SETTING = "PERPWATCH_DATABASE_URL"
"""The setting an operator changes when the database cannot be used; named here so a refusal is complete."""

BIGINT_MAX = 2**63 - 1
"""The largest integer both engines store (SQLite's INTEGER, PostgreSQL's BIGINT)."""

Params = Sequence[Any] | Mapping[str, Any]


class Row(Protocol):
    """A result row: by column name or position (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def keys(self) -> Any: ...


class StorageUnavailable(Exception):
    """The database could not do the work now for a reason outside the statement: a lock another process
    holds, a full disk, a server restarting or out of reach. Nothing of the failed work stayed, and the same
    work may succeed later."""


class StorageStartError(Exception):
    """The database cannot be used at all, so the bot must not start. The message is one line for the
    operator (the setting, where, what to do), with any password masked."""

    def __init__(self, message: str) -> None:
        super().__init__(re.sub(r"[\x00-\x1f\x7f]+", " ", message).strip())  # a path may hold a newline


def as_time(value: datetime | str) -> datetime:
    """A stored timestamp as an aware datetime: PostgreSQL returns one, SQLite the text we stored."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value)


def as_bool(value: object) -> bool:
    """A stored boolean: PostgreSQL's bool, SQLite's 0/1."""
    return bool(value)


class Tx(ABC):
    """One transaction's statements. Results are fetched whole: statements stay small and indexed."""

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    @abstractmethod
    async def fetch(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    @abstractmethod
    async def serialize(self, name: str) -> None:
        """Writers of `name` commit one after another from here to the end of the transaction.

        SQLite's write transactions already do; PostgreSQL takes a transaction-scoped advisory lock. The
        event log needs it: ids are handed out in commit order, so a reader that saw id N has seen every
        event below N, and a chat's cursor over the log can never step over an event still committing."""


class Engine(ABC):
    """One database: its connection(s), its migrations, its mapping of faults."""

    kind: str
    """"sqlite" or "postgresql"."""

    display: str
    """Where the database is, as an operator may see it in a log line (no password)."""

    concurrency: int = 1
    """Units of work that can overlap: SQLite's run on the loop's thread one after another; PostgreSQL's as
    many as its pool has connections."""

    @abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect and check; apply pending migrations unless told not to. StorageStartError when the
        database cannot be used, with nothing left open."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """BEGIN … COMMIT, ROLLBACK on any error; faults that may pass raise StorageUnavailable."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        async with self.transaction() as tx:
            return await tx.fetch(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    async def fetch_slow(self, sql: str, params: Params = ()) -> list[Row]:
        """A read that may visit many rows (a count over the whole outbox for /status): never on the loop's
        thread. SQLite runs it on a reader thread with its own connection; PostgreSQL on the server."""

    async def make_room(self) -> None:
        """Between the commits of a bulk writer: a turn for every other task (SQLite also lets its WAL be
        checkpointed off the loop)."""
        import asyncio

        await asyncio.sleep(0)

    @abstractmethod
    async def schema_version(self) -> int: ...

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply the engine's pending migrations in order; the versions applied."""


@dataclass(frozen=True)
class DatabaseUrl:
    """`PERPWATCH_DATABASE_URL`, understood: which engine, and where."""

    kind: str
    path: str = ""
    """SQLite: the file (or ":memory:")."""
    dsn: str = ""
    """PostgreSQL: the URL as the driver takes it (password included: never log it)."""

    @property
    def masked(self) -> str:
        return mask_url(self.dsn) if self.kind == "postgresql" else f"sqlite:///{self.path}"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***: what log lines and errors show."""
    return re.sub(r"^([a-z0-9+.-]+://[^:/@?#]*:)[^@/?#]*@", r"\1***@", url, flags=re.IGNORECASE)


def parse_database_url(url: str) -> DatabaseUrl:
    """`sqlite:///path`, `postgresql://user:password@host:port/dbname` or `postgres://…`. A bare path is a
    SQLite file (tests and the benchmark pass paths). ValueError, with the password masked, otherwise."""
    text = url.strip()
    if "://" not in text:
        if not text:
            raise ValueError(f"{DATABASE_SETTING} is empty: use sqlite:///path or postgresql://user@host/db")
        return DatabaseUrl(kind="sqlite", path=text)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = text[len("sqlite:///") :] if text.lower().startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"{DATABASE_SETTING} must look like sqlite:///path/to/file.db, got {text!r}")
        return DatabaseUrl(kind="sqlite", path=path)
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError(
                f"{DATABASE_SETTING} is not a valid PostgreSQL URL: {mask_url(text)} "
                "(postgresql://user:password@host:port/dbname)"
            ) from None
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"{DATABASE_SETTING} names no host: {mask_url(text)} (postgresql://user@host/dbname)")
        if not unquote(parts.path.lstrip("/")):
            raise ValueError(f"{DATABASE_SETTING} names no database: {mask_url(text)} (…@host:port/dbname)")
        return DatabaseUrl(kind="postgresql", dsn="postgresql" + text[len(scheme) :])
    raise ValueError(
        f"{DATABASE_SETTING} has an unknown scheme {scheme!r}: use sqlite:///path or postgresql://user@host/db"
    )


def migration_scripts(kind: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of the engine's migrations, in order."""
    from importlib import resources

    folder = resources.files("storage").joinpath("migrations", kind)
    scripts = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(int(p.name.split("_", 1)[0]), p.name, p.read_text(encoding="utf-8")) for p in scripts]
