"""/quiet for chats, /pause and /resume for operators."""

from __future__ import annotations

import re

from bot.commands.base import CommandError, Context
from bot.commands.values import shown
from bot.quiet import QuietHours
from bot.render import Reply
from perpwatch.accounts import DEFAULT_DISTANCE_STEPS, DISTANCE_STEPS

_WINDOW = re.compile(r"[0-9]{1,2}:[0-9]{2}-[0-9]{1,2}:[0-9]{2}")
_ZONE = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")


def quiet_window(window: str, zone: str = "UTC") -> QuietHours | None:
    """The window as typed, or None for `off`. QuietHours' own parser takes digits of any script and quotes
    all it refuses, so only short ASCII reaches it."""
    cleaned = window.strip()
    if cleaned.lower() == "off":
        return None
    if not _WINDOW.fullmatch(cleaned):
        raise CommandError(f"{shown(window)} is not a window; expected HH:MM-HH:MM, like 23:00-07:00", show_usage=True)
    if not _ZONE.fullmatch(zone.strip()):
        raise CommandError(
            f"{shown(zone)} is not a time zone; expected an IANA name like UTC or Europe/Berlin", show_usage=True
        )
    try:
        return QuietHours.parse(cleaned, zone.strip())
    except ValueError as exc:
        raise CommandError(str(exc), show_usage=True) from None


async def quiet(ctx: Context) -> Reply:
    hours = quiet_window(ctx.args["window"], ctx.args.get("timezone", "UTC"))
    chats = ctx.services.store.chats
    if hours is None:
        await chats.set_quiet(ctx.chat.id, None, None, None)
        await ctx.services.store.outbox.release_held(ctx.chat.id)
        return Reply.of("Quiet hours off; anything held is sent now as a digest.")
    await chats.set_quiet(ctx.chat.id, f"{hours.start:%H:%M}", f"{hours.end:%H:%M}", hours.zone.key)
    return Reply.of(
        f"Quiet hours {hours.describe()}: alerts in that window wait and arrive as one digest when it ends."
    )


def _watcher(ctx: Context) -> str:
    name = ctx.args["watcher"].strip().lower()
    known = ctx.services.supervisor.watchers
    if name not in known:
        raise CommandError(f"unknown watcher {shown(name)}; running: {', '.join(known) or 'none'}")
    return name


async def pause(ctx: Context) -> Reply:
    name = _watcher(ctx)
    changed = await ctx.services.supervisor.pause(name)
    return Reply.of(
        f"Watcher {name} {'paused' if changed else 'was already paused'}; it stays paused "
        "across restarts until /resume."
    )


async def resume(ctx: Context) -> Reply:
    name = _watcher(ctx)
    changed = await ctx.services.supervisor.resume(name)
    return Reply.of(f"Watcher {name} {'resumed' if changed else 'was already running'}.")


def distance_steps(text: str) -> tuple[str, ...] | None:
    """`10,5,2` (or `10%,5%`) as steps from the ladder the watchers warn at, widest first; None for
    `default`. A step the ladder does not have is refused, not rounded to one it has."""
    cleaned = text.strip().lower()
    if cleaned == "default":
        return None
    parts = [p.strip().removesuffix("%") for p in cleaned.split(",")]
    unknown = [p for p in parts if p not in DISTANCE_STEPS]
    if not parts or unknown:
        raise CommandError(
            f"{shown(text)} is not a list of steps; choose from {', '.join(DISTANCE_STEPS)} (percent), "
            "comma-separated, like 10,5,2, or default",
            show_usage=True,
        )
    return tuple(s for s in DISTANCE_STEPS if s in parts)


async def distance(ctx: Context) -> Reply:
    steps = distance_steps(ctx.args["steps"])
    await ctx.services.store.chats.set_distance_warnings(ctx.chat.id, steps)
    chosen = steps or DEFAULT_DISTANCE_STEPS
    return Reply.of(
        f"Watched positions warn this chat at {', '.join(s + '%' for s in chosen)} from their liquidation price"
        + (" (the default)." if steps is None else ".")
    )
