"""How a watcher hands events over: the sink contract, apart from whoever implements it (the pipeline)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from perpwatch.events import Event

EventSink = Callable[[Sequence[Event]], Awaitable[None]]
"""Accepts events durably; returns only once they are committed, so a watcher may acknowledge its input."""


class SinkUnavailable(Exception):
    """The sink stored none of the events and can take the same ones later (its database is locked by another
    process, or its disk is full). Waiting costs nothing but time, so a watcher holds the events until then."""


class EventRejected(Exception):
    """The sink can never store this event (a figure its storage cannot hold): retrying is pointless, so the
    watcher counts it and moves on at once instead of holding the events behind it."""
