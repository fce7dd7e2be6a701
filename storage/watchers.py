"""Per-watcher state that outlives the process: paused by an operator, and a cursor for pollers."""

from __future__ import annotations

from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.engine import Engine


class WatcherStateRepo:
    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    async def set_paused(self, watcher: str, paused: bool) -> None:
        await self.db.execute(
            "INSERT INTO watcher_state (watcher, paused, updated_at) VALUES (?,?,?) "
            "ON CONFLICT (watcher) DO UPDATE SET paused=excluded.paused, updated_at=excluded.updated_at",
            (watcher, paused, self.clock.now()),
        )

    async def paused(self) -> set[str]:
        return {r[0] for r in await self.db.fetch("SELECT watcher FROM watcher_state WHERE paused")}
