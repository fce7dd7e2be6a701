"""/whale: a wallet's open positions and account value, fetched live from the venue within its budget."""

from __future__ import annotations

from decimal import Decimal

from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.render import Reply, number, price, usd, when
from perpwatch.accounts import AccountLookup, AccountUnavailable, PositionView


def _signed_usd(amount: Decimal) -> str:
    return f"{'+' if amount >= 0 else '−'}{usd(abs(amount))}"


def _line(p: PositionView) -> str:
    if p.distance is None:
        gap = "no liquidation price given"
    elif p.distance <= 0:
        gap = f"past its liquidation price {price(p.liquidation_px)}" if p.liquidation_px else "past liquidation"
    else:
        gap = f"{p.distance * 100:.1f}% to liquidation at {price(p.liquidation_px)}" if p.liquidation_px else ""
    return (
        f"{p.coin} {p.side.value.upper()} {number(p.size)} · {usd(p.notional_usd)} · entry {price(p.entry_px)} · "
        f"mark {price(p.mark_px)} · uPnL {_signed_usd(p.unrealized_pnl_usd)} · {p.leverage} · {gap}"
    )


async def _address(ctx: Context, target: str) -> tuple[str, str | None]:
    """An address, or a label on this chat's watch list."""
    text = target.strip()
    if values.looks_like_address(text):
        return values.address(text), None
    name = values.label(text)
    for entry in await ctx.services.store.chats.watchlist(ctx.chat.id):
        if entry.label is not None and entry.label.lower() == name.lower():
            return entry.address, entry.label
    raise CommandError(f"{name!r} is not a label on this chat's watch list; see /watchlist", show_usage=True)


async def whale(ctx: Context) -> Reply:
    address, label = await _address(ctx, ctx.args["target"])
    lookups = [w for w in ctx.services.supervisor.watchers.values() if isinstance(w, AccountLookup)]
    if not lookups:
        raise CommandError("no whale watcher is enabled (add hyperliquid_whales to PERPWATCH_WATCHERS)")
    try:
        view = await lookups[0].account(address)
    except AccountUnavailable as exc:
        raise CommandError(str(exc)) from None
    title = f"{label} ({address})" if label else address
    lines = [f"Account value {usd(view.account_value_usd)} on {view.venue.capitalize()}, as of {when(view.at)}"]
    lines += [_line(p) for p in view.positions] or ["No open positions."]
    return Reply(lines=tuple(lines), title=title)
