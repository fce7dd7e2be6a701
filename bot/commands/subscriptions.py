"""/subscribe, /unsubscribe, /list and /threshold: what a chat receives."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from bot.commands import values
from bot.commands.base import CommandError, Context
from bot.quiet import QuietHours
from bot.render import Reply, usd
from perpwatch.events import Topic
from storage import LimitReached
from storage.chats import SCOPES
from storage.models import Subscription

UnsubscribeTarget = Literal["all"] | int | Topic


def describe(sub: Subscription) -> str:
    parts = [f"#{sub.id} {sub.topic}"]
    if sub.venue:
        parts.append(f"venue={sub.venue}")
    if sub.symbol:
        parts.append(f"symbol={sub.symbol}")
    parts.append(f"min={usd(sub.min_usd)}" if sub.min_usd is not None else "min=chat threshold")
    if sub.scope != "all":
        parts.append(f"scope={sub.scope}")
    return " ".join(parts)


async def subscribe(ctx: Context) -> Reply:
    topic = values.topic(ctx.args["topic"])
    venue = values.venue(ctx.args["venue"]) if "venue" in ctx.args else None
    symbol = values.symbol(ctx.args["symbol"]) if "symbol" in ctx.args else None
    min_usd = values.usd_amount(ctx.args["min"]) if "min" in ctx.args else None
    scope = ctx.args.get("scope", "all").strip().lower()
    if scope not in SCOPES:
        raise CommandError(f"scope must be {' or '.join(SCOPES)}", show_usage=True)
    try:
        sub, created = await ctx.services.store.chats.subscribe(
            ctx.chat.id,
            topic.value,
            venue=venue.value if venue else None,
            symbol=symbol,
            min_usd=min_usd,
            limit=ctx.services.settings.max_subscriptions_per_chat,
            scope=scope,
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


def unsubscribe_target(text: str) -> UnsubscribeTarget:
    """`all`, a subscription's `#id`, or a topic. Anything that starts like an id is held to be one, so `#x`
    and `²` (a digit to Python) are refused as ids rather than as unknown topics."""
    cleaned = text.strip()
    if cleaned.lower() == "all":
        return "all"
    if cleaned.startswith("#") or cleaned[:1].isdigit():
        return values.subscription_id(cleaned)
    return values.topic(cleaned)


async def unsubscribe(ctx: Context) -> Reply:
    target = unsubscribe_target(ctx.args["target"])
    chats = ctx.services.store.chats
    if isinstance(target, Topic):
        removed = await chats.unsubscribe(ctx.chat.id, topic=target.value)
        if not removed:
            raise CommandError(f"this chat has no {target.value} subscription; see /list")
    elif isinstance(target, int):
        removed = await chats.unsubscribe(ctx.chat.id, sub_id=target)
        if not removed:
            raise CommandError(f"this chat has no subscription #{target}; see /list")
    else:
        removed = await chats.unsubscribe(ctx.chat.id)
    return Reply.of(f"Removed {removed} subscription{'s' if removed != 1 else ''}.")


async def list_(ctx: Context) -> Reply:
    chats = ctx.services.store.chats
    subs = await chats.subscriptions(ctx.chat.id)
    lines = [describe(s) for s in subs] or ["No subscriptions. Try /subscribe liquidation min=100k"]
    lines += [f"threshold {t.topic} ≥ {usd(t.min_usd)}" for t in await chats.thresholds(ctx.chat.id)]
    quiet = QuietHours.of(ctx.chat)
    if quiet is not None:
        lines.append(f"quiet hours {quiet.describe()}")
    if any(s.topic == Topic.WHALE.value for s in subs):
        steps = await chats.distance_warnings(ctx.chat.id)
        lines.append(f"liquidation-distance warnings at {', '.join(s + '%' for s in steps)} (/distance)")
    return Reply(lines=tuple(lines), title="This chat's alerts")


def threshold_amount(text: str) -> Decimal | None:
    """The floor as typed, or None for `off`, `none` and `0`."""
    return None if text.strip().lower() in ("off", "none", "0") else values.usd_amount(text)


async def threshold(ctx: Context) -> Reply:
    topic = values.topic(ctx.args["topic"])
    amount = threshold_amount(ctx.args["min"])
    await ctx.services.store.chats.set_threshold(ctx.chat.id, topic.value, amount)
    if amount is None:
        return Reply.of(f"No default floor for {topic.value} any more.")
    return Reply.of(
        f"{topic.value} alerts below {usd(amount)} are skipped here, unless a subscription sets its own min."
    )
