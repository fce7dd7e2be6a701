"""A watcher that crashes is restarted with growing, jittered waits on the bot's clock, back to the first
step after a run that stayed up, with one log line and its traceback per crash."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.pipeline import Pipeline
from bot.supervisor import Supervisor
from storage import Store
from tests.fakes.clock import RecordingClock
from watchers.base import EventSink, Watcher, WatcherState


class Crashing(Watcher):
    """Crashes at once on each run, except the runs listed in `stay_up_s`, which stay up that long first."""

    def __init__(self, clock: RecordingClock, stay_up_s: dict[int, float]) -> None:
        super().__init__("crashy", clock=clock)
        self.runs = 0
        self.stay_up_s = stay_up_s

    async def run(self, sink: EventSink) -> None:
        self.runs += 1
        if self.runs in self.stay_up_s:
            await self.clock.sleep(self.stay_up_s[self.runs])
        raise RuntimeError(f"bug number {self.runs}")


async def test_restarts_back_off_and_reset_after_a_stable_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="bot.supervisor")
    clock = RecordingClock(hold_after=8)
    watcher = Crashing(clock, stay_up_s={6: 700.0})
    async with Store(tmp_path / "s.db", clock=clock) as store:
        supervisor = Supervisor(
            [watcher],
            Pipeline(store.outbox),
            store,
            restart_initial_s=1.0,
            restart_max_s=8.0,
            stable_after_s=600.0,
            clock=clock,
            rand=lambda: 1.0,  # the top of each jitter range, so the steps show
        )
        await supervisor.start()
        async with asyncio.timeout(10):  # hang guard
            await clock.held.wait()
        await supervisor.stop()
    # crashes 1-5 wait 1, 2, 4, 8, 8 (capped); run 6 stayed up 700 s, so its crash waits 1 again, then 2
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 8.0, 700.0, 1.0, 2.0, 4.0]
    assert watcher.health.state is WatcherState.DOWN and watcher.health.extra["crashes"] == "8"
    crashes = [r for r in caplog.records if "watcher crashed" in r.message]
    assert len(crashes) == 8 and all(r.exc_info for r in crashes)


def test_the_jitter_keeps_at_least_half_of_each_step() -> None:
    supervisor = Supervisor([], Pipeline.__new__(Pipeline), Store.__new__(Store), rand=lambda: 0.0)
    assert [supervisor.restart_delay_s(n) for n in range(3)] == [0.5, 1.0, 2.0]
