"""/quiet for chats, /pause and /resume for operators."""

from __future__ import annotations

from bot.commands.base import CommandError, Context
from bot.quiet import QuietHours
from bot.render import Reply


async def quiet(ctx: Context) -> Reply:
    window = ctx.args["window"].strip()
    chats = ctx.services.store.chats
    if window.lower() == "off":
        await chats.set_quiet(ctx.chat.id, None, None, None)
        await ctx.services.store.outbox.release_held(ctx.chat.id)
        return Reply.of("Quiet hours off; anything held is sent now as a digest.")
    try:
        hours = QuietHours.parse(window, ctx.args.get("timezone", "UTC"))
    except ValueError as exc:
        raise CommandError(str(exc), show_usage=True) from None
    await chats.set_quiet(ctx.chat.id, f"{hours.start:%H:%M}", f"{hours.end:%H:%M}", hours.zone.key)
    return Reply.of(
        f"Quiet hours {hours.describe()}: alerts in that window wait and arrive as one digest when it ends."
    )


def _watcher(ctx: Context) -> str:
    name = ctx.args["watcher"].strip().lower()
    known = ctx.services.supervisor.watchers
    if name not in known:
        raise CommandError(f"unknown watcher {name!r}; running: {', '.join(known) or 'none'}")
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
