"""bench/loop_profile.py names what held the loop: the long callback, the collector's time inside it, the
awaits a task's step ran between, and where the loop's thread was (its Python stack and what the kernel
said it was doing)."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path

from bench.loop_profile import LoopProfile


def _line_of(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line and "_line_of" not in line)


def _spin(profile: LoopProfile) -> None:
    """At least 40 ms, and on until the sampler's thread got its turn (on a busy machine it may wait)."""
    started = time.perf_counter()
    while time.perf_counter() - started < 0.04 or (not profile.samples and time.perf_counter() - started < 10):
        pass


async def _hog_inside(profile: LoopProfile) -> None:
    await asyncio.sleep(0)  # the step resumes here
    _spin(profile)  # one step of this task holds the loop
    gc.collect()
    await asyncio.sleep(0)  # and stops here


async def _hog(profile: LoopProfile) -> None:
    await _hog_inside(profile)


async def _polite() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_long_step_is_named_with_the_collection_inside_it() -> None:
    profile = LoopProfile()
    switch_interval = sys.getswitchinterval()
    profile.start()
    assert sys.getswitchinterval() < switch_interval  # the sampler gets the GIL between Python's bytecodes
    try:
        await asyncio.gather(
            asyncio.create_task(_hog(profile), name="hog"), asyncio.create_task(_polite(), name="polite")
        )
    finally:
        profile.stop()
    report = profile.report()
    [slow] = report["slow_handles"]
    assert slow["what"] == "hog" and slow["ms"] >= 40 and slow["gc_ms"] > 0
    here = "tests/test_bench_loop_profile.py"
    resumed, stopped = (_line_of("# the step resumes here"), _line_of("# and stops here"))
    assert slow["from"] == f"{here}:{resumed}:_hog_inside < {here}:{_line_of('await _hog_inside')}:_hog"
    assert slow["to"].startswith(f"{here}:{stopped}:_hog_inside < ")
    assert report["slow_passes"][0]["most"][0]["what"] == "hog"  # the pass it ran in, named by it
    assert report["collections"]["gen2"]["n"] >= 1
    assert any("tests/test_bench_loop_profile.py" in sample["stack"] for sample in report["samples"])
    assert sum(k["n"] for k in report["kernel"]) >= 1
    assert not profile._running and profile._on_gc not in gc.callbacks  # stopped: nothing left patched
    assert asyncio.events.Handle._run is profile._original_run
    assert asyncio.base_events.BaseEventLoop._run_once is profile._original_run_once  # type: ignore[attr-defined]
    assert sys.getswitchinterval() == switch_interval
