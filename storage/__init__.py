"""The only code that speaks SQL. `Store` bundles the database engine and its repositories."""

from __future__ import annotations

from pathlib import Path

from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.buybacks import BuybackRepo
from storage.calendar import CalendarRepo
from storage.chats import ChatRepo, Conflict, LimitReached
from storage.engine import (
    DATABASE_SETTING,
    Engine,
    StorageStartError,
    StorageUnavailable,
    mask_url,
    parse_database_url,
)
from storage.history import History
from storage.outbox import Outbox
from storage.watchers import WatcherStateRepo

__all__ = [
    "DATABASE_SETTING",
    "CalendarRepo",
    "ChatRepo",
    "Conflict",
    "Engine",
    "History",
    "LimitReached",
    "Outbox",
    "StorageStartError",
    "StorageUnavailable",
    "Store",
    "WatcherStateRepo",
    "mask_url",
    "open_engine",
    "parse_database_url",
]


def open_engine(url: str) -> Engine:
    """The engine for a database URL (not yet open). asyncpg is imported only for PostgreSQL."""
    parsed = parse_database_url(url)
    if parsed.kind == "postgresql":
        from storage.postgres import PostgresEngine

        return PostgresEngine(parsed)
    from storage.sqlite import SqliteEngine

    return SqliteEngine(parsed.path)


class Store:
    """`Store(url)` with `sqlite:///path`, `postgresql://…`, or a bare SQLite path."""

    def __init__(self, url: Path | str, *, clock: Clock = SYSTEM_CLOCK, migrate: bool = True) -> None:
        self.clock = clock
        self.migrate = migrate
        self.db: Engine = open_engine(str(url))
        self.chats = ChatRepo(self.db, clock=clock)
        self.outbox = Outbox(self.db, clock=clock)
        self.watchers = WatcherStateRepo(self.db, clock=clock)
        self.history = History(self.db)
        self.buybacks = BuybackRepo(self.db, clock=clock)
        self.calendar = CalendarRepo(self.db, clock=clock)

    async def open(self) -> Store:
        await self.db.open(migrate=self.migrate)
        try:
            await self.outbox.refresh_head()
        except BaseException:
            await self.db.close()
            raise
        return self

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
