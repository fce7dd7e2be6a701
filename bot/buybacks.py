"""Buyback figures for people: a programme's totals as alert lines, a chat's daily summary at its own hour,
and milestones at its own steps.

Figures come only from what the store holds (`storage.BuybackRepo`), so a restart, a missed poll or a
replayed page changes nothing here. A report is an event for one chat (`Event.audience`) with a key that
names the chat, the subscription and the day (or the step reached), so a report made twice is stored once
and a restart in the middle sends it once. A source that is failing stays out of the combined total it
would understate, and its line says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from bot.quiet import parse_hhmm, parse_zone
from perpwatch.buybacks import Programme, ProgrammeHealth, RunningTotal, WindowTotal
from perpwatch.clock import Clock
from perpwatch.events import BuybackLine, BuybackMilestoneBody, BuybackSummaryBody, Event, Topic
from storage.models import Chat, Subscription

log = logging.getLogger(__name__)

REPORTS_SCOPE = "buyback_reports"
"""Durable state of the reports (the milestone each chat last heard of), in the watcher state table."""

DEFAULT_DAILY = "09:00"
DEFAULT_MILESTONE_USD = Decimal(10_000_000)
WINDOW_S: Mapping[str, float | None] = {"24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0, "all": None}
COVERAGE_SLACK_S = 3600.0
"""History that starts within an hour of a window's start covers it (snapshots are minutes apart)."""


class Ledger(Protocol):
    async def programmes(self) -> list[Programme]: ...

    async def totals(self, programme_id: str, now: datetime) -> list[WindowTotal]: ...

    async def health(self, programme_id: str) -> ProgrammeHealth: ...

    async def running_total(self, programme_id: str) -> RunningTotal | None: ...


class Accept(Protocol):
    async def __call__(self, events: Sequence[Event]) -> Any: ...


class Kv(Protocol):
    async def get_value(self, watcher: str, key: str) -> Any | None: ...

    async def put_value(self, watcher: str, key: str, value: Any) -> None: ...


def _span(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min"


def incompleteness(total: WindowTotal, health: ProgrammeHealth, now: datetime) -> str | None:
    """Why a window's figure is a floor, or None when it is whole."""
    reasons: list[str] = []
    if health.failing_since is not None:
        good = f"last good {health.last_good_at:%Y-%m-%d %H:%M} UTC" if health.last_good_at else "never read yet"
        reasons.append(f"source failing since {health.failing_since:%Y-%m-%d %H:%M} UTC ({good})")
    span = WINDOW_S.get(total.window)
    if span is not None:
        start = now - timedelta(seconds=span)
        tracked = health.tracked_since
        if tracked is None:
            reasons.append("nothing stored yet")
        elif tracked > start + timedelta(seconds=COVERAGE_SLACK_S):
            reasons.append(f"counted only since {tracked:%Y-%m-%d %H:%M} UTC")
    if total.gap_s:
        reasons.append(f"includes a {_span(total.gap_s)} gap without snapshots")
    return "; ".join(reasons) or None


def line(
    programme: Programme,
    total: WindowTotal,
    health: ProgrammeHealth,
    running: RunningTotal | None,
    now: datetime,
    *,
    overall: WindowTotal | None = None,
) -> BuybackLine:
    """One programme's window as an alert line; `overall` (its all-time total) rides along for milestones."""
    tokens = total.tokens if total.tokens_known else None
    share = None
    if tokens is not None and programme.total_supply:
        share = tokens / programme.total_supply
    every = overall or total
    return BuybackLine(
        programme=programme.id,
        symbol=programme.symbol,
        window=total.window,
        tokens=tokens,
        usd=total.usd if total.buys else (Decimal(0) if tokens is not None else None),
        avg_price=total.price,
        share_of_supply=share,
        basis="estimated" if total.estimated or programme.kind == "defillama_holders_revenue" else "measured",
        source=programme.source,
        incomplete=incompleteness(total, health, now),
        total_tokens=every.tokens if every.tokens_known else None,
        total_usd=every.usd,
        tracked_since=health.tracked_since,
        published_tokens=running.tokens if running else None,
        published_usd=running.usd if running else None,
        published_source=running.source if running else None,
    )


@dataclass(frozen=True, slots=True)
class ProgrammeFigures:
    programme: Programme
    windows: dict[str, WindowTotal]
    health: ProgrammeHealth
    running: RunningTotal | None

    def line(self, window: str, now: datetime) -> BuybackLine:
        return line(self.programme, self.windows[window], self.health, self.running, now, overall=self.windows["all"])


async def figures(ledger: Ledger, now: datetime, *, match: str | None = None) -> list[ProgrammeFigures]:
    """Every programme's windows (or those whose id or symbol is `match`), read from the store."""
    wanted = match.strip().lower() if match else None
    out: list[ProgrammeFigures] = []
    for programme in await ledger.programmes():
        if wanted and wanted not in (programme.id, programme.symbol.lower()):
            continue
        windows = {t.window: t for t in await ledger.totals(programme.id, now)}
        out.append(
            ProgrammeFigures(
                programme, windows, await ledger.health(programme.id), await ledger.running_total(programme.id)
            )
        )
    return out


# --- per-chat settings ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChatBuybackSettings:
    """What a chat chose (stored in its buyback subscriptions' params): the summary's local time and zone
    (None: no summary), and milestone steps by programme (`*` for every programme) and unit."""

    daily: time | None
    zone: ZoneInfo
    every_usd: Mapping[str, Decimal]
    every_tokens: Mapping[str, Decimal]

    @classmethod
    def of(cls, sub: Subscription, chat: Chat) -> ChatBuybackSettings:
        params = sub.params
        daily_text = params.get("daily", DEFAULT_DAILY)
        zone_text = params.get("tz") or chat.quiet_tz or "UTC"
        try:
            daily = None if daily_text == "off" else parse_hhmm(str(daily_text))
            zone = parse_zone(str(zone_text))
        except ValueError:  # stored by an older release or by hand: fall back rather than stop the reports
            daily, zone = parse_hhmm(DEFAULT_DAILY), ZoneInfo("UTC")
        every_usd = {
            k: Decimal(str(v)) for k, v in dict(params.get("every_usd", {"*": str(DEFAULT_MILESTONE_USD)})).items()
        }
        every_tokens = {k: Decimal(str(v)) for k, v in dict(params.get("every_tokens", {})).items()}
        return cls(daily=daily, zone=zone, every_usd=every_usd, every_tokens=every_tokens)

    def steps(self, programme: Programme) -> list[tuple[str, Decimal]]:
        """(unit, step) pairs that apply to a programme: its own setting, else the chat's `*`, else (for
        tokens) the programme's bundled default step."""
        out: list[tuple[str, Decimal]] = []
        usd_step = self.every_usd.get(programme.id, self.every_usd.get("*"))
        if usd_step is not None and usd_step > 0:
            out.append(("usd", usd_step))
        token_step = self.every_tokens.get(programme.id, self.every_tokens.get("*", programme.milestone_tokens))
        if token_step is not None and token_step > 0 and programme.kind != "defillama_holders_revenue":
            out.append(("tokens", token_step))
        return out


def _covers(sub: Subscription, programme: Programme) -> bool:
    return sub.symbol is None or sub.symbol.upper() in (programme.symbol, programme.id.upper())


class BuybackReports:
    """Every minute: daily summaries that fell due at a chat's hour, and milestones newly passed."""

    def __init__(
        self, ledger: Ledger, chats: Any, kv: Kv, accept: Accept, clock: Clock, *, tick_s: float = 60.0
    ) -> None:
        self.ledger = ledger
        self.chats = chats
        self.kv = kv
        self.accept = accept
        self.clock = clock
        self.tick_s = tick_s
        self._made: set[str] = set()
        """Summary keys already accepted by this process: the next ticks of the day skip them."""

    async def run(self) -> None:
        """Ticks from one period after start: the sources' first reads come before the first report."""
        while True:
            await self.clock.sleep(self.tick_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is unavailable for now: the next tick tries again, nothing is lost
                log.warning("buyback reports failed; retrying next tick", exc_info=True)

    async def tick(self) -> int:
        """One round; the number of report events accepted (new or not)."""
        now = self.clock.now()
        subs: list[tuple[Chat, Subscription]] = []
        after = 0
        while page := await self.chats.of_topic(Topic.BUYBACK.value, after_id=after):
            subs += page
            after = page[-1][1].id
        if not subs:
            return 0
        everything = await figures(self.ledger, now)
        events: list[Event] = []
        heard: dict[str, int] = {}
        for chat, sub in subs:
            settings = ChatBuybackSettings.of(sub, chat)
            mine = [f for f in everything if _covers(sub, f.programme)]
            if not mine:
                continue
            summary = self._summary(chat, sub, settings, mine, now)
            if summary is not None and summary.key not in self._made:
                events.append(summary)
            events += await self._milestones(chat, sub, settings, mine, now, heard)
        if events:
            await self.accept(events)  # first: a milestone is marked heard only once its alert is stored
        for key, reached in heard.items():
            await self.kv.put_value(REPORTS_SCOPE, key, reached)
        self._made |= {e.key for e in events if isinstance(e.body, BuybackSummaryBody)}
        return len(events)

    def _summary(
        self, chat: Chat, sub: Subscription, settings: ChatBuybackSettings, mine: list[ProgrammeFigures], now: datetime
    ) -> Event | None:
        if settings.daily is None or not any(f.health.last_good_at is not None for f in mine):
            return None  # nothing was ever read: a summary of zeros would say nothing true
        local = now.astimezone(settings.zone)
        due_local = datetime.combine(local.date(), settings.daily, tzinfo=settings.zone)
        if local < due_local:
            return None
        day = local.date().isoformat()
        next_due = datetime.combine(local.date() + timedelta(days=1), settings.daily, tzinfo=settings.zone)
        body = BuybackSummaryBody(day=day, zone=settings.zone.key, lines=tuple(f.line("24h", now) for f in mine))
        return Event(
            key=f"buyback:daily:{chat.id}:{sub.id}:{day}",
            topic=Topic.BUYBACK,
            source="buyback_reports",
            symbol=sub.symbol,
            occurred_at=now,
            body=body,
            audience=chat.id,
            expires_at=max(next_due, now + timedelta(minutes=5)),
        )

    async def _milestones(
        self,
        chat: Chat,
        sub: Subscription,
        settings: ChatBuybackSettings,
        mine: list[ProgrammeFigures],
        now: datetime,
        heard_now: dict[str, int],
    ) -> list[Event]:
        """The highest step newly passed per programme and unit. The first time a chat and step meet, the
        step already reached is noted, not announced: subscribing is not a milestone."""
        out: list[Event] = []
        for f in mine:
            overall = f.windows.get("all")
            if overall is None or f.health.failing_since is not None:
                continue
            for unit, step in settings.steps(f.programme):
                amount = overall.usd if unit == "usd" else (overall.tokens if overall.tokens_known else None)
                if amount is None:
                    continue
                reached = int(amount // step)
                key = f"{chat.id}:{sub.id}:{f.programme.id}:{unit}:{step}"
                heard = await self.kv.get_value(REPORTS_SCOPE, key)
                if heard is None or reached < int(heard):
                    heard_now[key] = reached
                    continue
                if reached <= int(heard):
                    continue
                body = BuybackMilestoneBody(
                    unit="usd" if unit == "usd" else "tokens",
                    step=step,
                    reached=step * reached,
                    line=f.line("all", now),
                )
                out.append(
                    Event(
                        key=f"buyback:milestone:{key}:{reached}",
                        topic=Topic.BUYBACK,
                        source="buyback_reports",
                        symbol=f.programme.symbol,
                        occurred_at=now,
                        body=body,
                        audience=chat.id,
                    )
                )
                heard_now[key] = reached
        return out
