"""/watch, /unwatch, /watchlist and /label: the wallets a chat follows."""

from __future__ import annotations

from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.render import Reply
from storage import Conflict, LimitReached


async def watch(ctx: Context) -> Reply:
    address = values.address(ctx.args["address"])
    label = values.label(ctx.args["label"]) if "label" in ctx.args else None
    try:
        new = await ctx.services.store.chats.watch(
            ctx.chat.id, address, label, limit=ctx.services.settings.max_watchlist_per_chat
        )
    except (LimitReached, Conflict) as exc:
        raise CommandError(str(exc)) from None
    named = f" as {label}" if label else ""
    return Reply.of(f"{'Watching' if new else 'Already watching'} {address}{named}.")


def unwatch_target(text: str) -> str:
    """A watched address or its label, held to the shapes /watch stores (no label starts with 0x or is a
    Solana address), so no other text reaches the store."""
    try:
        return values.address(text) if values.looks_like_address(text) else values.label(text)
    except CommandError:
        raise CommandError(
            f"{values.shown(text)} is neither a wallet address nor a label; see /watchlist", show_usage=True
        ) from None


async def unwatch(ctx: Context) -> Reply:
    target = unwatch_target(ctx.args["target"])
    removed = await ctx.services.store.chats.unwatch(ctx.chat.id, target)
    if not removed:
        raise CommandError(f"{target!r} is not on this chat's watch list; see /watchlist")
    return Reply.of(f"Stopped watching {target}.")


async def watchlist(ctx: Context) -> Reply:
    entries = await ctx.services.store.chats.watchlist(ctx.chat.id)
    lines = [f"{e.address}" + (f" — {e.label}" if e.label else "") for e in entries]
    return Reply(
        lines=tuple(lines or ["The watch list is empty. Add a wallet with /watch 0x… [label]"]),
        title="Watch list",
    )


async def label(ctx: Context) -> Reply:
    address = values.address(ctx.args["address"])
    name = values.label(ctx.args["label"])
    try:
        changed = await ctx.services.store.chats.label(ctx.chat.id, address, name)
    except Conflict as exc:
        raise CommandError(str(exc)) from None
    if not changed:
        raise CommandError(f"{address} is not on this chat's watch list; add it with /watch {address} {name}")
    return Reply.of(f"{address} is now labelled {name}.")
