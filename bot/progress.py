"""Progress of long operator work (`perpwatch db copy`, a first buyback or calendar backfill): a bar redrawn
in place on a terminal, plain lines everywhere else.

An operator at a terminal wants to see that a copy of millions of rows is moving and roughly when it ends;
a log file or a CI run wants lines it can read later, not carriage returns and escape codes, and not one
line per row. So one reporter, two renderings, chosen by whether the stream is a terminal: the job calls
`update(label, done, total)` as often as it likes and `note(text)` for anything else it has to say, and the
rendering decides what reaches the stream (redraws and plain lines are both rate-limited).

    with progress_for(sys.stdout, unit="rows") as shown:
        for table in tables:
            shown.update(table, copied, total)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

REDRAW_EVERY_S = 0.1
"""A terminal bar is redrawn at most this often: faster is flicker, and costs the job time."""

LINE_EVERY_S = 5.0
"""Plain progress lines at most this often per label (the first and the last always show): enough to see
a job move in a log without burying it."""

TAIL_ROOM = 40
"""Columns kept for the counts and the time left beside the bar."""

CLEAR_LINE = "\r\x1b[K"
"""Back to the line's start and erase it: what a redraw writes before the bar."""


def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: plain lines are always safe
        return False


class Progress:
    """What a long job reports to; `progress_for` picks the rendering. Use it as a context manager so the
    last bar is ended with a newline however the job ends."""

    def __init__(self, out: TextIO, *, unit: str = "items", clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.unit = unit
        self.clock = clock
        self._started: dict[str, tuple[float, int]] = {}
        """When a label was first reported, and how far it was then: the rate counts only what came after."""
        self._shown_at: dict[str, float] = {}
        self._finished: set[str] = set()

    def update(self, label: str, done: int, total: int | None = None, *, detail: str = "") -> None:
        """`done` of `total` (None when the total is unknown) for the part of the job named `label`; a part
        is finished when `done` reaches `total`. `detail` is shown after the counts (what else moved)."""
        now = self.clock()
        self._started.setdefault(label, (now, done))
        if label in self._finished:
            return
        finished = total is not None and done >= total
        if finished:
            self._finished.add(label)
        self._render(label, done, total, now, finished, f"; {detail}" if detail else "")

    def note(self, text: str) -> None:
        """Anything else the job says: a line of its own, never lost in a redraw."""
        self._write_line(text)

    def close(self) -> None:
        """End what is on screen: called by `with` on the way out."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- what the renderings share -----------------------------------------------------------------

    def _render(self, label: str, done: int, total: int | None, now: float, finished: bool, detail: str) -> None:
        raise NotImplementedError

    def _write_line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _due(self, label: str, now: float, every_s: float, finished: bool) -> bool:
        last = self._shown_at.get(label)
        if finished or last is None or now - last >= every_s:
            self._shown_at[label] = now
            return True
        return False

    def _amount(self, done: int, total: int | None) -> str:
        if total is None:
            return f"{done:,} {self._unit_for(done)}"
        if done >= total:
            return f"{done:,} {self._unit_for(done)}"
        return f"{done:,} of {total:,} {self.unit}"

    def _unit_for(self, count: int) -> str:
        return self.unit[:-1] if count == 1 and self.unit.endswith("s") else self.unit

    def _left(self, label: str, done: int, total: int | None, now: float) -> str:
        """Time left at the rate so far; nothing until there is a rate to go by."""
        since, done_then = self._started[label]
        elapsed, moved = now - since, done - done_then
        if total is None or moved <= 0 or done >= total or elapsed <= 0:
            return ""
        seconds = (total - done) * elapsed / moved
        return f", about {_duration(seconds)} left"


class LineProgress(Progress):
    """Plain lines, for logs and pipes: `label: done of total unit (pct%)`, then `label: total unit`."""

    def _render(self, label: str, done: int, total: int | None, now: float, finished: bool, detail: str) -> None:
        if not self._due(label, now, LINE_EVERY_S, finished):
            return
        share = f" ({_percent(done, total)})" if total and not finished else ""
        self._write_line(f"{label}: {self._amount(done, total)}{share}{detail}")


class BarProgress(Progress):
    """One bar redrawn in place; a finished part stays on screen as a line of its own."""

    def __init__(
        self,
        out: TextIO,
        *,
        unit: str = "items",
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        super().__init__(out, unit=unit, clock=clock)
        self.width = width
        self._bar: str | None = None
        """What is drawn on the current line, to draw again after a note."""

    def _render(self, label: str, done: int, total: int | None, now: float, finished: bool, detail: str) -> None:
        if not self._due(label, now, REDRAW_EVERY_S, finished):
            return
        columns = self.width or shutil.get_terminal_size((80, 24)).columns
        tail = f"  {self._amount(done, total)}{self._left(label, done, total, now)}{detail}"
        if total:
            room = max(10, min(40, columns - len(label) - TAIL_ROOM))  # the same width whatever the tail says
            filled = room * min(done, total) // total
            text = f"{label} [{'#' * filled}{'.' * (room - filled)}] {_percent(done, total):>4}{tail}"
        else:
            text = f"{label}{tail}"
        text = text[: max(columns - 1, 20)]
        self.out.write(CLEAR_LINE + text + ("\n" if finished else ""))
        self.out.flush()
        self._bar = None if finished else text

    def _write_line(self, text: str) -> None:
        if self._bar is None:
            super()._write_line(text)
            return
        self.out.write(CLEAR_LINE + text + "\n" + self._bar)  # the note above, the bar back under it
        self.out.flush()

    def close(self) -> None:
        if self._bar is not None:
            self.out.write("\n")
            self.out.flush()
            self._bar = None


def progress_for(
    out: TextIO,
    *,
    unit: str = "items",
    tty: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
    width: int | None = None,
) -> Progress:
    """A bar when `out` is a terminal (or `tty` says so), plain lines otherwise."""
    if _is_tty(out) if tty is None else tty:
        return BarProgress(out, unit=unit, clock=clock, width=width)
    return LineProgress(out, unit=unit, clock=clock)


def _percent(done: int, total: int | None) -> str:
    if not total:
        return ""
    return f"{100 * min(done, total) // total}%"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
