"""Every chat command, registered once. Telegram and Discord both build their command lists from here."""

from __future__ import annotations

from bot.commands import buybacks, calendar, general, liqs, settings_cmds, subscriptions, watchlist, whale
from bot.commands.base import Access, Command, CommandError, Context, Param, parse_text_args, run_command
from bot.commands.values import TOPICS, VENUES
from bot.commands.watchlist import known_names_hint
from bot.render import Reply
from storage.chats import SCOPES

__all__ = [
    "COMMANDS",
    "Access",
    "Command",
    "CommandError",
    "Context",
    "Param",
    "by_name",
    "parse_text_args",
    "run_command",
]


async def help_(ctx: Context) -> Reply:
    """Lives beside the registry it lists, so no command module has to import the registry back."""
    lines = [
        f"{c.usage} — {c.summary}"
        + (f"; {c.details()}" if c.details else "")
        + ("" if c.access.value == "anyone" else f" ({c.access.value})")
        for c in COMMANDS
    ]
    return Reply(lines=tuple(lines), title="Commands")


_TOPIC = Param("topic", "what to receive", required=True, choices=TOPICS)

COMMANDS: tuple[Command, ...] = (
    Command("start", "what this bot does", general.start),
    Command("help", "list the commands", help_),
    Command(
        "subscribe",
        "receive a topic, optionally filtered",
        subscriptions.subscribe,
        params=(
            _TOPIC,
            Param("venue", "only this venue", positional=False, choices=VENUES),
            Param("symbol", "only this symbol, e.g. BTC", positional=False),
            Param("min", "minimum USD, e.g. 250k", positional=False, kind="number"),
            Param(
                "scope",
                "all, or watchlist: only wallets on /watchlist. For whale, all is large trades by anyone plus "
                "your watched wallets, watchlist your watched wallets alone",
                positional=False,
                choices=SCOPES,
            ),
        ),
        access=Access.CHAT_ADMIN,
    ),
    Command(
        "unsubscribe",
        "remove a subscription by #id, a whole topic, or all",
        subscriptions.unsubscribe,
        params=(Param("target", "subscription id, topic, or all", required=True),),
        access=Access.CHAT_ADMIN,
    ),
    Command("list", "this chat's subscriptions, thresholds and quiet hours", subscriptions.list_),
    Command(
        "watch",
        "follow a wallet, by address or by a known wallet's name (listed in /help)",
        watchlist.watch,
        params=(
            Param("address", "0x… or Solana wallet address, or a known wallet's name", required=True),
            Param("label", "a short name (default: the known wallet's name)"),
        ),
        access=Access.CHAT_ADMIN,
        details=known_names_hint,
    ),
    Command(
        "unwatch",
        "stop following a wallet",
        watchlist.unwatch,
        params=(Param("target", "address or label", required=True),),
        access=Access.CHAT_ADMIN,
    ),
    Command("watchlist", "the wallets this chat follows", watchlist.watchlist),
    Command(
        "label",
        "name a watched wallet",
        watchlist.label,
        params=(
            Param("address", "0x… or Solana wallet address", required=True),
            Param("label", "a short name", required=True),
        ),
        access=Access.CHAT_ADMIN,
    ),
    Command(
        "threshold",
        "this chat's default minimum USD for a topic (or off)",
        subscriptions.threshold,
        params=(_TOPIC, Param("min", "minimum USD, e.g. 100k, or off", required=True)),
        access=Access.CHAT_ADMIN,
    ),
    Command(
        "distance",
        "how near liquidation a watched position must come to warn this chat (percent steps)",
        settings_cmds.distance,
        params=(
            Param(
                "steps", "comma-separated percents, e.g. 10,5,2 (from 20,15,10,7.5,5,3,2,1), or default", required=True
            ),
        ),
        access=Access.CHAT_ADMIN,
    ),
    Command(
        "quiet",
        "hold alerts in a nightly window and send a digest after (or off)",
        settings_cmds.quiet,
        params=(
            Param("window", "HH:MM-HH:MM or off", required=True),
            Param("timezone", "IANA zone, e.g. Europe/Berlin (default UTC)"),
        ),
        access=Access.CHAT_ADMIN,
    ),
    Command("status", "watcher health and the delivery backlog", general.status),
    Command(
        "liqs",
        "liquidations by venue and side in a window, with the largest",
        liqs.liqs,
        params=(
            Param("symbol", "only this symbol, e.g. BTC"),
            Param("window", "how far back, e.g. 30m, 4h, 7d (default 1h)"),
        ),
    ),
    Command(
        "whale",
        "a wallet's open positions, account value and distance to liquidation, fetched live",
        whale.whale,
        params=(Param("target", "a 0x or Solana address, or a label on /watchlist", required=True),),
    ),
    Command(
        "buybacks",
        "buyback totals per window with a chart; list, add or remove programmes; daily summary and milestones",
        buybacks.buybacks,
        params=(
            Param("what", "a token or programme (HYPE, aster), or list, add, remove, daily, every"),
            Param("arg", "add/remove: the programme id; daily: HH:MM or off; every: a programme id or all"),
            Param("value", f"add: the kind ({buybacks.KIND_HINT}); daily: a time zone; every: 1M, $10M or off"),
            Param("token", "add: coingecko:<id> or <chain>:0x<contract>", positional=False),
            Param("symbol", "add: the ticker shown, e.g. HYPE", positional=False),
            Param("source", "add: the https page that names the wallet or method", positional=False),
            Param("params", "add: the kind's parameters as key:value,key:value", positional=False),
            Param("supply", "add: total supply, for the share of supply", positional=False),
            Param("supply_source", "add: the https page that gives the supply", positional=False),
        ),
    ),
    Command(
        "upcoming",
        "unlocks, TGEs and airdrops ahead, with countdowns as precise as the date is known",
        calendar.upcoming,
        params=(
            Param("days", "how many days ahead (default 30)"),
            Param("token", "a CoinGecko id, contract, project or ticker"),
        ),
    ),
    Command(
        "leads",
        "how long before an unlock or TGE this chat is reminded",
        calendar.leads,
        params=(Param("leads", "comma-separated, from 7d,3d,24h,6h,1h, or default (7d,24h,1h)", required=True),),
        access=Access.CHAT_ADMIN,
    ),
    Command(
        "calendar",
        "add, edit, cancel or show a calendar entry; hints: launch markets to review (operators)",
        calendar.calendar_,
        params=(
            Param("action", "add, edit, cancel, show or hints", required=True),
            Param("id", "the entry's id, as /upcoming shows it"),
            Param("project", "project name", positional=False),
            Param("token", "ticker, for display only", positional=False),
            Param("coingecko", "CoinGecko id, e.g. aster-2", positional=False),
            Param("contract", "chain:address, comma-separated", positional=False),
            Param("type", "unlock, tge, airdrop_snapshot, airdrop_claim, epoch_end or other", positional=False),
            Param("start", "UTC: 2026-12-06T14:00, 2026-12-06, 2026-12 or 2027-Q1", positional=False),
            Param("precision", "exact, day, month or quarter (default: from start)", positional=False),
            Param("amount", "tokens, e.g. 13.9m", positional=False),
            Param("pct", "share of total supply, percent", positional=False),
            Param("total", "total supply in tokens", positional=False),
            Param("status", "rumoured, announced, confirmed, done or cancelled", positional=False),
            Param("figure", "announced, actual or model", positional=False),
            Param("source", "the source URL", positional=False),
            Param("title", "what happens (_ for spaces)", positional=False),
            Param("note", "a caveat (_ for spaces)", positional=False),
        ),
        access=Access.OPERATOR,
    ),
    Command(
        "pause",
        "stop a watcher (operators)",
        settings_cmds.pause,
        params=(Param("watcher", "watcher name", required=True),),
        access=Access.OPERATOR,
    ),
    Command(
        "resume",
        "restart a paused watcher (operators)",
        settings_cmds.resume,
        params=(Param("watcher", "watcher name", required=True),),
        access=Access.OPERATOR,
    ),
)

_BY_NAME = {c.name: c for c in COMMANDS}


def by_name(name: str) -> Command | None:
    return _BY_NAME.get(name.lower())
