"""Chats, their subscriptions, thresholds, watch lists and quiet hours."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from perpwatch.clock import SYSTEM_CLOCK, Clock
from storage.database import Database, Row, from_db_time, to_db_time
from storage.models import Chat, Subscription, Threshold, WatchEntry, to_cents


class LimitReached(Exception):
    """A per-chat limit (subscriptions, watch list) would be exceeded; nothing was written."""


class Conflict(Exception):
    """The change clashes with a row that exists (e.g. a label another address already has)."""


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
        held_until=from_db_time(row["held_until"]) if row["held_until"] else None,
    )


SCOPES = ("all", "watchlist")
"""A subscription hears every matching event, or only those whose subject is on the chat's watch list."""

ANY = "*"
"""Stored for "every venue" / "every symbol": a value, so the fan-out can seek the index with IN (…)."""


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


class ChatRepo:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.db = db
        self.clock = clock

    # --- chats ------------------------------------------------------------------------------------
    async def upsert(self, platform: str, platform_chat_id: str, *, kind: str, title: str | None) -> Chat:
        """Register a chat on first contact; a chat that was gone and talks to us again is active again."""
        now = to_db_time(self.clock.now())
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO chats (platform, platform_chat_id, kind, title, created_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT (platform, platform_chat_id) DO UPDATE SET kind=excluded.kind, "
                "title=COALESCE(excluded.title, chats.title), status='active', gone_reason=NULL",
                (platform, platform_chat_id, kind, title, now),
            )
            return self._get(conn, platform, platform_chat_id)

    async def get(self, platform: str, platform_chat_id: str) -> Chat | None:
        rows = await self.db.fetch(
            "SELECT * FROM chats WHERE platform=? AND platform_chat_id=?", (platform, platform_chat_id)
        )
        return chat_from_row(rows[0]) if rows else None

    @staticmethod
    def _get(conn: sqlite3.Connection, platform: str, platform_chat_id: str) -> Chat:
        row = conn.execute(
            "SELECT * FROM chats WHERE platform=? AND platform_chat_id=?", (platform, platform_chat_id)
        ).fetchone()
        if row is None:
            raise LookupError(f"no chat {platform}:{platform_chat_id}")
        return chat_from_row(row)

    async def mark_gone(self, chat_id: int, reason: str) -> int:
        """The platform says we can never reach this chat again: park its pending alerts with the reason."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE chats SET status='gone', gone_reason=? WHERE id=?", (reason, chat_id))
            cur = conn.execute(
                "UPDATE deliveries SET status='parked', last_error=? WHERE chat_id=? AND status='pending'",
                (reason, chat_id),
            )
            return cur.rowcount

    async def migrate(self, chat_id: int, new_platform_chat_id: str) -> None:
        """Telegram upgraded a group to a supergroup with a new id; the chat keeps its settings and outbox."""
        with self.db.transaction() as conn:
            clash = conn.execute(
                "SELECT id FROM chats WHERE platform=(SELECT platform FROM chats WHERE id=?) AND platform_chat_id=?",
                (chat_id, new_platform_chat_id),
            ).fetchone()
            if clash is not None and clash["id"] != chat_id:
                _merge_into(conn, keep=chat_id, retire=int(clash["id"]))
            conn.execute("UPDATE chats SET platform_chat_id=? WHERE id=?", (new_platform_chat_id, chat_id))

    async def set_quiet(self, chat_id: int, start: str | None, end: str | None, tz: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE chats SET quiet_start=?, quiet_end=?, quiet_tz=? WHERE id=?",
                (start, end, tz, chat_id),
            )

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
        now = to_db_time(self.clock.now())
        cents = to_cents(min_usd) if min_usd is not None else None
        with self.db.transaction() as conn:
            existing = self._find(conn, chat_id, topic, venue, symbol, scope)
            if existing is None:
                row = conn.execute("SELECT COUNT(*) FROM subscriptions WHERE chat_id=?", (chat_id,)).fetchone()
                if row is not None and row[0] >= limit:
                    raise LimitReached(f"this chat has {row[0]} subscriptions, the limit is {limit}")
                cur2 = conn.execute(
                    "INSERT INTO subscriptions (chat_id, topic, venue, symbol, scope, min_usd, min_usd_cents, "
                    "params, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (chat_id, topic, _any(venue), _any(symbol), scope, _text(min_usd), cents, params_json, now),
                )
                sub_id = cur2.lastrowid
                created = True
            else:
                conn.execute(
                    "UPDATE subscriptions SET min_usd=?, min_usd_cents=?, params=? WHERE id=?",
                    (_text(min_usd), cents, params_json, existing.id),
                )
                sub_id = existing.id
                created = False
            fetched = conn.execute("SELECT * FROM subscriptions WHERE id=?", (sub_id,)).fetchone()
            assert fetched is not None
            return _subscription(fetched), created

    @staticmethod
    def _find(
        conn: sqlite3.Connection, chat_id: int, topic: str, venue: str | None, symbol: str | None, scope: str
    ) -> Subscription | None:
        row = conn.execute(
            "SELECT * FROM subscriptions WHERE chat_id=? AND topic=? AND venue=? AND symbol=? AND scope=?",
            (chat_id, topic, _any(venue), _any(symbol), scope),
        ).fetchone()
        return _subscription(row) if row is not None else None

    async def subscriptions(self, chat_id: int) -> list[Subscription]:
        rows = await self.db.fetch("SELECT * FROM subscriptions WHERE chat_id=? ORDER BY id", (chat_id,))
        return [_subscription(r) for r in rows]

    async def unsubscribe(self, chat_id: int, *, sub_id: int | None = None, topic: str | None = None) -> int:
        """Remove one subscription by id, or every subscription of a topic. Returns rows removed."""
        with self.db.transaction() as conn:
            if sub_id is not None:
                cur = conn.execute("DELETE FROM subscriptions WHERE chat_id=? AND id=?", (chat_id, sub_id))
            elif topic is not None:
                cur = conn.execute("DELETE FROM subscriptions WHERE chat_id=? AND topic=?", (chat_id, topic))
            else:
                cur = conn.execute("DELETE FROM subscriptions WHERE chat_id=?", (chat_id,))
            return cur.rowcount

    async def replace_subscriptions(self, chat_id: int, rows: Sequence[tuple[str, Decimal | None]]) -> None:
        """Make the chat's subscriptions exactly `rows` of (topic, min_usd): how the console follows settings."""
        now = to_db_time(self.clock.now())
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM subscriptions WHERE chat_id=?", (chat_id,))
            conn.executemany(
                "INSERT INTO subscriptions (chat_id, topic, min_usd, min_usd_cents, created_at) VALUES (?,?,?,?,?)",
                [(chat_id, t, _text(m), to_cents(m) if m is not None else None, now) for t, m in rows],
            )

    # --- thresholds -------------------------------------------------------------------------------
    async def set_threshold(self, chat_id: int, topic: str, min_usd: Decimal | None) -> None:
        with self.db.transaction() as conn:
            if min_usd is None:
                conn.execute("DELETE FROM chat_thresholds WHERE chat_id=? AND topic=?", (chat_id, topic))
            else:
                conn.execute(
                    "INSERT INTO chat_thresholds (chat_id, topic, min_usd, min_usd_cents) VALUES (?,?,?,?) "
                    "ON CONFLICT (chat_id, topic) DO UPDATE SET min_usd=excluded.min_usd, "
                    "min_usd_cents=excluded.min_usd_cents",
                    (chat_id, topic, _text(min_usd), to_cents(min_usd)),
                )

    async def thresholds(self, chat_id: int) -> list[Threshold]:
        rows = await self.db.fetch(
            "SELECT topic, min_usd FROM chat_thresholds WHERE chat_id=? ORDER BY topic", (chat_id,)
        )
        return [Threshold(topic=r["topic"], min_usd=Decimal(r["min_usd"])) for r in rows]

    # --- watch list -------------------------------------------------------------------------------
    async def watch(self, chat_id: int, address: str, label: str | None, *, limit: int) -> bool:
        """Add an address (or relabel it). Returns True when the address is new to this chat."""
        now = to_db_time(self.clock.now())
        with self.db.transaction() as conn:
            _check_label_free(conn, chat_id, address, label)
            existing = conn.execute(
                "SELECT id FROM watchlist WHERE chat_id=? AND address=?", (chat_id, address)
            ).fetchone()
            if existing is not None:
                if label is not None:
                    conn.execute("UPDATE watchlist SET label=? WHERE id=?", (label, existing["id"]))
                return False
            row = conn.execute("SELECT COUNT(*) FROM watchlist WHERE chat_id=?", (chat_id,)).fetchone()
            if row is not None and row[0] >= limit:
                raise LimitReached(f"this chat watches {row[0]} addresses, the limit is {limit}")
            conn.execute(
                "INSERT INTO watchlist (chat_id, address, label, created_at) VALUES (?,?,?,?)",
                (chat_id, address, label, now),
            )
            return True

    async def label(self, chat_id: int, address: str, label: str) -> bool:
        with self.db.transaction() as conn:
            _check_label_free(conn, chat_id, address, label)
            cur = conn.execute("UPDATE watchlist SET label=? WHERE chat_id=? AND address=?", (label, chat_id, address))
            return cur.rowcount > 0

    async def unwatch(self, chat_id: int, address_or_label: str) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM watchlist WHERE chat_id=? AND (address=? OR label=?)",
                (chat_id, address_or_label.lower(), address_or_label),
            )
            return cur.rowcount

    async def watchlist(self, chat_id: int) -> list[WatchEntry]:
        rows = await self.db.fetch("SELECT address, label FROM watchlist WHERE chat_id=? ORDER BY id", (chat_id,))
        return [WatchEntry(address=r["address"], label=r["label"]) for r in rows]


def _check_label_free(conn: sqlite3.Connection, chat_id: int, address: str, label: str | None) -> None:
    if label is None:
        return
    row = conn.execute(
        "SELECT address FROM watchlist WHERE chat_id=? AND label=? AND address<>?", (chat_id, label, address)
    ).fetchone()
    if row is not None:
        raise Conflict(f"the label {label!r} is already used for {row['address']}")


def _text(amount: Decimal | None) -> Any:
    return None if amount is None else str(amount)


def _merge_into(conn: sqlite3.Connection, *, keep: int, retire: int) -> None:
    """The supergroup's new id already talked to us (an admin ran a command after the upgrade): fold its
    subscriptions, thresholds, watch list, quiet hours and pending alerts into the chat we keep, which
    wins where both have a setting, then retire its row. Nothing pending is lost.

    Deliveries move with their ids: the dispatcher may hold a sent message it has yet to record by id, and
    a summary names its lead row by id. One the kept chat already has (the same event) stays behind and
    goes with the retired row.
    """
    for table, columns in (
        ("subscriptions", "topic, venue, symbol, scope, min_usd, min_usd_cents, params, created_at"),
        ("chat_thresholds", "topic, min_usd, min_usd_cents"),
        ("watchlist", "address, label, created_at"),
        ("threads", "thread, revision, message_ref, updated_at"),
    ):
        conn.execute(
            f"INSERT INTO {table} (chat_id, {columns}) "  # noqa: S608 - fixed names, no input
            f"SELECT ?, {columns} FROM {table} WHERE chat_id=? ON CONFLICT DO NOTHING",
            (keep, retire),
        )
    conn.execute("UPDATE OR IGNORE deliveries SET chat_id=? WHERE chat_id=?", (keep, retire))
    conn.execute(
        "UPDATE chats SET quiet_start=COALESCE(quiet_start, (SELECT quiet_start FROM chats WHERE id=:r)), "
        "quiet_end=COALESCE(quiet_end, (SELECT quiet_end FROM chats WHERE id=:r)), "
        "quiet_tz=COALESCE(quiet_tz, (SELECT quiet_tz FROM chats WHERE id=:r)) WHERE id=:k",
        {"k": keep, "r": retire},
    )
    conn.execute("DELETE FROM chats WHERE id=?", (retire,))
