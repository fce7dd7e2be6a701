"""A frozen clock for tests that count waits rather than pass them.

`FrozenClock` (perpwatch.clock) suits tests that move time; this one suits tests that only ask which
back-off or retry waits were drawn: every direct `sleep` is recorded and returns at once (time jumps by
it), while timed waits (`wait`, a stream's liveness) never time out, so no probe or stall can fire.
"""

from __future__ import annotations

import asyncio

from perpwatch.clock import FrozenClock


class RecordingClock(FrozenClock):
    def __init__(self, *, hold_after: int | None = None) -> None:
        """`hold_after`: sleeps after that many are recorded and then never return (a test cancels)."""
        super().__init__()
        self.slept: list[float] = []
        self.hold_after = hold_after
        self.held = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.hold_after is not None and len(self.slept) > self.hold_after:
            self.held.set()
            await asyncio.Event().wait()
        self._step_to(self.monotonic() + max(seconds, 0.0))
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, timeout_s: float) -> bool:
        await event.wait()
        return True
