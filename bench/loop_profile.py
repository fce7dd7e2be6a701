"""What held the event loop: the long callbacks, the collector's passes inside them, and where they spent it.

A hold the stall monitor reports says how long, never why. With `bench.pipeline --profile` the measured
phase of each scenario also records:

- every loop callback (a task's step, a timer) that ran longer than `SLOW_HANDLE_S`, with the task's name,
  the time Python's cyclic collector took inside it, and for a task's step the awaits it resumed from and
  stopped at (the innermost frames of this repository in its chain of awaiting coroutines): the task's
  name says whose step it was, the awaits say which stretch of its code;
- every pass of the loop whose callbacks together ran longer than `SLOW_PASS_S`, with how many ran and the
  kinds (task names without their numbers) that took most of it: a hold spans two passes or so, and a
  pass may be many short callbacks that were ready at once, none of them long;
- the gaps between one pass's last callback and the next one's first, over `SLOW_GAP_S` while callbacks
  were ready: the loop's own bookkeeping, or a thread that could not run (the GIL, or no CPU free);
- each collection's duration by generation;
- a stack sample of the loop's thread, taken by a thread of its own every millisecond while one callback has
  run past `SAMPLE_AFTER_S`, counted by its innermost frames in this repository and the innermost frame of
  all when that is a library's (a socket's `send` inside asyncpg is where the kernel's time goes). The
  interpreter's switch interval is shortened meanwhile: at its default of 5 ms the sampler got the GIL
  only when the loop's thread released it in a system call, so the samples all landed in system calls;
- with each sample, what the kernel says that thread is doing (Linux `/proc`): running, or asleep and
  in which kernel function. Python's stack is the same whether the thread waits for the disk inside a
  statement or for the GIL after it; the kernel's is not. "R" is running or ready to run, so the thread's
  scheduler counters are read too: how long it ran, and how long it was ready but had no CPU, between
  samples of one long callback.

Profiling costs the loop a little (a wrapper per callback), so figures for the README come from runs
without it; it is for finding causes, as in the storage work of issue 11.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import collections
import gc
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

SLOW_HANDLE_S = 0.012
SLOW_PASS_S = 0.008
SLOW_GAP_S = 0.003
SAMPLE_AFTER_S = 0.006
SAMPLE_EVERY_S = 0.001
_ROOT = str(Path(__file__).resolve().parent.parent) + "/"
_VENV = "/site-packages/"
_BASE_LOOP: Any = asyncio.base_events.BaseEventLoop
"""Typed loosely: `_run_once`, the loop's pass, is private and not in the stubs."""


class LoopProfile:
    """Started and stopped around a measured phase (one at a time per process); `report()` after."""

    def __init__(self) -> None:
        self.slow: list[tuple[float, float, str, str, str]] = []
        """(took, collector's time in it, what ran, the await it resumed from, the await it stopped at)."""
        self.collections: dict[int, list[float]] = collections.defaultdict(list)
        self.samples: collections.Counter[str] = collections.Counter()
        self.kernel: collections.Counter[str] = collections.Counter()
        self._handle_started = 0.0
        self._gc_started = 0.0
        self._gc_in_handle = 0.0
        self.slow_passes: list[tuple[float, int, list[tuple[str, float, int]]]] = []
        self.gaps: list[float] = []
        self.cpu_ran_ns = 0
        self.cpu_waited_ns = 0
        self._pass_started = 0.0
        self._pass_ended = 0.0
        self._last_ended = 0.0
        self._pass_kinds: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
        self._running = False
        self._original_run: Any = None
        self._original_run_once: Any = None
        self._switch_interval = 0.0

    def start(self) -> None:
        self._running = True
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SAMPLE_EVERY_S / 4)
        gc.callbacks.append(self._on_gc)
        self._original_run = original = asyncio.events.Handle._run
        profile = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            profile._gc_in_handle = 0.0
            task = _task_of(handle)
            resumed = _awaits(task) if task is not None else []  # formatted only for a slow step
            started = profile._handle_started = time.perf_counter()
            if not profile._pass_started:
                profile._pass_started = started
            try:
                original(handle)
            finally:
                profile._handle_started = 0.0
                ended = profile._pass_ended = time.perf_counter()
                took = ended - started
                what = _describe(handle, task)
                kind = profile._pass_kinds[what.rstrip("0123456789").rstrip(":")]
                kind[0] += took
                kind[1] += 1
                if took > SLOW_HANDLE_S:
                    stopped = _awaits(task) if task is not None else []
                    profile.slow.append((took, profile._gc_in_handle, what, _shown(resumed), _shown(stopped)))

        self._original_run_once = original_run_once = _BASE_LOOP._run_once

        def timed_run_once(loop: asyncio.base_events.BaseEventLoop) -> None:
            busy = bool(loop._ready)  # type: ignore[attr-defined]  # then the pass does not wait for I/O
            original_run_once(loop)
            profile._end_pass(busy)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        _BASE_LOOP._run_once = timed_run_once
        loop_thread = threading.current_thread()  # not always the main one: xdist's workers run tests on another
        threading.Thread(target=self._sample, args=(loop_thread.ident, loop_thread.native_id), daemon=True).start()

    def stop(self) -> None:
        self._running = False
        if self._switch_interval:
            sys.setswitchinterval(self._switch_interval)
        if self._original_run is not None:
            asyncio.events.Handle._run = self._original_run  # type: ignore[method-assign]
        if self._original_run_once is not None:
            _BASE_LOOP._run_once = self._original_run_once
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def report(self, top: int = 10) -> dict[str, Any]:
        return {
            "slow_handles": [
                {"ms": round(t * 1000, 1), "gc_ms": round(g * 1000, 1), "what": w, "from": a, "to": b}
                for t, g, w, a, b in sorted(self.slow, reverse=True)[:top]
            ],
            "slow_passes": [
                {
                    "ms": round(t * 1000, 1),
                    "callbacks": n,
                    "most": [{"what": w, "ms": round(k * 1000, 1), "n": c} for w, k, c in kinds],
                }
                for t, n, kinds in sorted(self.slow_passes, reverse=True)[:top]
            ],
            "sampled_cpu_ms": {
                "ran": self.cpu_ran_ns // 1_000_000,
                "waited_for_a_cpu": self.cpu_waited_ns // 1_000_000,
            },
            "gaps_over_3ms": {
                "n": len(self.gaps),
                "max_ms": round(max(self.gaps, default=0.0) * 1000, 1),
                "total_s": round(sum(self.gaps), 2),
            },
            "collections": {
                f"gen{gen}": {"n": len(ds), "max_ms": round(max(ds) * 1000, 1), "total_s": round(sum(ds), 2)}
                for gen, ds in sorted(self.collections.items())
            },
            "samples": [{"n": n, "stack": stack} for stack, n in self.samples.most_common(top)],
            "kernel": [{"n": n, "state": state} for state, n in self.kernel.most_common(top)],
        }

    def _end_pass(self, busy: bool) -> None:
        if self._pass_started:
            took = self._pass_ended - self._pass_started
            if took > SLOW_PASS_S:
                kinds = sorted(((w, k[0], int(k[1])) for w, k in self._pass_kinds.items()), key=lambda x: -x[1])
                self.slow_passes.append((took, sum(c for _, _, c in kinds), kinds[:3]))
            if busy and self._last_ended and self._pass_started - self._last_ended > SLOW_GAP_S:
                self.gaps.append(self._pass_started - self._last_ended)
            self._last_ended = self._pass_ended
        self._pass_started = 0.0
        self._pass_kinds.clear()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        self.collections[info["generation"]].append(took)
        if self._handle_started:
            self._gc_in_handle += took

    def _sample(self, loop_id: int | None, loop_tid: int | None) -> None:
        task = Path(f"/proc/self/task/{loop_tid}")
        last: tuple[float, int, int] = (0.0, 0, 0)
        while self._running:
            time.sleep(SAMPLE_EVERY_S)
            started = self._handle_started
            if not started or time.perf_counter() - started < SAMPLE_AFTER_S or loop_id is None:
                continue
            self.kernel[_kernel_state(task)] += 1
            ran, waited = scheduler_ns(task)
            if last[0] == started:  # the same callback as the last sample: what it did in between
                self.cpu_ran_ns += ran - last[1]
                self.cpu_waited_ns += waited - last[2]
            last = (started, ran, waited)
            frame = sys._current_frames().get(loop_id)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if f.filename.startswith(_ROOT) and _VENV not in f.filename]
            if ours:
                where = [f"{f.filename[len(_ROOT) :]}:{f.lineno}:{f.name}" for f in reversed(ours[-4:])]
                if stack[-1] is not ours[-1]:
                    where.insert(0, f"{Path(stack[-1].filename).name}:{stack[-1].lineno}:{stack[-1].name}")
                self.samples[" < ".join(where)] += 1


def scheduler_ns(task: Path) -> tuple[int, int]:
    """The thread's time on a CPU and time ready to run without one (`schedstat`), in nanoseconds."""
    try:
        ran, waited, _slices = (task / "schedstat").read_text().split()
        return int(ran), int(waited)
    except (OSError, ValueError):
        return 0, 0


def _kernel_state(task: Path) -> str:
    """'R' while running; else the state and the innermost kernel function that is not the scheduler's own
    (`/proc/<pid>/task/<tid>/stack` needs root: without it, the state alone)."""
    try:
        state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"
    if state == "R":
        return state
    try:
        frames = [line.split()[-1].split("+")[0] for line in (task / "stack").read_text().splitlines()]
    except (OSError, IndexError):
        return state
    generic = ("schedule", "__schedule", "io_schedule", "schedule_timeout", "do_syscall_64", "entry_SYSCALL")
    inner = [f for f in frames if not f.startswith(generic)]
    return f"{state} {' < '.join(inner[:3])}" if inner else state


def _task_of(handle: asyncio.events.Handle) -> asyncio.Task[Any] | None:
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)  # a task's step is a bound method
    return owner if isinstance(owner, asyncio.Task) else None


def _awaits(task: asyncio.Task[Any]) -> list[tuple[types.CodeType, int]]:
    """Where the task is suspended: its chain of awaiting coroutines, outermost first, each frame's code and
    line (read now: the frames move on), taken before every step and formatted only for a slow one."""
    where: list[tuple[types.CodeType, int]] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        where.append((frame.f_code, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


def _shown(where: list[tuple[types.CodeType, int]]) -> str:
    """The innermost three of this repository's frames, innermost first (a library's own awaits below
    them say less than the line that called it)."""
    ours = [
        f"{code.co_filename[len(_ROOT) :]}:{line}:{code.co_name}"
        for code, line in where
        if code.co_filename.startswith(_ROOT) and _VENV not in code.co_filename
    ]
    return " < ".join(reversed(ours[-3:]))


def _describe(handle: asyncio.events.Handle, task: asyncio.Task[Any] | None) -> str:
    if task is not None:
        return task.get_name()
    callback = getattr(handle, "_callback", None)
    return str(getattr(callback, "__qualname__", repr(callback)))[:80]
