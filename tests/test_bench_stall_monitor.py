"""bench/pipeline.py's stall monitor says whose each long hold was: the loop's own CPU, or time its thread
spent off a CPU (here a blocking sleep; on a real run, a read from disk, no CPU free, or steal)."""

from __future__ import annotations

import asyncio
import time

from bench.pipeline import StallMonitor


def _spin_cpu(seconds: float) -> None:
    """Until the thread itself has run this long: a busy machine stretches the wall time, not this."""
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


async def test_each_long_hold_comes_with_when_it_began_and_the_loops_cpu_in_it() -> None:
    async with StallMonitor() as monitor:
        await asyncio.sleep(0.01)
        monitor.reset()
        await asyncio.sleep(0.005)
        _spin_cpu(0.04)  # the loop's own work
        await asyncio.sleep(0.005)
        time.sleep(0.04)  # noqa: ASYNC251 - the loop's thread asleep on purpose, as in a read from disk
        await asyncio.sleep(0.005)
        phase = monitor.phase()
    # A busy machine may add a hold of its own; the two made here are the ones of 40 ms and more.
    holds = sorted((h for h in phase["long_holds"] if h["ms"] >= 40), key=lambda hold: hold["at_s"])
    assert phase["holds_over_25ms"] >= 2 and phase["max_hold_ms"] >= 40
    [spun] = [h for h in holds if h["loop_cpu_ms"] >= 40]
    slept = holds[-1]
    assert slept["loop_cpu_ms"] < 20
    assert 0 <= spun["at_s"] <= slept["at_s"] < 10
    assert slept["read_kib"] >= 0 and slept["major_faults"] >= 0
    assert monitor.phase()["long_holds"] == []  # a phase resets what it reported
