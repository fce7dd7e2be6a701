"""The status page: one server-rendered HTML document, no script, a small inline SVG chart.

An operator glances at it to see whether the bot is healthy; it must never become a way to learn about the
people who use the bot. So it shows no chat's id or title (only platform and kind, counted), and it shows
what an alert said only when a group heard it: an alert only private chats heard may be about a wallet one
person watches, so it is listed by its time and topic alone. The console sink is the operator's own
terminal, not a person's chat, and counts as public. No token is ever written into the page (it reloads
itself by URL, so a `?token=` stays in the address bar, never in the document).

Everything it reads from the database is counted off the loop (`StatusReads`) and reused for a few
seconds, so a page reloaded in a loop costs the bot one read per figure; a part whose read failed says so
and the rest of the page still renders.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from bot.dispatch.dispatcher import Dispatcher
from bot.families import render_event
from bot.render import usd, when
from bot.supervisor import UNSUPPORTED, Supervisor
from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage import Outbox
from storage.models import Backlog
from storage.status import HourBucket, PlatformBacklog, SentAlert, StatusReads
from watchers.base import WatcherHealth, WatcherState

log = logging.getLogger(__name__)

READS_MAX_AGE_S = 5.0
"""The page's database figures are reused this long: a reload storm costs one read per figure."""

ALERTS_SHOWN = 15
CHART_HOURS = 24

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")
"""Venue colours in the chart, assigned in venue order (Tableau's colour-blind-safe palette)."""

PUBLIC_KINDS = ("group",)
PUBLIC_PLATFORMS = ("console",)


@dataclass
class PlatformFigures:
    name: str
    sent: int
    parked: int
    expired: int
    rate_limited: int
    held_s: float
    pending: int | None
    parked_waiting: int | None
    stopped: str | None


@dataclass
class StatusSnapshot:
    now: datetime
    watchers: list[WatcherHealth]
    unsupported: dict[str, str]
    platforms: list[PlatformFigures]
    backlog: Backlog | None
    alerts: list[SentAlert] | None
    hourly: list[HourBucket] | None
    storage_paused: bool
    errors: list[str] = field(default_factory=list)


def is_public(alert: SentAlert) -> bool:
    """Whether the page may show what the alert said: a group (or the operator's console) heard it."""
    return any(kind in PUBLIC_KINDS or platform in PUBLIC_PLATFORMS for platform, kind in alert.audience)


class StatusPage:
    def __init__(
        self,
        *,
        supervisor: Supervisor,
        dispatcher: Dispatcher,
        outbox: Outbox,
        reads: StatusReads,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.supervisor = supervisor
        self.dispatcher = dispatcher
        self.outbox = outbox
        self.reads = reads
        self.clock = clock

    async def snapshot(self) -> StatusSnapshot:
        now = self.clock.now()
        errors: list[str] = []
        backlog: Backlog | None = None
        by_platform: list[PlatformBacklog] | None = None
        alerts: list[SentAlert] | None = None
        hourly: list[HourBucket] | None = None
        try:
            backlog = await self.outbox.backlog(max_age_s=READS_MAX_AGE_S)
            by_platform = await self.reads.backlog_by_platform(max_age_s=READS_MAX_AGE_S)
            alerts = await self.reads.recent_alerts(limit=ALERTS_SHOWN, max_age_s=READS_MAX_AGE_S)
            hourly = await self.reads.liquidations_by_hour(end=now, hours=CHART_HOURS, max_age_s=READS_MAX_AGE_S)
        except Exception as exc:  # storage away: the live figures still show
            log.warning("status page could not read storage error=%s", type(exc).__name__)
            errors.append(f"storage could not be read ({type(exc).__name__}); figures from it are missing")
        stats = self.dispatcher.stats
        counted = {b.platform: b for b in by_platform or ()}
        platforms = [
            PlatformFigures(
                name=name,
                sent=stats.outcomes.get((name, "sent"), 0),
                parked=stats.outcomes.get((name, "parked"), 0),
                expired=stats.outcomes.get((name, "expired"), 0),
                rate_limited=stats.rate_limited_by.get(name, 0),
                held_s=stats.held_s_by.get(name, 0.0),
                pending=counted[name].pending if name in counted else (0 if by_platform is not None else None),
                parked_waiting=counted[name].parked if name in counted else (0 if by_platform is not None else None),
                stopped=self.dispatcher.disabled.get(name),
            )
            for name in sorted(self.dispatcher.platforms)
        ]
        return StatusSnapshot(
            now=now,
            watchers=self.supervisor.health(),
            unsupported=dict(UNSUPPORTED),
            platforms=platforms,
            backlog=backlog,
            alerts=alerts,
            hourly=hourly,
            storage_paused=self.dispatcher.outage.paused(),
            errors=errors,
        )

    async def render(self) -> str:
        return render(await self.snapshot())


# --- rendering: pure, so the privacy rules are tested without a bot -----------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(int((now - moment).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#1a7f37}.down{color:#b42318}.paused,.starting,.degraded,.unsupported{color:#8a6100}
.note{color:#666}.warn{background:#fff4e5;border:1px solid #f0c36d;padding:6px 10px}
"""


def render(s: StatusSnapshot) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="refresh" content="30">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>perpwatch status</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>perpwatch status</h1>",
        f'<p class="note" id="generated">As of {_e(when(s.now))}; reloads every 30 s.</p>',
    ]
    parts += [f'<p class="warn">{_e(error)}</p>' for error in s.errors]
    if s.storage_paused:
        parts.append('<p class="warn" id="storage-paused">Storage unavailable: sending is paused.</p>')
    parts += _watchers(s)
    parts += _deliveries(s)
    parts += _chart(s.hourly, s.now)
    parts += _alerts(s.alerts, s.now)
    parts.append("</body></html>")
    return "\n".join(parts)


def _watchers(s: StatusSnapshot) -> list[str]:
    out = [
        "<h2>Watchers</h2>",
        '<table id="watchers"><thead><tr><th>watcher</th><th>state</th><th>since</th><th>last frame</th>'
        "<th>events</th><th>reconnects</th><th>parse errors</th><th>errors</th><th>last error</th></tr></thead><tbody>",
    ]
    if not s.watchers:
        out.append('<tr><td colspan="9">No watchers are enabled (PERPWATCH_WATCHERS).</td></tr>')
    for h in s.watchers:
        since = f"{h.connected_since:%H:%M:%S} UTC" if h.connected_since else ""
        error = h.last_error if h.last_error and h.state is not WatcherState.UP else ""
        out.append(
            f'<tr data-watcher="{_e(h.name)}"><td>{_e(h.name)}</td>'
            f'<td class="{_e(h.state.value)}">{_e(h.state.value)}</td><td>{_e(since)}</td>'
            f"<td>{_e(_ago(h.last_frame_at, s.now))}</td><td class=n>{h.events}</td><td class=n>{h.reconnects}</td>"
            f"<td class=n>{h.parse_errors}</td><td class=n>{h.errors}</td><td>{_e(error)}</td></tr>"
        )
        if h.note or h.extra:  # what the watcher says of itself: each programme's source, a host's budget
            said = [h.note] if h.note else []
            said += [f"{key}: {value}" for key, value in sorted(h.extra.items())]
            out.append(f'<tr class="detail"><td></td><td colspan="8" class="note">{_e(" · ".join(said))}</td></tr>')
    out.append("</tbody></table>")
    out += [f'<p class="note">{_e(name)}: unsupported — {_e(why)}</p>' for name, why in s.unsupported.items()]
    return out


def _deliveries(s: StatusSnapshot) -> list[str]:
    out = ["<h2>Deliveries</h2>"]
    b = s.backlog
    if b is not None:
        oldest = f", oldest waiting {_ago(b.oldest_pending_at, s.now)}" if b.oldest_pending_at else ""
        out.append(
            f'<p id="backlog">Backlog: <b>{b.pending}</b> pending{_e(oldest)}, {b.scheduled} scheduled, '
            f"{b.parked} parked, {b.behind} chats still reading new events.</p>"
        )
    out.append(
        '<table id="platforms"><thead><tr><th>platform</th><th>sent</th><th>parked</th><th>expired</th>'
        "<th>429s</th><th>held by 429s</th><th>pending now</th><th>parked (kept)</th><th>sending</th></tr></thead>"
        "<tbody>"
    )
    for p in s.platforms:
        pending = "?" if p.pending is None else str(p.pending)
        parked = "?" if p.parked_waiting is None else str(p.parked_waiting)
        sending = f"stopped: {p.stopped}" if p.stopped else "yes"
        out.append(
            f'<tr data-platform="{_e(p.name)}"><td>{_e(p.name)}</td><td class=n>{p.sent}</td>'
            f"<td class=n>{p.parked}</td><td class=n>{p.expired}</td><td class=n>{p.rate_limited}</td>"
            f"<td class=n>{p.held_s:.0f} s</td><td class=n>{pending}</td><td class=n>{parked}</td>"
            f"<td>{_e(sending)}</td></tr>"
        )
    out.append("</tbody></table>")
    out.append('<p class="note">Sent, parked, expired and 429s count since this process started.</p>')
    return out


def _chart(hourly: list[HourBucket] | None, now: datetime) -> list[str]:
    out = [f"<h2>Liquidations, last {CHART_HOURS} h, by venue</h2>"]
    if hourly is None:
        return [*out, "<p>Not available (storage could not be read).</p>"]
    if not hourly:
        return [*out, '<p id="chart-empty">No liquidations stored in the last 24 hours.</p>']
    venues = sorted({b.venue for b in hourly})
    colour = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(venues)}
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hours = [top - timedelta(hours=CHART_HOURS - i) for i in range(CHART_HOURS)]
    per_hour: dict[datetime, dict[str, HourBucket]] = {h: {} for h in hours}
    for b in hourly:
        per_hour.setdefault(b.hour_start, {})[b.venue] = b
    peak = max((sum((x.usd for x in v.values()), Decimal(0)) for v in per_hour.values()), default=Decimal(0))
    width, height, bar = 24 * 26 + 60, 220, 22
    chart_h = 170
    svg = [
        f'<svg id="chart" role="img" aria-label="USD liquidated per hour by venue" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="0" y="12" font-size="11">peak {_e(usd(peak))}/h</text>',
        f'<line x1="50" y1="{chart_h + 10}" x2="{width}" y2="{chart_h + 10}" stroke="#999"/>',
    ]
    for i, hour in enumerate(hours):
        x = 54 + i * 26
        y = chart_h + 10
        for venue in venues:
            cell = per_hour[hour].get(venue)
            if cell is None or peak <= 0:
                continue
            h = max(int(cell.usd / peak * chart_h), 1)
            y -= h
            label = f"{venue} {hour:%H}:00 UTC: {cell.count} liquidations, {usd(cell.usd)}"
            svg.append(
                f'<rect data-venue="{_e(venue)}" data-hour="{hour:%H}" x="{x}" y="{y}" width="{bar}" height="{h}" '
                f'fill="{colour[venue]}"><title>{_e(label)}</title></rect>'
            )
        if i % 3 == 0:
            svg.append(f'<text x="{x}" y="{chart_h + 24}" font-size="10">{hour:%H}h</text>')
    svg.append("</svg>")
    out += svg
    totals = {
        v: (sum(b.count for b in hourly if b.venue == v), sum((b.usd for b in hourly if b.venue == v), Decimal(0)))
        for v in venues
    }
    out.append('<table id="venues"><thead><tr><th>venue</th><th>liquidations</th><th>USD</th></tr></thead><tbody>')
    for v in venues:
        count, total = totals[v]
        swatch = f'<span style="color:{colour[v]}">■</span>'
        out.append(
            f'<tr data-venue="{_e(v)}"><td>{swatch} {_e(v)}</td><td class=n>{count}</td>'
            f"<td class=n>{_e(usd(total))}</td></tr>"
        )
    out.append("</tbody></table>")
    return out


def _audience(alert: SentAlert) -> str:
    counts: dict[str, int] = {}
    for platform, kind in alert.audience:
        key = platform if platform in PUBLIC_PLATFORMS else f"{platform} {kind}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {key}" for key, n in sorted(counts.items()))


def _alerts(alerts: Sequence[SentAlert] | None, now: datetime) -> list[str]:
    out = ["<h2>Last alerts</h2>"]
    if alerts is None:
        return [*out, "<p>Not available (storage could not be read).</p>"]
    if not alerts:
        return [*out, '<p id="alerts-empty">No alert sent yet.</p>']
    out.append('<table id="alerts"><thead><tr><th>sent</th><th>topic</th><th>alert</th><th>to</th></tr></thead><tbody>')
    for a in alerts:
        if is_public(a):
            try:
                rendered = render_event(a.event)
                text = f"{rendered.title} — {rendered.headline}"
            except Exception:  # a renderer bug shows as a gap here, never as a broken page
                text = f"{a.event.venue or ''} {a.event.symbol or ''}".strip()
            cell = f'<td class="text">{_e(text)}</td>'
        else:
            cell = '<td class="private note">sent to private chats only: not shown</td>'
        out.append(
            f"<tr><td>{_e(_ago(a.sent_at, now))}</td><td>{_e(a.event.topic.value)}</td>{cell}"
            f"<td>{_e(_audience(a))}</td></tr>"
        )
    out.append("</tbody></table>")
    return out
