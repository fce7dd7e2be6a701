"""A sink standing in for the pipeline where a test is about a watcher: it keeps what it is handed, in
order, and lets the test await a count."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from perpwatch.events import Event


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()

    async def __call__(self, events: Sequence[Event]) -> None:
        self.events.extend(events)
        self._arrived.set()

    async def until(self, n: int, timeout_s: float = 10.0) -> None:
        """Until `n` events were handed over; the timeout is a hang guard only."""
        async with asyncio.timeout(timeout_s):
            while len(self.events) < n:
                self._arrived.clear()
                await self._arrived.wait()
