"""Liveness without a listener: `perpwatch run` touches a heartbeat file from its event loop, and `perpwatch
healthcheck` (the container image's HEALTHCHECK) says whether that file is fresh.

A check in a second process cannot ask the bot's loop anything without an HTTP listener, and a check that
only opens the database would pass while the bot is wedged. A file the loop itself rewrites stops being
rewritten exactly when the loop stops turning, which is what a platform restarting an unhealthy container
needs to know. The file is on the container's own filesystem, so several bots never share one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

HEARTBEAT_ENV = "PERPWATCH_HEARTBEAT_FILE"
"""Where `run` writes the heartbeat and `healthcheck` reads it; unset, `run` writes none."""

EVERY_S = 10.0
"""How often the loop touches the file."""

MAX_AGE_S = 60.0
"""A heartbeat older than this means the loop stopped turning: several beats missed, not one slow beat."""


def heartbeat_path(given: str | None = None) -> Path | None:
    value = given or os.environ.get(HEARTBEAT_ENV, "").strip()
    return Path(value) if value else None


async def beat(path: Path, every_s: float = EVERY_S) -> None:
    """Rewrite `path` with the current time until cancelled; removed on the way out, so a stopped bot is
    never reported alive by a file it left behind."""
    try:
        while True:
            _write(path)
            await asyncio.sleep(every_s)
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _write(path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{time.time():.3f}\n", encoding="utf-8")
    tmp.replace(path)  # atomic: the check never reads half a file


def check(path: Path | None, max_age_s: float = MAX_AGE_S, *, now: float | None = None) -> str | None:
    """None when the heartbeat is fresh, else one line saying why not."""
    if path is None:
        return f"no heartbeat file configured: set {HEARTBEAT_ENV} for `perpwatch run` and the check"
    try:
        stamp = float(path.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        return f"no heartbeat at {path}: the bot is not running (or still starting)"
    except (OSError, ValueError) as exc:
        return f"heartbeat {path} unreadable: {exc}"
    age = (time.time() if now is None else now) - stamp
    if age > max_age_s:
        return f"heartbeat {path} is {age:.0f} s old (limit {max_age_s:g} s): the bot's loop is stuck"
    return None
