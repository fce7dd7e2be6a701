"""What a chat's due rows become at one send opportunity: one alert, an edit, or one merged message.

The decision is taken when the chat may send, with the backlog as it is then, so a steady flow is as fast
as the platform allows and a burst is never stuck behind an earlier plan. Rows go out one by one while
the chat's pacing windows have room to send each within the latency target; past that, everything due
goes out merged in one message, so every event is represented by the next send. A thread's newer
revision with a message to edit goes out alone, as the edit. Rows held through quiet hours go out as one
digest, with whatever else came due meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from storage.models import PendingDelivery


class Shape(Enum):
    SINGLE = "single"
    EDIT = "edit"
    SUMMARY = "summary"
    DIGEST = "digest"


@dataclass(frozen=True)
class Plan:
    shape: Shape
    rows: Sequence[PendingDelivery]
    read_all: bool = False
    """The page did not hold every due row: read them all (up to the merge cap) before merging."""


def plan(due: Sequence[PendingDelivery], *, slots: int, page_full: bool) -> Plan:
    """`slots`: how many sends the chat's windows allow within the time the oldest row has left before it
    misses `target_s`. At least one: the caller plans only when the chat may send now."""
    if any(d.quiet_held for d in due):  # everything that waited out the night, in one digest
        return Plan(Shape.DIGEST, [d for d in due if d.edit_ref is None], read_all=page_full)
    first = due[0]
    if first.edit_ref is not None:
        return Plan(Shape.EDIT, [first])
    fresh = [d for d in due if d.edit_ref is None]
    if len(fresh) == 1 or (not page_full and len(fresh) <= max(slots, 1)):
        return Plan(Shape.SINGLE, [first])
    return Plan(Shape.SUMMARY, fresh, read_all=page_full)


def horizon_s(due: Sequence[PendingDelivery], *, now: datetime, target_s: float) -> float:
    """The time the oldest due row has left before it would miss the latency target."""
    waited = (now - min(d.due_at for d in due)).total_seconds()
    return max(target_s - waited, 0.0)
