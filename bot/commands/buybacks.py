"""/buybacks: totals per window for each programme with a chart of the cumulative total; operators add,
list and remove programmes; chat admins set the daily summary's time and the milestone steps."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from bot.buyback_chart import render_chart
from bot.buyback_programmes import programme_from
from bot.buybacks import WINDOW_S, ProgrammeFigures, figures
from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.commands.values import shown
from bot.families.buybacks import figure
from bot.quiet import parse_hhmm, parse_zone
from bot.render import Image, Reply, usd
from perpwatch.buybacks import KINDS, PROGRAMME_ID
from perpwatch.events import Topic
from storage import Conflict

ACTIONS = ("list", "add", "remove", "restore", "daily", "every")

_PARAM_PAIR = re.compile(r"^([a-z_]{1,32}):([\x21-\x7e]{1,200})$")


def _params(text: str) -> dict[str, Any]:
    """`user:0xfefe…,token_id:0x0d01…` (no spaces, so it is one word on every platform). Integers stay ints,
    so `decimals:18` reaches the kind's check as the number it is."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        match = _PARAM_PAIR.match(part.strip())
        if not match:
            raise CommandError(f"{shown(part)} is not key:value; params look like wallet:0xabc…,symbol:ASTERUSDT")
        key, value = match.groups()
        out[key] = int(value) if value.isdigit() and len(value) < 19 else value
    return out


def _window_text(f: ProgrammeFigures, ctx: Context) -> list[str]:
    now = ctx.services.clock.now()
    lines = [f"{f.programme.id} ({f.programme.symbol}) — {f.programme.source}"]
    for window in WINDOW_S:
        total = f.windows.get(window)
        if total is None:
            continue
        line = f.line(window, now)
        text = f"  {window}: {figure(line)}{' (estimated)' if line.basis == 'estimated' else ''}"
        if line.incomplete:
            text += f" ⚠ {line.incomplete}"
        lines.append(text)
    if f.running is not None:
        what = " · ".join(
            x
            for x in (
                f"{f.running.tokens:,.0f} {f.programme.symbol}" if f.running.tokens is not None else None,
                usd(f.running.usd) if f.running.usd is not None else None,
            )
            if x
        )
        lines.append(f"  published total: {what} ({f.running.source}, {f.running.as_of:%Y-%m-%d %H:%M} UTC)")
    return lines


async def _totals(ctx: Context, match: str | None) -> Reply:
    repo = ctx.services.store.buybacks
    found = await figures(repo, ctx.services.clock.now(), match=match)
    if not found:
        known = ", ".join(sorted({p.symbol for p in await repo.programmes()})) or "none"
        raise CommandError(f"no buyback programme for {shown(match or '')}; tokens followed: {known}")
    lines: list[str] = []
    for f in found:
        lines += _window_text(f, ctx)
    series = [(f"{f.programme.id} ({f.programme.symbol})", await repo.days(f.programme.id)) for f in found]
    symbol = found[0].programme.symbol if len({f.programme.symbol for f in found}) == 1 else "tokens"
    png = await render_chart(series, title="Cumulative buybacks", token_symbol=symbol)
    caption = f"Cumulative buybacks: {', '.join(f.programme.id for f in found)}"
    return Reply(lines=tuple(lines), title="Buybacks", image=Image(png=png, caption=caption, filename="buybacks.png"))


async def _require_operator(ctx: Context, action: str) -> None:
    if not ctx.services.settings.is_operator(ctx.platform, ctx.user_id):
        raise CommandError(f"/buybacks {action} is for operators: only ids in PERPWATCH_ADMIN_IDS may use it")


async def _require_admin(ctx: Context, action: str) -> None:
    if ctx.chat.is_group and not await ctx.is_chat_admin():
        raise CommandError(f"only admins of this chat can change /buybacks {action}; nothing changed")


async def _list(ctx: Context) -> Reply:
    repo = ctx.services.store.buybacks
    lines = []
    for p in await repo.programmes():
        health = await repo.health(p.id)
        state = (
            f"failing since {health.failing_since:%Y-%m-%d %H:%M} UTC: {health.last_error}"
            if health.failing_since
            else f"last good {health.last_good_at:%Y-%m-%d %H:%M} UTC"
            if health.last_good_at
            else "not read yet"
        )
        lines.append(f"{p.id}: {p.kind}, {p.symbol} ({p.token}), {p.origin}; {state}; source {p.source}")
    return Reply(lines=tuple(lines or ["No programmes. Operators add one with /buybacks add."]), title="Programmes")


async def _add(ctx: Context) -> Reply:
    await _require_operator(ctx, "add")
    args = ctx.args
    missing = [name for name in ("arg", "value", "token", "symbol", "source") if name not in args]
    if missing:
        raise CommandError(
            f"missing {', '.join(missing)}: /buybacks add <id> <kind> token=coingecko:<id> symbol=<TICKER> "
            "source=<https page> params=key:value,… [supply=<total supply> supply_source=<https page>]",
        )
    entry: dict[str, Any] = {
        "id": args["arg"],
        "kind": args["value"],
        "token": args["token"],
        "symbol": args["symbol"],
        "source": args["source"],
        "params": _params(args["params"]) if "params" in args else {},
    }
    if "supply" in args:
        entry["total_supply"] = args["supply"]
    if "supply_source" in args:
        entry["supply_source"] = args["supply_source"]
    try:
        programme = programme_from(entry, origin="chat")
    except ValueError as exc:
        raise CommandError(f"not added: {exc}") from None
    try:
        await ctx.services.store.buybacks.add(programme)
    except Conflict as exc:
        raise CommandError(f"not added: {exc}") from None
    ctx.services.supervisor.nudge("buybacks")
    return Reply.of(f"Added {programme.id} ({programme.kind}, {programme.symbol}); it is read within a minute.")


async def _remove(ctx: Context) -> Reply:
    await _require_operator(ctx, "remove")
    pid = ctx.args.get("arg", "").strip().lower()
    if not PROGRAMME_ID.match(pid):
        raise CommandError("which programme? /buybacks remove <id> (see /buybacks list)")
    bundled = await ctx.services.store.buybacks.programme(pid)
    if not await ctx.services.store.buybacks.remove(pid):
        raise CommandError(f"no programme {shown(pid)}; see /buybacks list")
    ctx.services.supervisor.nudge("buybacks")
    if bundled is not None and bundled.origin == "bundled":
        return Reply.of(
            f"Removed {pid}: it is no longer read (its history is kept; /buybacks restore {pid} undoes it)."
        )
    return Reply.of(f"Removed {pid} and what it had counted.")


async def _restore(ctx: Context) -> Reply:
    await _require_operator(ctx, "restore")
    pid = ctx.args.get("arg", "").strip().lower()
    if not PROGRAMME_ID.match(pid) or not await ctx.services.store.buybacks.restore(pid):
        raise CommandError(f"no removed bundled programme {shown(pid)}; see /buybacks list")
    ctx.services.supervisor.nudge("buybacks")
    return Reply.of(f"Restored {pid}: it is read again from where it stopped.")


async def _subscribed(ctx: Context) -> None:
    subs = await ctx.services.store.chats.subscriptions(ctx.chat.id)
    if not any(s.topic == Topic.BUYBACK.value for s in subs):
        raise CommandError("this chat has no buyback subscription; /subscribe buyback first")


async def _daily(ctx: Context) -> Reply:
    await _require_admin(ctx, "daily")
    await _subscribed(ctx)
    when_text = ctx.args.get("arg", "").strip().lower()
    if when_text == "off":
        await ctx.services.store.chats.set_params(ctx.chat.id, Topic.BUYBACK.value, {"daily": "off"})
        return Reply.of("No daily buyback summary here any more; milestones still come.")
    try:
        at = parse_hhmm(when_text)
        zone = parse_zone(ctx.args.get("value", ctx.chat.quiet_tz or "UTC").strip())
    except ValueError as exc:
        raise CommandError(f"{exc}; e.g. /buybacks daily 09:00 Europe/Berlin, or /buybacks daily off") from None
    await ctx.services.store.chats.set_params(
        ctx.chat.id, Topic.BUYBACK.value, {"daily": f"{at:%H:%M}", "tz": zone.key}
    )
    return Reply.of(f"Daily buyback summary at {at:%H:%M} {zone.key}, covering the 24 hours before it.")


def _step(text: str) -> tuple[str, Decimal | None]:
    """`$10M` (USD), `1M` (tokens) or `off`."""
    cleaned = text.strip()
    if cleaned.lower() == "off":
        return "off", None
    if cleaned.startswith("$"):
        return "usd", values.usd_amount(cleaned[1:])
    return "tokens", values.usd_amount(cleaned)


async def _every(ctx: Context) -> Reply:
    await _require_admin(ctx, "every")
    await _subscribed(ctx)
    target = ctx.args.get("arg", "").strip().lower()
    if target != "all" and not PROGRAMME_ID.match(target):
        raise CommandError("which programme? /buybacks every <programme|all> <1M | $10M | off>")
    if target != "all" and await ctx.services.store.buybacks.programme(target) is None:
        raise CommandError(f"no programme {shown(target)}; see /buybacks list")
    if "value" not in ctx.args:
        raise CommandError("every how much? e.g. /buybacks every hyperliquid-af 1M (tokens) or $10M (USD)")
    unit, amount = _step(ctx.args["value"])
    key = "*" if target == "all" else target
    subs = [s for s in await ctx.services.store.chats.subscriptions(ctx.chat.id) if s.topic == Topic.BUYBACK.value]
    params = dict(subs[0].params)
    usd_steps = dict(params.get("every_usd", {"*": "10000000"}))
    token_steps = dict(params.get("every_tokens", {}))
    if unit == "off":
        usd_steps[key] = "0"
        token_steps[key] = "0"
        said = f"No milestone alerts for {target}."
    elif unit == "usd":
        usd_steps[key] = str(amount)
        said = f"A milestone alert each time {target} passes another {usd(amount or Decimal(0))}."
    else:
        token_steps[key] = str(amount)
        said = f"A milestone alert each time {target} passes another {amount:,f} tokens."
    await ctx.services.store.chats.set_params(
        ctx.chat.id, Topic.BUYBACK.value, {"every_usd": usd_steps, "every_tokens": token_steps}
    )
    return Reply.of(said)


async def buybacks(ctx: Context) -> Reply:
    what = ctx.args.get("what", "").strip()
    action = what.lower()
    if action == "list":
        return await _list(ctx)
    if action == "add":
        return await _add(ctx)
    if action == "remove":
        return await _remove(ctx)
    if action == "restore":
        return await _restore(ctx)
    if action == "daily":
        return await _daily(ctx)
    if action == "every":
        return await _every(ctx)
    if what and not re.fullmatch(r"[A-Za-z0-9-]{1,40}", what):
        raise CommandError(f"{shown(what)} is not a token or programme; e.g. /buybacks HYPE", show_usage=True)
    return await _totals(ctx, what or None)


KIND_HINT = ", ".join(KINDS)
