"""The family registry: how the dispatcher and the platforms find an event's renderer by `body.kind`.

The dispatcher and the platforms never look at a body's type: they ask this registry for the family of
an event's `body.kind`. A family is one module here plus its body in the event model's union; a test
keeps the two in step, so a body without a renderer cannot ship.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from bot.render import Alert, AlertField, usd, when
from perpwatch.events import Event


@dataclass(frozen=True)
class Family:
    """How one kind of body reads: a whole alert, and one line of it inside a merged summary."""

    kind: str
    body: type[Any]
    render: Callable[[Event], Alert]
    summary_line: Callable[[Event], str]
    render_named: Callable[[Event, Mapping[str, str]], Alert] | None = None
    """For families that name wallets: the alert with the chat's own labels of them."""


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.kind in _REGISTRY:
        raise ValueError(f"family {family.kind!r} registered twice")
    _REGISTRY[family.kind] = family
    return family


def family_of(event: Event) -> Family:
    try:
        return _REGISTRY[event.body.kind]
    except KeyError:
        raise LookupError(f"no family renders bodies of kind {event.body.kind!r}") from None


def registered() -> dict[str, Family]:
    return dict(_REGISTRY)


def render_event(event: Event, *, names: Mapping[str, str] | None = None) -> Alert:
    """`names`: the reading chat's labels of addresses (its watch list), for families that name wallets."""
    family = family_of(event)
    if names and family.render_named is not None:
        return family.render_named(event, names)
    return family.render(event)


SummaryReason = Literal["backlog", "digest"]


def render_summary(events: Sequence[Event], *, reason: SummaryReason = "backlog", largest: int = 5) -> Alert:
    """Many pending alerts for one chat in one message, so the chat is not flooded and nothing is dropped.

    The merge follows the backlog: whatever waited for the chat's next send opportunity goes out together,
    of any family; a quiet-hours digest holds everything that waited through the night. Each family words
    its own lines; the largest by USD are shown.
    """
    topics = sorted({e.topic.value for e in events})
    total = sum((e.usd or Decimal(0) for e in events), Decimal(0))
    ranked = sorted(events, key=lambda e: e.usd or Decimal(0), reverse=True)[:largest]
    items = tuple(family_of(e).summary_line(e) for e in ranked)
    venues = sorted({e.venue.value for e in events if e.venue})
    first = min(e.occurred_at for e in events)
    last = max(e.occurred_at for e in events)
    fields = (
        AlertField("Alerts", str(len(events)), emphasis=True),
        AlertField("Total USD", usd(total), emphasis=True),
        AlertField("Venues", ", ".join(v.capitalize() for v in venues) or "-"),
        AlertField("From", when(first)),
        AlertField("To", when(last)),
    )
    what = topics[0] if len(topics) == 1 else ", ".join(topics)
    if reason == "digest":
        title = f"🌙 Quiet-hours digest: {len(events)} alerts ({what})"
        why = "Held during this chat's quiet hours."
    else:
        title = f"📊 {len(events)} {what} alerts in one message"
        why = "Merged because they arrived faster than this chat can be sent to."
    return Alert(
        title=title,
        headline=usd(total),
        fields=fields,
        items=items,
        footer=f"{why} Largest {len(items)} shown.",
        data={
            "topic": topics[0] if len(topics) == 1 else "mixed",
            "venue": None,
            "symbol": None,
            "side": None,
            "usd": format(total, "f"),
            "key": f"summary:{events[0].key}:{len(events)}",
        },
    )
