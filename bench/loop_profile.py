"""What held the event loop: the long callbacks, the collector's passes inside them, and where they spent it.

A hold the stall monitor reports says how long, never why. With `bench.pipeline --profile` the measured
phase of each scenario also records:

- every loop callback (a task's step, a timer) that ran longer than `SLOW_HANDLE_S`, with the task's name
  and the time Python's cyclic collector took inside it;
- each collection's duration by generation;
- a stack sample of the main thread, taken by a thread of its own every millisecond while one callback has
  run past `SAMPLE_AFTER_S`, counted by its innermost frames in this repository.

Profiling costs the loop a little (a wrapper per callback), so figures for the README come from runs
without it; it is for finding causes, as in the storage work of issue 11.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
import gc
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

SLOW_HANDLE_S = 0.012
SAMPLE_AFTER_S = 0.006
SAMPLE_EVERY_S = 0.001
_ROOT = str(Path(__file__).resolve().parent.parent) + "/"


class LoopProfile:
    """Started and stopped around a measured phase (one at a time per process); `report()` after."""

    def __init__(self) -> None:
        self.slow: list[tuple[float, float, str]] = []
        self.collections: dict[int, list[float]] = collections.defaultdict(list)
        self.samples: collections.Counter[str] = collections.Counter()
        self._handle_started = 0.0
        self._gc_started = 0.0
        self._gc_in_handle = 0.0
        self._running = False
        self._original_run: Any = None

    def start(self) -> None:
        self._running = True
        gc.callbacks.append(self._on_gc)
        self._original_run = original = asyncio.events.Handle._run
        profile = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            profile._gc_in_handle = 0.0
            started = profile._handle_started = time.perf_counter()
            try:
                original(handle)
            finally:
                profile._handle_started = 0.0
                took = time.perf_counter() - started
                if took > SLOW_HANDLE_S:
                    profile.slow.append((took, profile._gc_in_handle, _describe(handle)))

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        threading.Thread(target=self._sample, args=(threading.main_thread().ident,), daemon=True).start()

    def stop(self) -> None:
        self._running = False
        if self._original_run is not None:
            asyncio.events.Handle._run = self._original_run  # type: ignore[method-assign]
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def report(self, top: int = 10) -> dict[str, Any]:
        return {
            "slow_handles": [
                {"ms": round(t * 1000, 1), "gc_ms": round(g * 1000, 1), "what": w}
                for t, g, w in sorted(self.slow, reverse=True)[:top]
            ],
            "collections": {
                f"gen{gen}": {"n": len(ds), "max_ms": round(max(ds) * 1000, 1), "total_s": round(sum(ds), 2)}
                for gen, ds in sorted(self.collections.items())
            },
            "samples": [{"n": n, "stack": stack} for stack, n in self.samples.most_common(top)],
        }

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        self.collections[info["generation"]].append(took)
        if self._handle_started:
            self._gc_in_handle += took

    def _sample(self, main_id: int | None) -> None:
        while self._running:
            time.sleep(SAMPLE_EVERY_S)
            started = self._handle_started
            if not started or time.perf_counter() - started < SAMPLE_AFTER_S or main_id is None:
                continue
            frame = sys._current_frames().get(main_id)
            if frame is None:
                continue
            ours = [f for f in traceback.extract_stack(frame) if f.filename.startswith(_ROOT)]
            if ours:
                where = (f"{f.filename[len(_ROOT) :]}:{f.lineno}:{f.name}" for f in reversed(ours[-4:]))
                self.samples[" < ".join(where)] += 1


def _describe(handle: asyncio.events.Handle) -> str:
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)  # a task's step is a bound method of the task
    if isinstance(owner, asyncio.Task):
        return owner.get_name()
    return str(getattr(callback, "__qualname__", repr(callback)))[:80]
