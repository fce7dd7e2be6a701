"""/watch, /unwatch, /watchlist and /label: the wallets a chat follows."""

from __future__ import annotations

from bot import known_wallets
from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.known_wallets import KnownWallet
from bot.render import Reply
from storage import Conflict, LimitReached


def known_names_hint() -> str:
    names = known_wallets.names()
    return f"known wallets: {', '.join(names)}" if names else "no known wallets are bundled"


def watch_target(text: str) -> tuple[str, KnownWallet | None]:
    """An address as typed, or the name (or alias) of a bundled known wallet, never other text."""
    if values.looks_like_address(text):
        return values.address(text), None
    known = known_wallets.lookup(text)
    if known is None:
        raise CommandError(
            f"{values.shown(text)} is not a wallet address (0x and 40 hex digits, or a Solana address) or a "
            f"known wallet's name; {known_names_hint()} (also in /help)",
            show_usage=True,
        )
    return known.address, known


async def watch(ctx: Context) -> Reply:
    address, known = watch_target(ctx.args["address"])
    label = values.label(ctx.args["label"]) if "label" in ctx.args else None
    current = None
    if label is None and known is not None:
        # The known name is the default label, unless the chat already named this address itself.
        entries = await ctx.services.store.chats.watchlist(ctx.chat.id)
        current = next((e.label for e in entries if e.address == address and e.label), None)
        label = None if current else known.name
    try:
        new = await ctx.services.store.chats.watch(
            ctx.chat.id, address, label, limit=ctx.services.settings.max_watchlist_per_chat
        )
    except (LimitReached, Conflict) as exc:
        raise CommandError(str(exc)) from None
    shown = label or current
    named = f" as {shown}" if shown else ""
    lines = [f"{'Watching' if new else 'Already watching'} {address}{named}."]
    if known is not None:
        lines.append(
            f"{address} is the known wallet {known.name}, as publicly named by {known.source} "
            f"(read {known.retrieved.isoformat()})."
        )
    return Reply.of(*lines)


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
    lines: list[str] = []
    for e in entries:
        known = None if e.label else known_wallets.label_for(e.address)
        named = f" — {e.label}" if e.label else f" — {known} (known wallet)" if known else ""
        lines.append(f"{e.address}{named}")
    return Reply(
        lines=tuple(lines or ["The watch list is empty. Add a wallet with /watch 0x… [label] or /watch <known name>"]),
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
