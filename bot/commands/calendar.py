"""/upcoming, /leads and the operators' /calendar add|edit|cancel|show|hints.

Why the wording of dates: a countdown is never finer than what is known: an exact time counts down to the
minute, a day to the day, a month or a quarter not at all ("sometime in Q1 2027, window opens in 30
days"). Why operators only for /calendar: one entry reminds every subscribed chat of every deployment's
users, so only the ids in PERPWATCH_ADMIN_IDS may change it; their edits are stored locked and survive the
next merge of the bundled file.

Chat commands reach the calendar through the store and the dispatcher (`Services` holds no calendar): the
service here accepts a move's notices into the outbox and wakes the dispatcher as the pipeline would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from bot.calendar import CalendarService, MergeReport
from bot.commands.base import CommandError, Context
from bot.commands.values import shown
from bot.render import Reply, number
from perpwatch.calendar import (
    LEAD_NAMES,
    CalendarEntry,
    EventType,
    Figure,
    Precision,
    Status,
    describe_when,
    leads_for,
    parse_when,
)
from perpwatch.events import Event
from storage.calendar import StoredEntry
from storage.models import AcceptResult

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_LINES = 25
_DAYS = re.compile(r"[0-9]{1,3}d?")

EDIT_FIELDS = (
    "project",
    "token",
    "coingecko",
    "contract",
    "type",
    "start",
    "precision",
    "amount",
    "pct",
    "total",
    "status",
    "figure",
    "source",
    "title",
    "note",
)
"""The options /calendar add and edit take (`key=value`; `_` stands for a space in title and note)."""


def service_for(ctx: Context) -> CalendarService:
    services = ctx.services

    async def accept(events: Sequence[Event]) -> list[AcceptResult]:
        results = await services.store.outbox.accept(events)
        services.dispatcher.accepted(events, results)
        return results

    async def withdraw(thread: str) -> int:
        return await services.store.outbox.withdraw(thread, reason="its calendar entry changed")

    return CalendarService(services.store, accept=accept, withdraw=withdraw, clock=services.clock)


# --- /upcoming ------------------------------------------------------------------------------------------
def _days_and_token(args: dict[str, str] | Any) -> tuple[int, str | None]:
    days_text, token = args.get("days"), args.get("token")
    if days_text is not None and not _DAYS.fullmatch(days_text.strip().lower()):
        if token is None:  # `/upcoming HYPE`: the one argument is the token
            return DEFAULT_DAYS, days_text.strip()
        raise CommandError(f"{shown(days_text)} is not a number of days; expected e.g. 30 or 30d", show_usage=True)
    days = int(days_text.strip().lower().removesuffix("d")) if days_text is not None else DEFAULT_DAYS
    if not 1 <= days <= MAX_DAYS:
        raise CommandError(f"days must be 1 to {MAX_DAYS}", show_usage=True)
    return days, token.strip() if token else None


def entry_line(stored: StoredEntry, now: Any) -> str:
    e = stored.entry
    what = e.title or e.event_type.value
    name = f"{e.project} ({e.token})" if e.token else e.project
    parts = [f"{describe_when(e.starts_at, e.precision, now)} — {name}: {what}"]
    if e.amount_tokens is not None:
        share = f" ({number(e.pct_supply)}% of supply)" if e.pct_supply is not None else ""
        parts.append(f"{number(e.amount_tokens)} {e.token or 'tokens'}{share}")
    status = e.status.value + (" — only rumoured" if e.status is Status.RUMOURED else "")
    parts.append(f"{status}, figure {e.figure.value}")
    parts.append(e.token_key)
    parts.append(f"source {e.source_url} (read {e.retrieved_at.isoformat()})")
    if stored.locked:
        parts.append("edited in chat")
    parts.append(f"id {e.id}")
    return " · ".join(parts)


async def upcoming(ctx: Context) -> Reply:
    days, token = _days_and_token(ctx.args)
    now = ctx.services.clock.now()
    rows = await ctx.services.store.calendar.entries(
        starting_after=now - timedelta(days=92), starting_before=now + timedelta(days=days), limit=1000
    )
    shown_rows = [
        r
        for r in rows
        if r.entry.ends_at > now
        and r.entry.status not in (Status.CANCELLED, Status.DONE)
        and (token is None or r.entry.matches_token(token))
    ]
    title = f"Upcoming in {days} days" + (f" for {token}" if token else "")
    if not shown_rows:
        return Reply.of("Nothing on the calendar in that window.", title=title)
    lines = [entry_line(r, now) for r in shown_rows[:MAX_LINES]]
    if len(shown_rows) > MAX_LINES:
        lines.append(f"… and {len(shown_rows) - MAX_LINES} more: narrow it with a token or fewer days.")
    return Reply(lines=tuple(lines), title=title)


# --- /leads ---------------------------------------------------------------------------------------------
def lead_list(text: str) -> tuple[str, ...] | None:
    """`7d,24h,1h` as leads from the ladder, longest first; None for `default`."""
    cleaned = text.strip().lower()
    if cleaned == "default":
        return None
    parts = [p.strip() for p in cleaned.split(",") if p.strip()]
    unknown = [p for p in parts if p not in LEAD_NAMES]
    if not parts or unknown:
        raise CommandError(
            f"{shown(text)} is not a list of lead times; choose from {', '.join(LEAD_NAMES)}, comma-separated, "
            "like 7d,24h,1h, or default",
            show_usage=True,
        )
    return tuple(lead for lead in LEAD_NAMES if lead in parts)


async def leads(ctx: Context) -> Reply:
    chosen = lead_list(ctx.args["leads"])
    await ctx.services.store.chats.set_reminder_leads(ctx.chat.id, chosen)
    now_on = await ctx.services.store.chats.reminder_leads(ctx.chat.id)
    coarse = ", ".join(leads_for(Precision.DAY))
    return Reply.of(
        f"Unlock and TGE reminders come {', '.join(now_on)} before each event"
        + (" (the default)." if chosen is None else "."),
        f"Events known only to the day get the leads among {coarse}; to the month or quarter, 7d only.",
    )


# --- /calendar ------------------------------------------------------------------------------------------
def _spaces(text: str) -> str:
    return text.replace("_", " ").strip()


def _decimal(text: str, name: str) -> Decimal:
    cleaned = text.strip().lower().replace(",", "")
    factor = Decimal(1)
    for suffix, scale in (("k", 10**3), ("m", 10**6), ("b", 10**9)):
        if cleaned.endswith(suffix):
            cleaned, factor = cleaned[:-1], Decimal(scale)
    if not re.fullmatch(r"[0-9]{1,15}(\.[0-9]{1,18})?", cleaned):
        raise CommandError(f"{name} {shown(text)} is not a plain number like 13900000, 13.9m or 0.992")
    return (Decimal(cleaned) * factor).normalize()


def _choice(text: str, name: str, kind: type[EventType] | type[Status] | type[Figure]) -> str:
    value = text.strip().lower()
    allowed = [member.value for member in kind]
    if value not in allowed:
        raise CommandError(f"{name} {shown(text)} is not one of {', '.join(allowed)}")
    return value


def _fields(args: dict[str, str] | Any, base: dict[str, Any]) -> dict[str, Any]:
    """The entry's fields with the given options applied; each option validated on its own first."""
    values = dict(base)
    if "start" in args or "precision" in args:
        start = args.get("start")
        if start is None:
            start = values["starts_at"].strftime("%Y-%m-%dT%H:%M")
        try:
            values["starts_at"], values["precision"] = parse_when(start, args.get("precision"))
        except ValueError as exc:
            raise CommandError(str(exc), show_usage=True) from None
    simple = {"project": "project", "token": "token", "coingecko": "coingecko_id", "source": "source_url"}
    for option, field in simple.items():
        if option in args:
            values[field] = None if args[option].lower() == "none" else args[option].strip()
    for option, field in (("title", "title"), ("note", "note")):
        if option in args:
            values[field] = None if args[option].lower() == "none" else _spaces(args[option])
    if "contract" in args:
        values["contracts"] = tuple(c for c in args["contract"].split(",") if c) if args["contract"] != "none" else ()
    for option, field in (("amount", "amount_tokens"), ("pct", "pct_supply"), ("total", "total_supply")):
        if option in args:
            values[field] = None if args[option].lower() == "none" else _decimal(args[option], option)
    if "type" in args:
        values["event_type"] = _choice(args["type"], "type", EventType)
    if "status" in args:
        values["status"] = _choice(args["status"], "status", Status)
    if "figure" in args:
        values["figure"] = _choice(args["figure"], "figure", Figure)
    return values


def _validated(values: dict[str, Any]) -> CalendarEntry:
    try:
        return CalendarEntry.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "entry"
        raise CommandError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}", show_usage=True) from None


def _said(report: MergeReport, entry: CalendarEntry) -> str:
    if report.moved:
        return f"moved; reminders rescheduled, {report.told} chat(s) already reminded were told"
    if report.cancelled:
        return f"cancelled; its pending reminders withdrawn, {report.told} chat(s) already reminded were told"
    if report.added:
        return "added; reminders scheduled"
    return "updated" if report.updated else "unchanged"


async def calendar_(ctx: Context) -> Reply:
    action = ctx.args["action"].strip().lower()
    entry_id = ctx.args.get("id")
    options = {k: v for k, v in ctx.args.items() if k in EDIT_FIELDS}
    service = service_for(ctx)
    repo = ctx.services.store.calendar
    by = f"{ctx.platform}:{ctx.user_id}"
    if action == "hints":
        return await _hints(ctx)
    if action not in ("add", "edit", "cancel", "show"):
        raise CommandError(
            f"unknown action {shown(action)}; expected add, edit, cancel, show or hints", show_usage=True
        )
    if action != "add" and not entry_id:
        raise CommandError(f"/calendar {action} needs the entry's id (as /upcoming shows it)", show_usage=True)
    if action == "add":
        missing = [k for k in ("project", "type", "start", "status", "figure", "source") if k not in options]
        if missing:
            raise CommandError(f"/calendar add needs {', '.join(m + '=' for m in missing)}", show_usage=True)
        new_id = entry_id.strip().lower() if entry_id else f"chat-{ctx.services.clock.now():%Y%m%d%H%M%S}"
        if await repo.get(new_id) is not None:
            raise CommandError(f"id {shown(new_id)} is taken; /calendar edit {new_id} changes it")
        base = {"id": new_id, "retrieved_at": ctx.services.clock.now().date()}
        entry = _validated(_fields(options, base))
        report = await service.put_from_chat(entry, by=by)
        return Reply.of(f"{entry.id}: {_said(report, entry)}.", entry_line((await _get(ctx, entry.id)), _now(ctx)))
    assert entry_id is not None
    stored = await repo.get(entry_id.strip().lower())
    if stored is None:
        raise CommandError(f"no calendar entry {shown(entry_id)}; /upcoming lists their ids")
    if action == "show":
        return Reply.of(entry_line(stored, _now(ctx)), f"note: {stored.entry.note or '-'}")
    if action == "cancel":
        if stored.entry.status is Status.CANCELLED:
            return Reply.of(f"{stored.entry.id} was already cancelled.")
        values = stored.entry.model_dump()
        values["status"] = Status.CANCELLED
        report = await service.put_from_chat(_validated(values), by=by)
        return Reply.of(f"{stored.entry.id}: {_said(report, stored.entry)}.")
    if not options:
        raise CommandError(f"/calendar edit needs at least one of {', '.join(f + '=' for f in EDIT_FIELDS)}")
    values = _fields(options, stored.entry.model_dump())
    values["retrieved_at"] = ctx.services.clock.now().date() if "source" in options else values["retrieved_at"]
    entry = _validated(values)
    report = await service.put_from_chat(entry, by=by)
    return Reply.of(
        f"{entry.id}: {_said(report, entry)}; kept across merges of the bundled calendar.",
        entry_line(await _get(ctx, entry.id), _now(ctx)),
    )


async def _get(ctx: Context, entry_id: str) -> StoredEntry:
    stored = await ctx.services.store.calendar.get(entry_id)
    if stored is None:  # pragma: no cover - just written
        raise CommandError(f"{entry_id} vanished")
    return stored


def _now(ctx: Context) -> Any:
    return ctx.services.clock.now()


async def _hints(ctx: Context) -> Reply:
    value = await ctx.services.store.watchers.get_value("polymarket", "hints")
    if not isinstance(value, dict) or not value.get("hints"):
        return Reply.of(
            "No prediction-market hints (PERPWATCH_CALENDAR_SOURCES=polymarket turns them on).", title="TGE hints"
        )
    lines = []
    for hint in value["hints"][:MAX_LINES]:
        odds = ", ".join(f"{k} {v}" for k, v in (hint.get("odds") or {}).items())
        lines.append(
            f"{hint.get('project')}: {hint.get('question')}"
            + (f" · odds {odds}" if odds else "")
            + (f" · ends {hint['end_date']}" if hint.get("end_date") else "")
            + (f" · {hint['url']}" if hint.get("url") else "")
        )
    lines.append("Hints to review, not dates: add a date with /calendar add once a project confirms it.")
    return Reply(lines=tuple(lines), title=f"TGE hints (Polymarket, {value.get('fetched_at', '?')})")
