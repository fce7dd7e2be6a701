"""Per-watcher state that outlives the process: paused by an operator, and a cursor for pollers."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.database import Database, to_db_time


class WatcherStateRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_paused(self, watcher: str, paused: bool) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO watcher_state (watcher, paused, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (watcher) DO UPDATE SET paused=excluded.paused, updated_at=excluded.updated_at",
                (watcher, int(paused), to_db_time(datetime.now(UTC))),
            )

    async def paused(self) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT watcher FROM watcher_state WHERE paused=1")}
