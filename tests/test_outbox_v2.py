"""Outbox v2: threads and revisions, withdrawal, due times apart from retry times, expiry, undecodable
bodies, watch-list fan-out, and the upgrade of a live v1 database that loses nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from perpwatch.clock import FrozenClock
from perpwatch.events import DistanceBody, Event, PositionSide, Topic, Venue
from storage import Store
from storage.engine import as_time
from storage.models import Chat, PendingDelivery
from storage.outbox import LOG_ROWS
from tests.conftest import read_logs, scalar
from tests.factories import liquidation

pytestmark = pytest.mark.engines

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def store(database_url: str, clock: FrozenClock) -> AsyncIterator[Store]:
    async with Store(database_url, clock=clock) as s:
        yield s


async def _subscribed(store: Store, name: str, topic: str = "liquidation", **kw: object) -> Chat:
    chat = await store.chats.upsert("telegram", name, kind="private", title=None)
    await store.chats.subscribe(chat.id, topic, venue=None, symbol=None, min_usd=None, limit=10, **kw)  # type: ignore[arg-type]
    return chat


async def _due(store: Store, chat: Chat, at: datetime | None = None) -> list[PendingDelivery]:
    return (await store.outbox.due_for_chat(chat.id, at or store.clock.now(), limit=100))[1]


async def _statuses(store: Store) -> list[tuple[str, str]]:
    await read_logs(store)
    rows = await store.db.fetch(
        "SELECT e.key, d.status FROM deliveries d JOIN events e ON e.id=d.event_id ORDER BY d.id"
    )
    return [(r[0], r[1]) for r in rows]


def _with(event: Event, **changes: object) -> Event:
    """The event with other envelope fields, validated as a watcher's would be."""
    return Event.model_validate({**event.model_dump(), **changes})


def _rev(key: str, revision: int, thread: str = "cascade:binance:BTCUSDT") -> Event:
    return _with(liquidation(key=key), thread=thread, revision=revision)


async def test_a_newer_revision_supersedes_the_pending_one_and_only_the_newest_goes_out(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept([_rev("r1", 1)])
    await store.outbox.accept([_rev("r2", 2)])
    assert await _statuses(store) == [("r1", "superseded"), ("r2", "pending")]
    assert [d.revision for d in await _due(store, chat)] == [2]


async def test_a_revision_arriving_after_a_newer_one_is_superseded_on_arrival(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept([_rev("r3", 3)])
    [result] = await store.outbox.accept([_rev("r2", 2)])
    assert result.new  # stored (a replay stays a replay), and superseded when the chat reads it
    assert await _statuses(store) == [("r3", "pending"), ("r2", "superseded")]
    assert [d.revision for d in await _due(store, chat)] == [3]


async def test_a_revision_after_one_was_sent_alone_targets_that_message_for_an_edit(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept([_rev("r1", 1)])
    [first] = await _due(store, chat)
    assert first.edit_ref is None
    await store.outbox.mark_sent([first.id], message_ref="77", now=store.clock.now())
    await store.outbox.accept([_rev("r2", 2)])
    [second] = await _due(store, chat)
    assert second.edit_ref == "77"
    await store.outbox.mark_sent([second.id], message_ref="77", now=store.clock.now())
    await store.outbox.accept([_rev("r1-late", 1)])
    assert (await _statuses(store))[-1] == ("r1-late", "superseded")  # older than what the chat already saw


async def test_a_revision_sent_inside_a_summary_leaves_nothing_to_edit(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept([_rev("r1", 1), liquidation(key="other")])
    rows = await _due(store, chat)
    await store.outbox.mark_sent([d.id for d in rows], message_ref="5", now=store.clock.now())
    await store.outbox.accept([_rev("r2", 2)])
    [second] = await _due(store, chat)
    assert second.edit_ref is None


async def test_threads_are_kept_apart_per_chat(store: Store) -> None:
    a, b = await _subscribed(store, "a"), await _subscribed(store, "b")
    await store.outbox.accept([_rev("r1", 1)])
    [row_a] = await _due(store, a)
    await store.outbox.mark_sent([row_a.id], message_ref="9", now=store.clock.now())
    await store.outbox.accept([_rev("r2", 2)])
    assert [d.edit_ref for d in await _due(store, a)] == ["9"]
    assert [(d.revision, d.edit_ref) for d in await _due(store, b)] == [(2, None)]  # r1 superseded unsent there


async def test_withdrawing_a_thread_cancels_its_pending_rows_only(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept([_rev("unlock-7d", 1, thread="unlock:hype:2026-12-06"), liquidation(key="plain")])
    await read_logs(store)  # both are the chat's rows now
    assert await store.outbox.withdraw("unlock:hype:2026-12-06", reason="event moved") == 1
    assert await _statuses(store) == [("unlock-7d", "withdrawn"), ("plain", "pending")]
    assert [d.event.key for d in await _due(store, chat) if d.event] == ["plain"]
    # Withdrawn before the chat read it: no row is ever written for it.
    await store.outbox.accept([_rev("unlock-1d", 2, thread="unlock:hype:2026-12-06")])
    assert await store.outbox.withdraw("unlock:hype:2026-12-06", reason="event moved") == 1
    assert await read_logs(store) == 0


async def test_rows_due_later_are_not_backlog_and_fall_due_on_time(store: Store, clock: FrozenClock) -> None:
    chat = await _subscribed(store, "1")
    remind_at = T0 + timedelta(hours=6)
    await store.outbox.accept([_with(liquidation(key="later"), due_at=remind_at)])
    await read_logs(store)
    backlog = await store.outbox.backlog()
    assert (backlog.pending, backlog.scheduled) == (0, 1)
    assert await _due(store, chat) == []
    assert await store.outbox.pending_chats() == [(chat.id, remind_at)]
    await store.outbox.release_held(chat.id)  # /quiet off does not release what is not due yet
    assert await _due(store, chat) == []
    clock.set_wall(remind_at)
    assert [d.event.key for d in await _due(store, chat) if d.event] == ["later"]
    assert (await store.outbox.backlog()).pending == 1


async def test_quiet_hours_hold_only_what_falls_due_inside_them(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept(
        [liquidation(key="now"), _with(liquidation(key="tomorrow"), due_at=T0 + timedelta(days=1))]
    )
    await read_logs(store)
    await store.outbox.hold_chat(chat.id, until=T0 + timedelta(hours=8), error="held: quiet hours", quiet=True)
    rows = await store.db.fetch("SELECT quiet_held, next_attempt_at FROM deliveries ORDER BY id")
    assert [bool(r[0]) for r in rows] == [True, False]
    assert as_time(rows[1][1]) == T0 + timedelta(days=1)


async def test_events_accepted_during_quiet_hours_are_read_into_the_digest(store: Store, clock: FrozenClock) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.hold_chat(chat.id, until=T0 + timedelta(hours=8), error="held: quiet hours", quiet=True)
    await store.outbox.accept([liquidation(key="at-night")])
    clock.set_wall(T0 + timedelta(hours=9))
    await store.outbox.accept([liquidation(key="morning")])
    assert [(d.event.key, d.quiet_held) for d in await _due(store, chat) if d.event] == [
        ("at-night", True),
        ("morning", False),
    ]


async def test_a_row_carries_its_expiry_and_leaves_the_queue_once_expired(store: Store) -> None:
    chat = await _subscribed(store, "1")
    event = _with(liquidation(key="stale"), expires_at=T0 + timedelta(minutes=5))
    await store.outbox.accept([event, liquidation(key="fresh")])
    stale, fresh = await _due(store, chat)
    assert (stale.expires_at, fresh.expires_at) == (T0 + timedelta(minutes=5), None)
    assert await store.outbox.expire([stale.id]) == 1
    assert await store.outbox.expire([stale.id]) == 0  # once expired it is no longer pending
    assert await _statuses(store) == [("stale", "expired"), ("fresh", "pending")]


async def test_a_body_that_no_longer_decodes_comes_back_with_its_reason(store: Store) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.accept([liquidation(key="bad"), liquidation(key="good")])
    await store.db.execute("UPDATE events SET body='{\"kind\": \"martian\"}' WHERE key='bad'")
    bad, good = await _due(store, chat)
    assert bad.event is None and bad.decode_error is not None and "does not decode" in bad.decode_error
    assert good.event is not None and good.event.key == "good"


async def test_watchlist_scope_matches_the_subject_against_the_chats_list(store: Store) -> None:
    wallet = "0x" + "ab" * 20
    watching = await _subscribed(store, "w", topic="whale", scope="watchlist")
    await store.chats.watch(watching.id, wallet, "big", limit=10)
    not_watching = await _subscribed(store, "n", topic="whale", scope="watchlist")
    everyone = await _subscribed(store, "e", topic="whale")
    about_wallet = _with(liquidation(key="w1"), topic=Topic.WHALE, subject=wallet.upper())
    about_other = _with(liquidation(key="w2"), topic=Topic.WHALE, subject="0x" + "cd" * 20)
    await store.outbox.accept([about_wallet, about_other])
    await read_logs(store)
    rows = await store.db.fetch("SELECT e.key, d.chat_id FROM deliveries d JOIN events e ON e.id = d.event_id")
    heard = {(r[0], int(r[1])) for r in rows}
    # A whale alert about a wallet is for the chats watching it, whatever their scope: a chat taking every
    # whale alert gets the market-wide whale trades (no subject), not other chats' watch lists.
    assert heard == {("w1", watching.id)}
    assert not_watching.id not in {chat_id for _, chat_id in heard}
    await store.chats.watch(everyone.id, wallet, None, limit=10)
    market_wide = _with(liquidation(key="w3"), topic=Topic.WHALE)
    await store.outbox.accept([_with(liquidation(key="w4"), topic=Topic.WHALE, subject=wallet), market_wide])
    await read_logs(store)
    rows = await store.db.fetch("SELECT e.key, d.chat_id FROM deliveries d JOIN events e ON e.id = d.event_id")
    assert {(r[0], int(r[1])) for r in rows} - heard == {
        ("w4", watching.id),
        ("w4", everyone.id),
        ("w3", everyone.id),
    }


def _warning(n: int, threshold: str, wallet: str) -> Event:
    body = DistanceBody(
        wallet=wallet,
        coin="ETH",
        side=PositionSide.LONG,
        size=Decimal(10),
        notional_usd=Decimal(21500),
        mark_px=Decimal(2150),
        liquidation_px=Decimal(2000),
        distance=Decimal("0.07"),
        threshold=Decimal(threshold),
    )
    return Event(
        key=f"hl:dist:{wallet}:ETH:{n}",
        topic=Topic.WHALE,
        source="hyperliquid_whales",
        venue=Venue.HYPERLIQUID,
        symbol="ETH",
        usd=body.notional_usd,
        occurred_at=T0,
        subject=wallet,
        thread=f"hl:dist:{wallet}:ETH",
        revision=n,
        body=body,
    )


async def test_a_distance_warning_reaches_the_chats_that_chose_its_step(store: Store) -> None:
    wallet = "0x" + "ab" * 20
    default = await _subscribed(store, "d", topic="whale", scope="watchlist")
    tight = await _subscribed(store, "t", topic="whale", scope="watchlist")
    for chat in (default, tight):
        await store.chats.watch(chat.id, wallet, None, limit=10)
    await store.chats.set_distance_warnings(tight.id, ["3"])
    assert await store.chats.distance_warnings(default.id) == ["10", "5", "2"]
    await store.outbox.accept([_warning(1, "0.10", wallet), _warning(2, "0.075", wallet), _warning(3, "0.03", wallet)])
    await read_logs(store)
    rows = await store.db.fetch("SELECT e.key, d.chat_id FROM deliveries d JOIN events e ON e.id = d.event_id")
    heard = {(str(r[0]).rsplit(":", 1)[1], int(r[1])) for r in rows}
    assert heard == {("1", default.id), ("3", tight.id)}  # 7.5% is on neither chat's list


async def test_an_event_for_one_chat_reaches_that_chat_alone(store: Store) -> None:
    """A report at one chat's own hour (`audience`) is not every subscriber's: the others' reads skip it and
    still move their cursors past it."""
    mine = await _subscribed(store, "mine")
    other = await _subscribed(store, "other")
    await store.outbox.accept([_with(liquidation(key="for-mine"), audience=mine.id), liquidation(key="for-all")])
    await read_logs(store)
    rows = await store.db.fetch("SELECT e.key, d.chat_id FROM deliveries d JOIN events e ON e.id = d.event_id")
    assert {(str(r[0]), int(r[1])) for r in rows} == {
        ("for-mine", mine.id),
        ("for-all", mine.id),
        ("for-all", other.id),
    }
    assert await store.chats.reminder_leads(other.id) == ["7d", "24h", "1h"]
    await store.chats.set_reminder_leads(other.id, ["1h"])
    assert await store.chats.reminder_leads(other.id) == ["1h"]


async def test_subscription_parameters_are_stored_as_data(store: Store) -> None:
    chat = await store.chats.upsert("telegram", "p", kind="private", title=None)
    sub, created = await store.chats.subscribe(
        chat.id, "unlock", venue=None, symbol=None, min_usd=None, limit=5, params={"lead_hours": [168, 24, 1]}
    )
    assert created and sub.params == {"lead_hours": [168, 24, 1]}
    [again] = await store.chats.subscriptions(chat.id)
    assert again.params == {"lead_hours": [168, 24, 1]} and again.scope == "all"


def _v1_database(path: Path) -> None:
    """A database as release 1 left it: schema v1, with one row in each delivery state it knew."""
    sql = resources.files("storage").joinpath("migrations/sqlite/0001_init.sql").read_text(encoding="utf-8")
    conn = sqlite3.connect(path)
    conn.executescript(
        f"CREATE TABLE schema_version (version INTEGER PRIMARY KEY);\nBEGIN;\n{sql}\n"
        "INSERT INTO schema_version VALUES (1);\nCOMMIT;"
    )
    stamp = T0.isoformat(timespec="microseconds")
    later = (T0 + timedelta(hours=7)).isoformat(timespec="microseconds")
    conn.execute(
        "INSERT INTO chats (id, platform, platform_chat_id, kind, created_at, quiet_start, quiet_end, quiet_tz, "
        "held_until) VALUES (1, 'telegram', '42', 'private', ?, '23:00', '07:00', 'UTC', ?)",
        (stamp, later),
    )
    conn.execute(
        "INSERT INTO subscriptions (id, chat_id, topic, venue, symbol, min_usd, min_usd_cents, created_by, created_at)"
        " VALUES (3, 1, 'liquidation', 'binance', '*', '1000', 100000, 'telegram:7', ?)",
        (stamp,),
    )
    for n, (status, quiet) in enumerate([("pending", 0), ("sent", 0), ("parked", 0), ("pending", 1)], start=1):
        body = liquidation(key=f"v1-{n}").model_dump(mode="json", exclude={"subject", "thread", "revision"})
        for field in ("due_at", "expires_at"):
            body.pop(field, None)
        import json

        conn.execute(
            "INSERT INTO events (id, key, topic, source, venue, symbol, usd, usd_cents, occurred_at, accepted_at, "
            "body) VALUES (?, ?, 'liquidation', 'forceorder', 'binance', 'BTCUSDT', '138.74', 13874, ?, ?, ?)",
            (n, f"v1-{n}", stamp, stamp, json.dumps(body)),
        )
        conn.execute(
            "INSERT INTO deliveries (id, event_id, chat_id, status, attempts, next_attempt_at, last_error, "
            "platform_message_id, summary_of, quiet_held, created_at, sent_at) VALUES (?,?,1,?,?,?,?,?,NULL,?,?,?)",
            (
                10 + n,
                n,
                status,
                1 if status != "pending" else 0,
                later if quiet else stamp,
                "held: quiet hours" if quiet else ("Telegram: bot was blocked" if status == "parked" else None),
                "555" if status == "sent" else None,
                quiet,
                stamp,
                stamp if status == "sent" else None,
            ),
        )
    conn.commit()
    conn.close()


async def test_a_live_v1_database_upgrades_and_loses_nothing(tmp_path: Path, clock: FrozenClock) -> None:
    path = tmp_path / "v1.db"
    _v1_database(path)
    async with Store(path, clock=clock) as store:
        assert await scalar(store, "SELECT MAX(version) FROM schema_version") >= 3
        [cursor] = await store.db.fetch("SELECT log_cursor FROM chats WHERE id = 1")
        assert cursor[0] == 4  # its deliveries were all written: nothing of the log is read again
        rows = await store.db.fetch(
            "SELECT id, status, quiet_held, due_at, next_attempt_at, message_ref, last_error "
            "FROM deliveries ORDER BY id"
        )
        stamp = T0.isoformat(timespec="microseconds")
        later = (T0 + timedelta(hours=7)).isoformat(timespec="microseconds")
        assert [tuple(r) for r in rows] == [
            (11, "pending", 0, stamp, stamp, None, None),
            (12, "sent", 0, stamp, stamp, "555", None),
            (13, "parked", 0, stamp, stamp, None, "Telegram: bot was blocked"),
            (14, "pending", 1, stamp, later, None, "held: quiet hours"),
        ]
        [sub] = await store.chats.subscriptions(1)
        assert (sub.id, sub.venue, sub.min_usd, sub.scope, dict(sub.params)) == (3, "binance", Decimal(1000), "all", {})
        chat, due = await store.outbox.due_for_chat(1, T0, limit=10)
        assert chat is not None and chat.quiet_start == "23:00"
        assert [(d.id, d.event.key if d.event else None) for d in due] == [(11, "v1-1")]
        _, after_quiet = await store.outbox.due_for_chat(1, T0 + timedelta(hours=7), limit=10)
        assert [(d.id, d.quiet_held) for d in after_quiet] == [(11, False), (14, True)]
        # Known keys are still replays after the upgrade.
        assert [r.new for r in await store.outbox.accept([liquidation(key="v1-2")])] == [False]


async def test_a_reminder_read_during_quiet_hours_but_due_after_them_is_not_put_in_the_digest(
    store: Store, clock: FrozenClock
) -> None:
    chat = await _subscribed(store, "1")
    await store.outbox.hold_chat(chat.id, until=T0 + timedelta(hours=8), error="held: quiet hours", quiet=True)
    await store.outbox.accept([_with(liquidation(key="noon"), due_at=T0 + timedelta(hours=12))])
    await read_logs(store)
    clock.set_wall(T0 + timedelta(hours=12))
    assert [(d.event.key, d.quiet_held) for d in await _due(store, chat) if d.event] == [("noon", False)]


async def test_a_row_read_as_its_thread_was_withdrawn_is_withdrawn_not_sent(store: Store) -> None:
    """PostgreSQL: a read on one connection can write the row while `withdraw` runs on another; the row is
    caught when it is next read for sending."""
    chat = await _subscribed(store, "1")
    await store.outbox.accept([_rev("u", 1, thread="unlock:x"), liquidation(key="plain")])
    await read_logs(store)
    await store.db.execute("UPDATE events SET withdrawn = TRUE WHERE key = 'u'")  # the race's outcome
    assert [d.event.key for d in await _due(store, chat) if d.event] == ["plain"]
    assert ("u", "withdrawn") in await _statuses(store)


async def test_a_long_read_commits_chunk_by_chunk_and_gives_way_between(store: Store) -> None:
    """A chat far behind (a summary's read of thousands) writes at most `LOG_ROWS` rows per transaction, and
    between chunks the caller's `pace` runs with what came before already committed: the dispatcher's
    turn-taking goes there, so no single step of the read holds the loop."""
    chat = await _subscribed(store, "far-behind")
    events = [liquidation(key=f"burst-{i}", usd=str(1000 + i)) for i in range(LOG_ROWS * 3 + 50)]
    for at in range(0, len(events), 100):
        await store.outbox.accept(events[at : at + 100])
    committed: list[int] = []

    async def pace() -> None:
        committed.append(int(await scalar(store, "SELECT COUNT(*) FROM deliveries")))  # the only chat

    written, cursor = await store.outbox.read_log(chat.id, want=10_000, pace=pace)
    assert written == len(events) and cursor == store.outbox.head
    assert committed == [LOG_ROWS, 2 * LOG_ROWS, 3 * LOG_ROWS]
    keys = [
        d.event.key for d in (await store.outbox.due_for_chat(chat.id, store.clock.now(), limit=10_000))[1] if d.event
    ]
    assert keys == [e.key for e in events]  # the log's order, each once
    assert await store.outbox.read_log(chat.id, want=10_000, pace=pace) == (0, cursor)


async def test_chats_reading_one_event_share_one_decoded_copy(store: Store) -> None:
    """A burst that many chats hear is decoded once per event, not once per chat and row."""
    chats = [await _subscribed(store, f"reader-{i}") for i in range(3)]
    await store.outbox.accept([liquidation(key="shared", usd="50000")])
    events = [(await _due(store, chat))[0].event for chat in chats]
    assert events[0] is not None and events[0].key == "shared"
    assert all(event is events[0] for event in events)
