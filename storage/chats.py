"""Chats, their subscriptions, thresholds, watch lists and quiet hours."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from perpwatch.accounts import DEFAULT_DISTANCE_STEPS
from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.engine import BIGINT_MAX, Engine, Row, Tx, as_bool, as_time
from storage.models import Chat, Interest, Subscription, Threshold, WatchEntry, to_cents


class LimitReached(Exception):
    """A per-chat limit (subscriptions, watch list) would be exceeded; nothing was written."""


class Conflict(Exception):
    """The change clashes with a row that exists (e.g. a label another address already has)."""


LOG_HEAD = "(SELECT COALESCE(MAX(id), 0) FROM events)"
"""The newest event: where a new chat's cursor and a new subscription start (they hear what comes next)."""


def chat_from_row(row: Row, *, chat_id: int | None = None) -> Chat:
    """The one mapping from a chats row (or a join that selects its columns) to `Chat`."""
    return Chat(
        id=row["id"] if chat_id is None else chat_id,
        platform=row["platform"],
        platform_chat_id=row["platform_chat_id"],
        kind=row["kind"],
        title=row["title"],
        status=row["status"],
        gone_reason=row["gone_reason"],
        quiet_start=row["quiet_start"],
        quiet_end=row["quiet_end"],
        quiet_tz=row["quiet_tz"],
        held_until=as_time(row["held_until"]) if row["held_until"] else None,
        log_cursor=int(row["log_cursor"]),
        held_quiet=as_bool(row["held_quiet"]),
    )


SCOPES = ("all", "watchlist")
DEFAULT_DISTANCE_WARNINGS = ",".join(DEFAULT_DISTANCE_STEPS)
DEFAULT_REMINDER_LEADS = "7d,24h,1h"
"""The lead times a chat is reminded at until it picks its own (the schema's column default too)."""
"""Percent steps a chat is warned at before a watched position's liquidation price (schema 6's default)."""
"""A subscription hears every matching event, or only those whose subject is on the chat's watch list."""

ANY = "*"
"""Stored for "every venue" / "every symbol": a value, so matching can seek the index with IN (…)."""


def _any(value: str | None) -> str:
    return ANY if value is None else value


def _none(value: str) -> str | None:
    return None if value == ANY else value


def _subscription(row: Row) -> Subscription:
    raw = row["min_usd"]
    return Subscription(
        id=row["id"],
        chat_id=row["chat_id"],
        topic=row["topic"],
        venue=_none(row["venue"]),
        symbol=_none(row["symbol"]),
        min_usd=Decimal(raw) if raw is not None else None,
        scope=row["scope"],
        params=json.loads(row["params"]),
    )


ChatListener = Callable[[int], None]
"""Told the chat's id after a commit that changed what the chat hears (subscriptions, thresholds, watch
list, status): the dispatcher's index of who hears what follows it."""


class ChatRepo:
    def __init__(self, db: Engine, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock
        self.listeners: list[ChatListener] = []

    def _changed(self, *chat_ids: int) -> None:
        for listener in self.listeners:
            for chat_id in chat_ids:
                listener(chat_id)

    # --- chats ------------------------------------------------------------------------------------
    async def upsert(self, platform: str, platform_chat_id: str, *, kind: str, title: str | None) -> Chat:
        """Register a chat on first contact; a chat that was gone and talks to us again is active again,
        and hears what happens from now on (not what happened while it was gone)."""
        async with self.db.transaction() as tx:
            before = await self._get(tx, platform, platform_chat_id)
            if before is not None and before.status == "active" and (title is None or before.title == title):
                if before.kind == kind:
                    return before
            await tx.execute(
                "INSERT INTO chats (platform, platform_chat_id, kind, title, created_at, log_cursor) "  # noqa: S608
                f"VALUES (?,?,?,?,?,{LOG_HEAD}) "
                "ON CONFLICT (platform, platform_chat_id) DO UPDATE SET kind=excluded.kind, "
                "title=COALESCE(excluded.title, chats.title), status='active', gone_reason=NULL, "
                "log_cursor=CASE WHEN chats.status='active' THEN chats.log_cursor ELSE excluded.log_cursor END",
                (platform, platform_chat_id, kind, title, self.clock.now()),
            )
            chat = await self._get(tx, platform, platform_chat_id)
        if chat is None:
            raise LookupError(f"no chat {platform}:{platform_chat_id}")
        if before is not None and before.status != chat.status:
            self._changed(chat.id)
        return chat

    async def get(self, platform: str, platform_chat_id: str) -> Chat | None:
        rows = await self.db.fetch(
            "SELECT * FROM chats WHERE platform=? AND platform_chat_id=?", (platform, platform_chat_id)
        )
        return chat_from_row(rows[0]) if rows else None

    async def by_id(self, chat_id: int) -> Chat | None:
        rows = await self.db.fetch("SELECT * FROM chats WHERE id=?", (chat_id,))
        return chat_from_row(rows[0]) if rows else None

    @staticmethod
    async def _get(tx: Tx, platform: str, platform_chat_id: str) -> Chat | None:
        row = await tx.fetchone(
            "SELECT * FROM chats WHERE platform=? AND platform_chat_id=?", (platform, platform_chat_id)
        )
        return None if row is None else chat_from_row(row)

    async def mark_gone(self, chat_id: int, reason: str) -> int:
        """The platform says we can never reach this chat again: park its pending alerts with the reason."""
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE chats SET status='gone', gone_reason=? WHERE id=?", (reason, chat_id))
            parked = await tx.execute(
                "UPDATE deliveries SET status='parked', last_error=? WHERE chat_id=? AND status='pending'",
                (reason, chat_id),
            )
        self._changed(chat_id)
        return parked

    async def migrate(self, chat_id: int, new_platform_chat_id: str) -> None:
        """Telegram upgraded a group to a supergroup with a new id; the chat keeps its settings and outbox."""
        async with self.db.transaction() as tx:
            clash = await tx.fetchone(
                "SELECT id FROM chats WHERE platform=(SELECT platform FROM chats WHERE id=?) AND platform_chat_id=?",
                (chat_id, new_platform_chat_id),
            )
            retired = None
            if clash is not None and clash["id"] != chat_id:
                retired = int(clash["id"])
                await _merge_into(tx, keep=chat_id, retire=retired)
            await tx.execute("UPDATE chats SET platform_chat_id=? WHERE id=?", (new_platform_chat_id, chat_id))
        self._changed(chat_id, *(() if retired is None else (retired,)))

    async def set_quiet(self, chat_id: int, start: str | None, end: str | None, tz: str | None) -> None:
        await self.db.execute(
            "UPDATE chats SET quiet_start=?, quiet_end=?, quiet_tz=? WHERE id=?", (start, end, tz, chat_id)
        )

    async def active_behind(self, head: int, *, after: int, limit: int, upto: int | None = None) -> list[int]:
        """Active chats whose cursor is behind `head`, by id from `after` (to `upto`): what a restart must look
        at. With `upto` a statement reads at most that range of ids, so a table where no chat is behind is
        not read in one statement on the loop."""
        rows = await self.db.fetch(
            "SELECT id FROM chats WHERE id > ? AND id <= ? AND status='active' AND log_cursor < ? ORDER BY id LIMIT ?",
            (after, upto if upto is not None else BIGINT_MAX, head, limit),
        )
        return [int(r[0]) for r in rows]

    async def last_id(self) -> int:
        """The highest chat id there is (0 with no chats): where a sweep by id ranges ends."""
        rows = await self.db.fetch("SELECT COALESCE(MAX(id), 0) FROM chats")
        return int(rows[0][0])

    # --- who hears what ------------------------------------------------------------------------------
    async def interests(self, *, after_chat: int, limit: int, chat_id: int | None = None) -> list[Interest]:
        """Every subscription of active chats with its effective minimum (its own, else the chat's
        threshold for the topic) and, for a watch-list scope, the addresses: a page by chat id, or one chat."""
        where = "c.id = ?" if chat_id is not None else "c.id > ?"
        params: tuple[Any, ...] = (chat_id,) if chat_id is not None else (after_chat,)
        chats = await self.db.fetch(
            f"SELECT id, platform FROM chats c WHERE {where} AND c.status='active' ORDER BY id LIMIT ?",  # noqa: S608
            (*params, limit),
        )
        if not chats:
            return []
        first, last = int(chats[0]["id"]), int(chats[-1]["id"])
        platform = {int(r["id"]): str(r["platform"]) for r in chats}
        subs = await self.db.fetch(
            "SELECT s.chat_id, s.topic, s.venue, s.symbol, s.scope, "
            "COALESCE(s.min_usd_cents, t.min_usd_cents) AS min_cents "
            "FROM subscriptions s LEFT JOIN chat_thresholds t ON t.chat_id = s.chat_id AND t.topic = s.topic "
            "WHERE s.chat_id >= ? AND s.chat_id <= ? ORDER BY s.chat_id, s.id",
            (first, last),
        )
        watched: dict[int, list[str]] = {}
        if any(r["scope"] != "all" for r in subs):
            for r in await self.db.fetch(
                "SELECT chat_id, address FROM watchlist WHERE chat_id >= ? AND chat_id <= ?", (first, last)
            ):
                watched.setdefault(int(r[0]), []).append(str(r[1]))
        return [
            Interest(
                chat_id=int(r["chat_id"]),
                platform=platform[int(r["chat_id"])],
                topic=r["topic"],
                venue=r["venue"],
                symbol=r["symbol"],
                scope=r["scope"],
                min_cents=int(r["min_cents"]) if r["min_cents"] is not None else 0,
                addresses=tuple(watched.get(int(r["chat_id"]), ())) if r["scope"] != "all" else (),
            )
            for r in subs
            if int(r["chat_id"]) in platform
        ]

    # --- subscriptions ----------------------------------------------------------------------------
    async def subscribe(
        self,
        chat_id: int,
        topic: str,
        *,
        venue: str | None,
        symbol: str | None,
        min_usd: Decimal | None,
        limit: int,
        scope: str = "all",
        params: Mapping[str, Any] | None = None,
    ) -> tuple[Subscription, bool]:
        """Add or update the chat's subscription for (topic, venue, symbol, scope). Returns (row, created).

        `params` must already be validated by the family that reads them; they are stored as JSON."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        params_json = json.dumps(dict(params or {}), sort_keys=True)
        cents = to_cents(min_usd) if min_usd is not None else None
        async with self.db.transaction() as tx:
            existing = await self._find(tx, chat_id, topic, venue, symbol, scope)
            if existing is None:
                count = int(await tx.fetchval("SELECT COUNT(*) FROM subscriptions WHERE chat_id=?", (chat_id,)))
                if count >= limit:
                    raise LimitReached(f"this chat has {count} subscriptions, the limit is {limit}")
                sub_id = await tx.fetchval(
                    "INSERT INTO subscriptions (chat_id, topic, venue, symbol, scope, min_usd, min_usd_cents, "  # noqa: S608
                    f"params, created_at, since_event) VALUES (?,?,?,?,?,?,?,?,?,{LOG_HEAD}) RETURNING id",
                    (
                        chat_id,
                        topic,
                        _any(venue),
                        _any(symbol),
                        scope,
                        _text(min_usd),
                        cents,
                        params_json,
                        self.clock.now(),
                    ),
                )
                created = True
            else:
                await tx.execute(
                    "UPDATE subscriptions SET min_usd=?, min_usd_cents=?, params=? WHERE id=?",
                    (_text(min_usd), cents, params_json, existing.id),
                )
                sub_id = existing.id
                created = False
            fetched = await tx.fetchone("SELECT * FROM subscriptions WHERE id=?", (sub_id,))
        assert fetched is not None
        self._changed(chat_id)
        return _subscription(fetched), created

    @staticmethod
    async def _find(
        tx: Tx, chat_id: int, topic: str, venue: str | None, symbol: str | None, scope: str
    ) -> Subscription | None:
        row = await tx.fetchone(
            "SELECT * FROM subscriptions WHERE chat_id=? AND topic=? AND venue=? AND symbol=? AND scope=?",
            (chat_id, topic, _any(venue), _any(symbol), scope),
        )
        return _subscription(row) if row is not None else None

    async def of_topic(self, topic: str, *, after_id: int = 0, limit: int = 500) -> list[tuple[Chat, Subscription]]:
        """Active chats' subscriptions to one topic, a page by subscription id: what a scheduled report
        (a daily summary at each chat's hour) walks."""
        rows = await self.db.fetch(
            "SELECT s.id AS sub_id, s.chat_id, s.topic, s.venue, s.symbol, s.min_usd, s.scope, s.params, c.* "
            "FROM subscriptions s JOIN chats c ON c.id = s.chat_id "
            "WHERE s.topic = ? AND s.id > ? AND c.status = 'active' ORDER BY s.id LIMIT ?",
            (topic, after_id, limit),
        )
        return [
            (
                chat_from_row(r),
                Subscription(
                    id=int(r["sub_id"]),
                    chat_id=int(r["chat_id"]),
                    topic=str(r["topic"]),
                    venue=None if r["venue"] == "*" else r["venue"],
                    symbol=None if r["symbol"] == "*" else r["symbol"],
                    min_usd=Decimal(r["min_usd"]) if r["min_usd"] is not None else None,
                    scope=str(r["scope"]),
                    params=json.loads(r["params"]),
                ),
            )
            for r in rows
        ]

    async def set_params(self, chat_id: int, topic: str, changes: Mapping[str, Any]) -> int:
        """Merge validated parameters into every subscription of the chat to the topic (a key set to None is
        removed); the number of subscriptions changed."""
        changed = 0
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT id, params FROM subscriptions WHERE chat_id=? AND topic=?", (chat_id, topic))
            for r in rows:
                merged = {**json.loads(r["params"]), **changes}
                merged = {k: v for k, v in merged.items() if v is not None}
                await tx.execute(
                    "UPDATE subscriptions SET params=? WHERE id=?", (json.dumps(merged, sort_keys=True), r["id"])
                )
                changed += 1
        self._changed(chat_id)
        return changed

    async def subscriptions(self, chat_id: int) -> list[Subscription]:
        rows = await self.db.fetch("SELECT * FROM subscriptions WHERE chat_id=? ORDER BY id", (chat_id,))
        return [_subscription(r) for r in rows]

    async def unsubscribe(self, chat_id: int, *, sub_id: int | None = None, topic: str | None = None) -> int:
        """Remove one subscription by id, or every subscription of a topic. Returns rows removed."""
        if sub_id is not None:
            removed = await self.db.execute("DELETE FROM subscriptions WHERE chat_id=? AND id=?", (chat_id, sub_id))
        elif topic is not None:
            removed = await self.db.execute("DELETE FROM subscriptions WHERE chat_id=? AND topic=?", (chat_id, topic))
        else:
            removed = await self.db.execute("DELETE FROM subscriptions WHERE chat_id=?", (chat_id,))
        self._changed(chat_id)
        return removed

    async def replace_subscriptions(self, chat_id: int, rows: Sequence[tuple[str, Decimal | None]]) -> None:
        """Make the chat's subscriptions exactly `rows` of (topic, min_usd): how the console follows settings."""
        now = self.clock.now()
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM subscriptions WHERE chat_id=?", (chat_id,))
            head = int(await tx.fetchval(f"SELECT {LOG_HEAD}"))
            await tx.executemany(
                "INSERT INTO subscriptions (chat_id, topic, min_usd, min_usd_cents, created_at, since_event) "
                "VALUES (?,?,?,?,?,?)",
                [(chat_id, t, _text(m), to_cents(m) if m is not None else None, now, head) for t, m in rows],
            )
        self._changed(chat_id)

    # --- thresholds -------------------------------------------------------------------------------
    async def set_threshold(self, chat_id: int, topic: str, min_usd: Decimal | None) -> None:
        if min_usd is None:
            await self.db.execute("DELETE FROM chat_thresholds WHERE chat_id=? AND topic=?", (chat_id, topic))
        else:
            await self.db.execute(
                "INSERT INTO chat_thresholds (chat_id, topic, min_usd, min_usd_cents) VALUES (?,?,?,?) "
                "ON CONFLICT (chat_id, topic) DO UPDATE SET min_usd=excluded.min_usd, "
                "min_usd_cents=excluded.min_usd_cents",
                (chat_id, topic, _text(min_usd), to_cents(min_usd)),
            )
        self._changed(chat_id)

    # --- liquidation-distance warnings ------------------------------------------------------------------
    async def set_distance_warnings(self, chat_id: int, steps: Sequence[str] | None) -> None:
        """The distance steps (percent text, as the log writes them: '10', '7.5') this chat is warned at;
        None: the default."""
        value = ",".join(steps) if steps is not None else DEFAULT_DISTANCE_WARNINGS
        await self.db.execute("UPDATE chats SET distance_warnings=? WHERE id=?", (value, chat_id))
        self._changed(chat_id)

    async def distance_warnings(self, chat_id: int) -> list[str]:
        row = await self.db.fetchone("SELECT distance_warnings FROM chats WHERE id=?", (chat_id,))
        value = str(row["distance_warnings"]) if row is not None else DEFAULT_DISTANCE_WARNINGS
        return [step for step in value.split(",") if step]

    # --- reminder lead times ------------------------------------------------------------------------------
    async def set_reminder_leads(self, chat_id: int, leads: Sequence[str] | None) -> None:
        """The lead times ('7d', '24h', '1h', as the log writes a reminder's level) this chat is reminded
        at; None: the default."""
        value = ",".join(leads) if leads is not None else DEFAULT_REMINDER_LEADS
        await self.db.execute("UPDATE chats SET reminder_leads=? WHERE id=?", (value, chat_id))
        self._changed(chat_id)

    async def reminder_leads(self, chat_id: int) -> list[str]:
        row = await self.db.fetchone("SELECT reminder_leads FROM chats WHERE id=?", (chat_id,))
        value = str(row["reminder_leads"]) if row is not None else DEFAULT_REMINDER_LEADS
        return [lead for lead in value.split(",") if lead]

    async def thresholds(self, chat_id: int) -> list[Threshold]:
        rows = await self.db.fetch(
            "SELECT topic, min_usd FROM chat_thresholds WHERE chat_id=? ORDER BY topic", (chat_id,)
        )
        return [Threshold(topic=r["topic"], min_usd=Decimal(r["min_usd"])) for r in rows]

    # --- watch list -------------------------------------------------------------------------------
    async def watch(self, chat_id: int, address: str, label: str | None, *, limit: int) -> bool:
        """Add an address (or relabel it). Returns True when the address is new to this chat."""
        async with self.db.transaction() as tx:
            await _check_label_free(tx, chat_id, address, label)
            existing = await tx.fetchone("SELECT id FROM watchlist WHERE chat_id=? AND address=?", (chat_id, address))
            if existing is not None:
                if label is not None:
                    await tx.execute("UPDATE watchlist SET label=? WHERE id=?", (label, existing["id"]))
                return False
            count = int(await tx.fetchval("SELECT COUNT(*) FROM watchlist WHERE chat_id=?", (chat_id,)))
            if count >= limit:
                raise LimitReached(f"this chat watches {count} addresses, the limit is {limit}")
            await tx.execute(
                "INSERT INTO watchlist (chat_id, address, label, created_at) VALUES (?,?,?,?)",
                (chat_id, address, label, self.clock.now()),
            )
        self._changed(chat_id)
        return True

    async def label(self, chat_id: int, address: str, label: str) -> bool:
        async with self.db.transaction() as tx:
            await _check_label_free(tx, chat_id, address, label)
            changed = await tx.execute(
                "UPDATE watchlist SET label=? WHERE chat_id=? AND address=?", (label, chat_id, address)
            )
            return changed > 0

    async def unwatch(self, chat_id: int, address_or_label: str) -> int:
        removed = await self.db.execute(
            "DELETE FROM watchlist WHERE chat_id=? AND (address=? OR label=?)",
            # 0x addresses are stored lower-cased; Solana (base58) ones as typed: case is part of them.
            (
                chat_id,
                address_or_label.lower() if address_or_label[:2].lower() == "0x" else address_or_label,
                address_or_label,
            ),
        )
        self._changed(chat_id)
        return removed

    async def watched_addresses(self) -> set[str]:
        """Every address some active chat watches: what the whale watchers follow."""
        rows = await self.db.fetch(
            "SELECT DISTINCT w.address FROM watchlist w JOIN chats c ON c.id = w.chat_id WHERE c.status = 'active'"
        )
        return {str(r["address"]) for r in rows}

    async def watchlist(self, chat_id: int) -> list[WatchEntry]:
        rows = await self.db.fetch("SELECT address, label FROM watchlist WHERE chat_id=? ORDER BY id", (chat_id,))
        return [WatchEntry(address=r["address"], label=r["label"]) for r in rows]


async def _check_label_free(tx: Tx, chat_id: int, address: str, label: str | None) -> None:
    if label is None:
        return
    row = await tx.fetchone(
        "SELECT address FROM watchlist WHERE chat_id=? AND label=? AND address<>?", (chat_id, label, address)
    )
    if row is not None:
        raise Conflict(f"the label {label!r} is already used for {row['address']}")


def _text(amount: Decimal | None) -> Any:
    return None if amount is None else str(amount)


async def _merge_into(tx: Tx, *, keep: int, retire: int) -> None:
    """The supergroup's new id already talked to us (an admin ran a command after the upgrade): fold its
    subscriptions, thresholds, watch list, quiet hours and pending alerts into the chat we keep, which
    wins where both have a setting, then retire its row. Nothing pending is lost.

    Deliveries move with their ids: the dispatcher may hold a sent message it has yet to record by id, and
    a summary names its lead row by id. One the kept chat already has (the same event) stays behind and
    goes with the retired row. The kept chat reads the log from the earlier of the two cursors, so what
    either had yet to read is read once (a delivery it already has is not written again).
    """
    for table, columns in (
        ("subscriptions", "topic, venue, symbol, scope, min_usd, min_usd_cents, params, created_at, since_event"),
        ("chat_thresholds", "topic, min_usd, min_usd_cents"),
        ("watchlist", "address, label, created_at"),
        ("threads", "thread, revision, message_ref, updated_at"),
    ):
        await tx.execute(
            f"INSERT INTO {table} (chat_id, {columns}) "  # noqa: S608 - fixed names, no input
            f"SELECT ?, {columns} FROM {table} WHERE chat_id=? ON CONFLICT DO NOTHING",
            (keep, retire),
        )
    await tx.execute(
        "UPDATE deliveries SET chat_id=:k WHERE chat_id=:r AND NOT EXISTS "
        "(SELECT 1 FROM deliveries d WHERE d.chat_id=:k AND d.event_id=deliveries.event_id)",
        {"k": keep, "r": retire},
    )
    await tx.execute(
        "UPDATE chats SET quiet_start=COALESCE(quiet_start, (SELECT quiet_start FROM chats WHERE id=:r)), "
        "quiet_end=COALESCE(quiet_end, (SELECT quiet_end FROM chats WHERE id=:r)), "
        "quiet_tz=COALESCE(quiet_tz, (SELECT quiet_tz FROM chats WHERE id=:r)), "
        "log_cursor=(SELECT MIN(log_cursor) FROM chats WHERE id IN (:k, :r)) WHERE id=:k",
        {"k": keep, "r": retire},
    )
    await tx.execute("DELETE FROM chats WHERE id=?", (retire,))
