"""/subscribe, /unsubscribe, /list and /threshold: what a chat receives."""

from __future__ import annotations

from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.quiet import QuietHours
from bot.render import Reply, usd
from storage import LimitReached
from storage.models import Subscription


def describe(sub: Subscription) -> str:
    parts = [f"#{sub.id} {sub.topic}"]
    if sub.venue:
        parts.append(f"venue={sub.venue}")
    if sub.symbol:
        parts.append(f"symbol={sub.symbol}")
    parts.append(f"min={usd(sub.min_usd)}" if sub.min_usd is not None else "min=chat threshold")
    return " ".join(parts)


async def subscribe(ctx: Context) -> Reply:
    topic = values.topic(ctx.args["topic"])
    venue = values.venue(ctx.args["venue"]) if "venue" in ctx.args else None
    symbol = values.symbol(ctx.args["symbol"]) if "symbol" in ctx.args else None
    min_usd = values.usd_amount(ctx.args["min"]) if "min" in ctx.args else None
    try:
        sub, created = await ctx.services.store.chats.subscribe(
            ctx.chat.id,
            topic.value,
            venue=venue.value if venue else None,
            symbol=symbol,
            min_usd=min_usd,
            limit=ctx.services.settings.max_subscriptions_per_chat,
        )
    except LimitReached as exc:
        raise CommandError(f"{exc}; remove one with /unsubscribe first") from None
    verb = "Subscribed" if created else "Updated"
    lines = [f"{verb}: {describe(sub)}"]
    if not ctx.services.supervisor.covers(topic, venue):
        where = f" from {venue.value}" if venue else ""
        lines.append(
            f"Note: no enabled watcher produces {topic.value} alerts{where} yet; this subscription "
            "starts delivering when one does."
        )
    lines.append("See everything with /list.")
    return Reply(lines=tuple(lines))


async def unsubscribe(ctx: Context) -> Reply:
    target = ctx.args["target"].strip().lower()
    chats = ctx.services.store.chats
    if target == "all":
        removed = await chats.unsubscribe(ctx.chat.id)
    elif target.lstrip("#").isdigit():
        removed = await chats.unsubscribe(ctx.chat.id, sub_id=int(target.lstrip("#")))
        if not removed:
            raise CommandError(f"this chat has no subscription #{target.lstrip('#')}; see /list")
    else:
        topic = values.topic(target)
        removed = await chats.unsubscribe(ctx.chat.id, topic=topic.value)
        if not removed:
            raise CommandError(f"this chat has no {topic.value} subscription; see /list")
    return Reply.of(f"Removed {removed} subscription{'s' if removed != 1 else ''}.")


async def list_(ctx: Context) -> Reply:
    chats = ctx.services.store.chats
    subs = await chats.subscriptions(ctx.chat.id)
    lines = [describe(s) for s in subs] or ["No subscriptions. Try /subscribe liquidation min=100k"]
    lines += [f"threshold {t.topic} ≥ {usd(t.min_usd)}" for t in await chats.thresholds(ctx.chat.id)]
    quiet = QuietHours.of(ctx.chat)
    if quiet is not None:
        lines.append(f"quiet hours {quiet.describe()}")
    return Reply(lines=tuple(lines), title="This chat's alerts")


async def threshold(ctx: Context) -> Reply:
    topic = values.topic(ctx.args["topic"])
    raw = ctx.args["min"].strip().lower()
    amount = None if raw in ("off", "none", "0") else values.usd_amount(raw)
    await ctx.services.store.chats.set_threshold(ctx.chat.id, topic.value, amount)
    if amount is None:
        return Reply.of(f"No default floor for {topic.value} any more.")
    return Reply.of(
        f"{topic.value} alerts below {usd(amount)} are skipped here, unless a subscription sets its own min."
    )
