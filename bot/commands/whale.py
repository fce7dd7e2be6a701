"""/whale: a wallet's open positions and account value, fetched live from the venue within its budget."""

from __future__ import annotations

from decimal import Decimal

from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.render import Reply, number, price, usd, when
from perpwatch.accounts import AccountLookup, AccountUnavailable, NoAccount, PositionView


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
        f"mark {price(p.mark_px) if p.mark_px is not None else 'not given'} · uPnL "
        f"{_signed_usd(p.unrealized_pnl_usd) if p.unrealized_pnl_usd is not None else 'not given'} · "
        f"{p.leverage} · {gap}"
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
    """Every enabled venue that follows this kind of address is asked; one that is busy or away, or lists no
    account for it, says so in a line of its own without hiding the others."""
    address, label = await _address(ctx, ctx.args["target"])
    lookups = [w for w in ctx.services.supervisor.watchers.values() if isinstance(w, AccountLookup)]
    asked = [w for w in lookups if w.follows(address)]
    if not asked:
        raise CommandError(
            "no enabled watcher follows this kind of address (hyperliquid_whales or lighter_accounts for 0x, "
            "pacifica_accounts for Solana; see PERPWATCH_WATCHERS)"
        )
    lines: list[str] = []
    found = 0
    for lookup in asked:
        try:
            view = await lookup.account(address)
        except NoAccount as exc:
            lines.append(f"{exc}.")
            continue
        except AccountUnavailable as exc:
            lines.append(str(exc))
            continue
        found += 1
        value = usd(view.account_value_usd) if view.account_value_usd is not None else "not given"
        lines.append(f"{view.venue.capitalize()}: account value {value}, as of {when(view.at)}")
        lines += [_line(p) for p in view.positions] or ["No open positions."]
    if not found and len(lines) == 1:
        raise CommandError(lines[0])
    title = f"{label} ({address})" if label else address
    return Reply(lines=tuple(lines), title=title)
