"""What every watcher shares: the sink it feeds and the health it reports for `/status`.

Watchers import only `perpwatch` (the event model, the sink contract, the clock), never the bot: they own
a connection and the translation of frames into events, never the meaning of an alert, a chat or a platform.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from perpwatch.backoff import should_log
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Topic, Venue
from perpwatch.sink import EventRejected, EventSink, SinkUnavailable

__all__ = ["EventRejected", "EventSink", "SinkUnavailable", "Watcher", "WatcherHealth", "WatcherState", "should_log"]


def describe(exc: BaseException) -> str:
    """An error as `/status` and the logs show it: its type, and its message when it has one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WatcherState(StrEnum):
    STARTING = "starting"
    UP = "up"
    DEGRADED = "degraded"  # some of a pool's connections are up, not all
    DOWN = "down"
    PAUSED = "paused"
    UNSUPPORTED = "unsupported"


@dataclass
class WatcherHealth:
    """Live figures a watcher keeps about itself; `/status` reads them as they are.

    `rejected` counts events refused, by reason (a symbol that is not a plain venue symbol, a figure that is
    not a plain decimal, a time far from now, an event the store can never hold): one bad frame costs a
    count, never the stream. Its stamps come from `clock`, the watcher's, so a test's frozen clock shows.
    """

    name: str
    state: WatcherState = WatcherState.STARTING
    connected_since: datetime | None = None
    last_frame_at: datetime | None = None
    last_event_at: datetime | None = None
    reconnects: int = 0
    parse_errors: int = 0
    errors: int = 0
    events: int = 0
    last_error: str | None = None
    note: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    clock: Clock = field(default=SYSTEM_CLOCK, repr=False, compare=False)

    def mark_up(self) -> None:
        self.state = WatcherState.UP
        self.connected_since = self.clock.now()

    def mark_down(self, error: str | None) -> None:
        self.state = WatcherState.DOWN
        self.connected_since = None
        if error is not None:
            self.errors += 1
            self.last_error = error

    def reject(self, reason: str) -> int:
        """Counts one refused event under `reason`; returns how many were refused in all, for log rating."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return sum(self.rejected.values())


class Watcher(abc.ABC):
    """A source of events. `run` owns the connection and returns only when cancelled.

    `covers` is what it can produce, as (topic, venue) pairs, so a chat that subscribes to something no
    enabled watcher produces is told so instead of waiting in silence; the registry sets it from its entry.
    """

    name: str

    def __init__(
        self, name: str, covers: frozenset[tuple[Topic, Venue]] = frozenset(), *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.name = name
        self.covers = covers
        self.clock = clock
        self.health = WatcherHealth(name=name, clock=clock)

    @abc.abstractmethod
    async def run(self, sink: EventSink) -> None: ...
