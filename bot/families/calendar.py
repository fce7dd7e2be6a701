"""Calendar reminders and change notices (bot/calendar.py).

Why the wording: the date reads at its precision ("sometime in Q1 2027" is never a countdown to the minute),
the countdown of a reminder is its lead ("in 24 hours") because the alert is rendered when it is sent, and
every figure names its kind (announced, actual, model) and its source, since modelled and actual unlocks
differ widely. A figure that is not known is left out, never shown as zero.
"""

from __future__ import annotations

from datetime import datetime

from bot.families.registry import Family, register
from bot.render import Alert, AlertField, number, price, usd
from perpwatch.calendar import LEAD_SPAN, Precision, period_label
from perpwatch.events import CalendarChangeBody, CalendarReminderBody, Event

_TYPE_WORDS = {
    "unlock": "unlock",
    "tge": "token launch (TGE)",
    "airdrop_snapshot": "airdrop snapshot",
    "airdrop_claim": "airdrop claim",
    "epoch_end": "epoch end",
    "other": "event",
}
_FIGURE_WORDS = {"announced": "announced figure", "actual": "actual figure", "model": "model (not announced)"}


def _lead_words(lead: str, precision: str) -> str:
    span = LEAD_SPAN.get(lead)
    if span is None:
        return f"in {lead}"
    hours = int(span.total_seconds() // 3600)
    text = f"in {hours // 24} days" if hours >= 48 else f"in {hours} hours" if hours > 1 else "in 1 hour"
    if precision == "day":
        return f"{text} (the day; time not given)"
    if precision in ("month", "quarter"):
        return f"window opens {text}"
    return text


def _when(moment: datetime, precision: str) -> str:
    return period_label(moment, Precision(precision))


def _name(project: str, token: str | None) -> str:
    return f"{project} ({token})" if token else project


def _reminder(event: Event) -> CalendarReminderBody:
    if not isinstance(event.body, CalendarReminderBody):
        raise TypeError(f"not a calendar reminder: {event.body.kind}")
    return event.body


def render_reminder(event: Event) -> Alert:
    body = _reminder(event)
    what = body.title or _TYPE_WORDS.get(body.event_type, body.event_type)
    fields = [AlertField("When", _when(body.starts_at, body.precision), emphasis=True)]
    if body.amount_tokens is not None:
        fields.append(AlertField("Amount", f"{number(body.amount_tokens)} {body.token or 'tokens'}", emphasis=True))
    if body.value_usd is not None and body.price_usd is not None:
        said = f" ({body.price_source})" if body.price_source else ""
        fields.append(AlertField("USD value", f"{usd(body.value_usd)} at {price(body.price_usd)}{said}"))
    shares = []
    if body.pct_total is not None:
        shares.append(f"{number(body.pct_total)}% of total")
    if body.pct_circulating is not None:
        shares.append(f"{number(body.pct_circulating)}% of circulating")
    if shares:
        fields.append(AlertField("Supply", ", ".join(shares)))
    fields += [
        AlertField("Status", body.status + ("; only rumoured, no official date" if body.status == "rumoured" else "")),
        AlertField("Figure", _FIGURE_WORDS.get(body.figure, body.figure)),
        AlertField("Token", body.token_key),
        AlertField("Source", f"{body.source_url} (read {body.retrieved_at})"),
    ]
    footer = " ".join(part for part in (body.late_note, body.note) if part) or None
    return Alert(
        title=f"⏳ {_name(body.project, body.token)} {what} {_lead_words(body.lead, body.precision)}",
        headline=usd(body.value_usd) if body.value_usd is not None else _when(body.starts_at, body.precision),
        fields=tuple(fields),
        footer=footer,
        url=event.link,
        link_label="source",
        data={
            "topic": event.topic.value,
            "entry": body.entry_id,
            "lead": body.lead,
            "token": body.token_key,
            "usd": format(body.value_usd, "f") if body.value_usd is not None else None,
            "key": event.key,
        },
    )


def reminder_line(event: Event) -> str:
    body = _reminder(event)
    value = f" ≈ {usd(body.value_usd)}" if body.value_usd is not None else ""
    amount = f" {number(body.amount_tokens)} {body.token or ''}".rstrip() if body.amount_tokens is not None else ""
    return (
        f"{_name(body.project, body.token)} {body.event_type}{amount}{value}: {_when(body.starts_at, body.precision)}"
    )


def _change(event: Event) -> CalendarChangeBody:
    if not isinstance(event.body, CalendarChangeBody):
        raise TypeError(f"not a calendar change: {event.body.kind}")
    return event.body


def render_change(event: Event) -> Alert:
    body = _change(event)
    what = body.title or _TYPE_WORDS.get(body.event_type, body.event_type)
    before = _when(body.from_at, body.from_precision)
    if body.change == "cancelled" or body.to_at is None or body.to_precision is None:
        title = f"❌ {_name(body.project, body.token)} {what}: cancelled"
        fields: tuple[AlertField, ...] = (AlertField("Was", before, emphasis=True), AlertField("Token", body.token_key))
        headline = "cancelled"
    else:
        after = _when(body.to_at, body.to_precision)
        title = f"📅 {_name(body.project, body.token)} {what}: moved"
        fields = (
            AlertField("From", before),
            AlertField("To", after, emphasis=True),
            AlertField("Token", body.token_key),
        )
        headline = after
    return Alert(
        title=title,
        headline=headline,
        fields=(*fields, AlertField("Source", body.source_url)),
        footer="You were reminded of this earlier; reminders for the new date follow your /leads.",
        url=event.link,
        link_label="source",
        data={"topic": event.topic.value, "entry": body.entry_id, "change": body.change, "key": event.key},
    )


def change_line(event: Event) -> str:
    body = _change(event)
    if body.to_at is None or body.to_precision is None:
        return f"{_name(body.project, body.token)} {body.event_type} cancelled"
    return (
        f"{_name(body.project, body.token)} {body.event_type} moved: {_when(body.from_at, body.from_precision)} → "
        f"{_when(body.to_at, body.to_precision)}"
    )


REMINDER = register(
    Family(kind="calendar_reminder", body=CalendarReminderBody, render=render_reminder, summary_line=reminder_line)
)
CHANGE = register(
    Family(kind="calendar_change", body=CalendarChangeBody, render=render_change, summary_line=change_line)
)
