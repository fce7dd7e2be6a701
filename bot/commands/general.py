"""/start and /status."""

from __future__ import annotations

from datetime import datetime

from bot.commands.base import Context
from bot.render import Reply
from bot.supervisor import UNSUPPORTED
from watchers.base import WatcherHealth


async def start(ctx: Context) -> Reply:
    return Reply.of(
        "I push perp-DEX alerts to this chat: liquidations now, whales, buybacks and unlocks as they land.",
        "Try /subscribe liquidation min=100k, then /list. /help shows every command.",
        title="perpwatch",
    )


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _watcher_line(health: WatcherHealth, now: datetime) -> str:
    up = f"up since {health.connected_since:%H:%M:%S} UTC" if health.connected_since else health.state.value
    parts = [
        f"{health.name}: {up}",
        f"last frame {_ago(health.last_frame_at, now)}",
        f"events {health.events}",
        f"reconnects {health.reconnects}",
        f"parse errors {health.parse_errors}",
    ]
    if health.rejected:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(health.rejected.items()))
        parts.append(f"rejected {sum(health.rejected.values())} ({reasons})")
    parts += [f"{name} {value}" for name, value in sorted(health.extra.items())]
    if health.last_error and health.connected_since is None:
        parts.append(f"last error: {health.last_error}")
    return " · ".join(parts)


STATUS_COUNTS_MAX_AGE_S = 2.0
"""/status answers with counts at most this old: anyone may send it, and counting a long queue takes time."""


async def status(ctx: Context) -> Reply:
    now = ctx.services.clock.now()
    lines = [_watcher_line(h, now) for h in ctx.services.supervisor.health()]
    if not lines:
        lines.append("No watchers are enabled (PERPWATCH_WATCHERS).")
    lines += [f"{name}: unsupported — {why}" for name, why in UNSUPPORTED.items()]
    backlog = await ctx.services.store.outbox.backlog(max_age_s=STATUS_COUNTS_MAX_AGE_S)
    oldest = f", oldest waiting {_ago(backlog.oldest_pending_at, now)}" if backlog.oldest_pending_at else ""
    dispatcher = ctx.services.dispatcher
    stats = dispatcher.stats
    scheduled = f", {backlog.scheduled} scheduled" if backlog.scheduled else ""
    scheduled += f", {backlog.behind} chats still reading new events" if backlog.behind else ""
    lines.append(
        f"Deliveries: {backlog.pending} pending{oldest}{scheduled}, {backlog.parked} parked; {stats.sent} sent "
        f"({stats.merged} merged into summaries, {stats.edited} edits), "
        f"{stats.rate_limited} rate limits, {stats.retried} retries since start"
    )
    dropped = ", ".join(f"{count} {reason}" for reason, count in sorted(stats.dropped.items()) if count)
    if dropped:
        lines.append(f"Dropped unsent: {dropped}")
    for platform, reason in sorted(dispatcher.disabled.items()):
        lines.append(f"{platform}: sending stopped — {reason}")
    if dispatcher.outage.paused():
        lines.append("Storage unavailable: sending is paused until the database takes writes again")
    return Reply(lines=tuple(lines), title="Status")
