"""Per-watcher state that outlives the process: paused by an operator, and a cursor for pollers."""

from __future__ import annotations

from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.database import Database, to_db_time


class WatcherStateRepo:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def set_paused(self, watcher: str, paused: bool) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO watcher_state (watcher, paused, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (watcher) DO UPDATE SET paused=excluded.paused, updated_at=excluded.updated_at",
                (watcher, int(paused), to_db_time(self.clock.now())),
            )

    async def paused(self) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT watcher FROM watcher_state WHERE paused=1")}
