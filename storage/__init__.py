"""The only code that speaks SQL. `Store` bundles the database and its repositories."""

from __future__ import annotations

from pathlib import Path

from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.chats import ChatRepo, Conflict, LimitReached
from storage.database import Database, StorageStartError, StorageUnavailable
from storage.outbox import Outbox
from storage.watchers import WatcherStateRepo

__all__ = [
    "ChatRepo",
    "Conflict",
    "Database",
    "LimitReached",
    "Outbox",
    "StorageStartError",
    "StorageUnavailable",
    "Store",
    "WatcherStateRepo",
]


class Store:
    def __init__(self, path: Path | str, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.db = Database(path)
        self.chats = ChatRepo(self.db, clock=clock)
        self.outbox = Outbox(self.db, clock=clock)
        self.watchers = WatcherStateRepo(self.db, clock=clock)

    async def open(self) -> Store:
        await self.db.open()
        return self

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
