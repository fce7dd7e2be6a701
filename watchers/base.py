"""What every watcher shares: the sink it feeds and the health it reports for `/status`.

Watchers import only `bot.events` from the bot package: they own a connection and the translation of
frames into events, never the meaning of an alert, a chat or a platform.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from bot.events import Event, Topic, Venue

EventSink = Callable[[Sequence[Event]], Awaitable[None]]
"""Accepts events durably; returns only once they are committed, so a watcher may acknowledge its input."""


class SinkUnavailable(Exception):
    """The sink stored none of the events and can take the same ones later (its database is locked by another
    process, or its disk is full). Waiting costs nothing but time, so a watcher holds the events until then."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def describe(exc: BaseException) -> str:
    """An error as `/status` and the logs show it: its type, and its message when it has one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def should_log(count: int) -> bool:
    """A failure that repeats (a venue changed its format, a sink keeps failing) repeats on every frame;
    the first few and every 100th are enough."""
    return count <= 3 or count % 100 == 0


class WatcherState(StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    PAUSED = "paused"
    UNSUPPORTED = "unsupported"


@dataclass
class WatcherHealth:
    """Live figures a watcher keeps about itself; `/status` reads them as they are."""

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
    extra: dict[str, str] = field(default_factory=dict)

    def mark_up(self) -> None:
        self.state = WatcherState.UP
        self.connected_since = utcnow()

    def mark_down(self, error: str | None) -> None:
        self.state = WatcherState.DOWN
        self.connected_since = None
        if error is not None:
            self.errors += 1
            self.last_error = error


class Watcher(abc.ABC):
    """A source of events. `run` owns the connection and returns only when cancelled.

    `covers` is what it can produce, as (topic, venue) pairs, so a chat that subscribes to something no
    enabled watcher produces is told so instead of waiting in silence.
    """

    name: str

    def __init__(self, name: str, covers: frozenset[tuple[Topic, Venue]] = frozenset()) -> None:
        self.name = name
        self.covers = covers
        self.health = WatcherHealth(name=name)

    @abc.abstractmethod
    async def run(self, sink: EventSink) -> None: ...
