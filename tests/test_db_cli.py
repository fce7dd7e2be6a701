"""`perpwatch db upgrade | status | copy`: a live SQLite database moves into PostgreSQL with everything it
holds (chats and their settings, subscriptions, watch lists, paused watchers, the event log, pending
deliveries in their order), new rows get fresh ids there, a second copy changes nothing, a database in use is
refused and left alone, and a copy that fails leaves the target empty.

The tests that need PostgreSQL create and drop their own databases on the server PERPWATCH_TEST_POSTGRES_URL
names (an admin URL to database `postgres`), and are skipped without it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import sqlite3
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.cli import main
from perpwatch.clock import FrozenClock
from perpwatch.events import Event
from storage import Engine, Store, open_engine
from storage.admin import database_status, release_version
from storage.copy import TABLES, CopyError, CopyReport, copy_database
from tests.factories import liquidation

PG_ADMIN = os.environ.get("PERPWATCH_TEST_POSTGRES_URL")
"""Read at import: the autouse fixture in conftest removes every PERPWATCH_* variable before a test runs."""

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
"""When every delivery the fill left pending may be tried, held ones too."""

WALLET = "0x" + "ab" * 20
T = TypeVar("T")


def _sync(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own: usable from sync tests and from inside async ones."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


async def _admin(sql: str) -> None:
    asyncpg = importlib.import_module("asyncpg")  # untyped: this keeps mypy quiet with or without its stubs
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped after the test."""
    if PG_ADMIN is None:
        pytest.skip("PERPWATCH_TEST_POSTGRES_URL is not set: no PostgreSQL server to copy into")
    name = f"perpwatch_copy_{uuid.uuid4().hex[:12]}"
    _sync(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield urlunsplit(urlsplit(PG_ADMIN)._replace(path=f"/{name}"))
    finally:
        _sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _revision(key: str, revision: int) -> Event:
    return Event.model_validate(
        {**liquidation(key=key, usd="90000").model_dump(), "thread": "cascade:binance:BTCUSDT", "revision": revision}
    )


async def _fill(url: str) -> dict[str, int]:
    """A SQLite database as a running bot leaves it, written through the repositories: chats with settings,
    subscriptions, a watch list, a paused watcher, events read into deliveries, some sent (one of a thread,
    whose next revision now edits it), a chat held after a 429, a chat gone with its alerts parked, and a chat
    that has yet to read the newest events. The chats' ids, by name."""
    async with Store(url, clock=FrozenClock(T0)) as store:
        chats, outbox = store.chats, store.outbox
        alice = await chats.upsert("telegram", "100", kind="private", title="alice")
        desk = await chats.upsert("discord", "200", kind="group", title="desk")
        gone = await chats.upsert("telegram", "300", kind="private", title=None)
        late = await chats.upsert("telegram", "400", kind="private", title="late")
        await chats.subscribe(alice.id, "liquidation", venue="binance", symbol="BTC", min_usd=Decimal("1000"), limit=10)
        await chats.subscribe(
            alice.id, "whale", venue=None, symbol=None, min_usd=None, limit=10, scope="watchlist", params={"n": 2}
        )
        await chats.set_threshold(alice.id, "liquidation", Decimal("250.5"))
        await chats.watch(alice.id, WALLET, "big one", limit=10)
        await chats.set_quiet(alice.id, "23:00", "07:00", "Europe/Berlin")
        for chat in (desk, gone, late):
            await chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
        await store.watchers.set_paused("binance", True)

        await outbox.accept([liquidation(key=f"e{i}", usd=str(5000 + i)) for i in range(12)])
        await outbox.accept([_revision("r1", 1)])
        for chat in (alice, desk, gone):
            await outbox.read_log(chat.id, want=100)
        _, due = await outbox.due_for_chat(alice.id, T0, limit=100)
        await outbox.mark_sent([d.id for d in due[:3]], message_ref=None, now=T0)  # one summary of three
        [threaded] = [d.id for d in due if d.thread is not None]
        await outbox.mark_sent([threaded], message_ref='{"message_id": 77}', now=T0)
        await outbox.accept([_revision("r2", 2), liquidation(key="e12", usd="7000")])
        await outbox.read_log(alice.id, want=100)
        await outbox.read_log(desk.id, want=100)
        await outbox.hold_chat(desk.id, until=T0 + timedelta(hours=1), error="429: retry after 3600")
        await chats.mark_gone(gone.id, "blocked by the user")
        return {"alice": alice.id, "desk": desk.id, "gone": gone.id, "late": late.id}


async def _view(store: Store, chat_ids: list[int]) -> dict[str, Any]:
    """What the bot sees of a database, through its repositories (nothing is written: no log is read)."""
    view: dict[str, Any] = {"paused": await store.watchers.paused(), "backlog": await store.outbox.backlog()}
    for chat_id in chat_ids:
        chat, due = await store.outbox.due_for_chat(chat_id, LATER, limit=100, read=False)
        view[f"chat {chat_id}"] = (
            chat,
            await store.chats.subscriptions(chat_id),
            await store.chats.thresholds(chat_id),
            await store.chats.watchlist(chat_id),
            due,
            (await store.outbox.due_for_chat(chat_id, T0, limit=100, read=False))[1],
            await store.outbox.next_due(chat_id),
        )
    return view


async def _copy(source_url: str, target_url: str, progress: Callable[[str], None] | None = None) -> CopyReport:
    source, target = open_engine(source_url), open_engine(target_url)
    await source.open(migrate=False)
    await target.open(migrate=False)
    try:
        return await copy_database(source, target, progress=progress)
    finally:
        await target.close()
        await source.close()


async def _rows(url: str) -> dict[str, int]:
    engine: Engine = open_engine(url)
    await engine.open(migrate=False)
    try:
        rows = {}
        for table, _key in TABLES:
            [row] = await engine.fetch(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - names from TABLES
            rows[table] = int(row[0])
        return rows
    finally:
        await engine.close()


# --- the copy ---------------------------------------------------------------------------------------------
async def test_a_copy_into_postgresql_holds_everything_and_new_rows_get_fresh_ids(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    ids = await _fill(source)
    async with Store(source, clock=FrozenClock(T0)) as store:
        before = await _view(store, list(ids.values()))
    assert before[f"chat {ids['alice']}"][4], "the fill left alice pending deliveries"
    assert before[f"chat {ids['desk']}"][4] and not before[f"chat {ids['desk']}"][5], "desk is held at T0"

    lines: list[str] = []
    report = await _copy(source, pg_url, lines.append)
    assert not report.already_copied and report.rows == await _rows(source)
    assert lines[0].startswith(f"copying {source} (schema version {release_version('sqlite')}) into postgresql://")
    assert "events: 15 rows" in lines

    async with Store(pg_url, clock=FrozenClock(T0)) as pg:
        after = await _view(pg, list(ids.values()))
        assert after == before
        alice, subscriptions, thresholds, watchlist, due, _, _ = after[f"chat {ids['alice']}"]
        assert (alice.quiet_start, alice.quiet_end, alice.quiet_tz) == ("23:00", "07:00", "Europe/Berlin")
        assert [(s.topic, s.venue, s.symbol, s.min_usd, s.scope, s.params) for s in subscriptions] == [
            ("liquidation", "binance", "BTC", Decimal("1000"), "all", {}),
            ("whale", None, None, None, "watchlist", {"n": 2}),
        ]
        assert [(t.topic, t.min_usd) for t in thresholds] == [("liquidation", Decimal("250.5"))]
        assert [(w.address, w.label) for w in watchlist] == [(WALLET, "big one")]
        assert [d.event.key for d in due if d.event] == [*(f"e{i}" for i in range(3, 12)), "r2", "e12"]
        [edit] = [d for d in due if d.thread is not None]
        assert edit.revision == 2 and edit.edit_ref == '{"message_id": 77}'  # the thread's sent message came along
        desk = after[f"chat {ids['desk']}"][0]
        assert desk.held_until == T0 + timedelta(hours=1) and after[f"chat {ids['desk']}"][5] == []
        assert after[f"chat {ids['gone']}"][0].status == "gone" and after["backlog"].parked == 13
        assert await pg.watchers.paused() == {"binance"}

        # Identity sequences were moved past the copied ids: new rows get fresh ones.
        newcomer = await pg.chats.upsert("telegram", "500", kind="private", title=None)
        assert newcomer.id == max(ids.values()) + 1
        sub, created = await pg.chats.subscribe(
            newcomer.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10
        )
        assert created and sub.id == report.rows["subscriptions"] + 1
        [accepted] = await pg.outbox.accept([liquidation(key="after the move", usd="8000")])
        assert accepted.event_id == report.rows["events"] + 1
        # The chat that had yet to read the log reads it on PostgreSQL, and its rows get fresh ids too.
        _, late_due = await pg.outbox.due_for_chat(ids["late"], T0, limit=100)
        assert [d.event.key for d in late_due if d.event] == [
            *(f"e{i}" for i in range(12)),
            "r2",
            "e12",
            "after the move",
        ]
        assert min(d.id for d in late_due) == report.rows["deliveries"] + 1


async def test_a_second_copy_changes_nothing(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    await _fill(source)
    first = await _copy(source, pg_url)
    lines: list[str] = []
    again = await _copy(source, pg_url, lines.append)
    assert again.already_copied and again.rows == first.rows and lines == []
    assert await _rows(pg_url) == first.rows


async def test_tables_of_another_application_beside_them_do_not_stop_the_copy(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    await _fill(source)
    engine = open_engine(pg_url)
    await engine.open(migrate=False)
    try:
        await engine.execute("CREATE TABLE their_orders (id BIGINT PRIMARY KEY)")
        await engine.execute("INSERT INTO their_orders VALUES (1)")
    finally:
        await engine.close()
    report = await _copy(source, pg_url)
    assert report.rows == await _rows(source)
    assert (await _copy(source, pg_url)).already_copied


async def test_a_target_in_use_is_refused_and_left_as_it_was(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    await _fill(source)
    async with Store(pg_url, clock=FrozenClock(T0)) as pg:  # the bot ran on PostgreSQL already
        chat = await pg.chats.upsert("telegram", "999", kind="private", title=None)
        await pg.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=10)
        await pg.outbox.accept([liquidation(key="its own")])
        before = await _view(pg, [chat.id])
    held = await _rows(pg_url)

    with pytest.raises(CopyError) as refused:
        await _copy(source, pg_url)
    assert str(refused.value) == (
        f"target database {open_engine(pg_url).display} is not empty (1 chats, 1 events; rows in subscriptions too): "
        "perpwatch db copy only fills an empty database"
    )
    assert await _rows(pg_url) == held
    async with Store(pg_url, clock=FrozenClock(T0)) as pg:
        assert await _view(pg, [chat.id]) == before


async def test_an_earlier_copy_of_a_source_that_moved_on_is_refused(tmp_path: Path, pg_url: str) -> None:
    """The rehearsal: copied while the bot ran, then the bot sent an alert. Same counts, other rows."""
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    ids = await _fill(source)
    first = await _copy(source, pg_url)
    async with Store(source, clock=FrozenClock(T0)) as store:
        _, due = await store.outbox.due_for_chat(ids["alice"], T0, limit=1, read=False)
        await store.outbox.mark_sent([due[0].id], message_ref=None, now=T0)
    with pytest.raises(CopyError, match=r"is not empty \(4 chats, 15 events.*its deliveries differ from the source"):
        await _copy(source, pg_url)
    assert await _rows(pg_url) == first.rows


async def test_a_copy_that_fails_leaves_the_target_empty(tmp_path: Path, pg_url: str) -> None:
    path = tmp_path / "bot.db"
    await _fill(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # a row SQLite let in with its foreign keys off; PostgreSQL refuses it
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute(
            "INSERT INTO deliveries (event_id, chat_id, due_at, next_attempt_at, created_at) VALUES (9999, 1, ?, ?, ?)",
            (T0.isoformat(), T0.isoformat(), T0.isoformat()),
        )
    with pytest.raises(CopyError, match=r"failed at table deliveries \(ForeignKeyViolationError: .*as empty as it was"):
        await _copy(f"sqlite:///{path}", pg_url)
    assert set((await _rows(pg_url)).values()) == {0}


async def test_a_live_source_is_read_as_one_snapshot_that_never_blocks_the_bot(tmp_path: Path) -> None:
    """SQLite into SQLite (no server needed): the bot writes while the copy reads, without waiting for it, and
    what it wrote after the snapshot is not in the copy, even in tables the copy had yet to read."""
    path = tmp_path / "bot.db"
    await _fill(f"sqlite:///{path}")
    bot = sqlite3.connect(path, timeout=0)  # a bot that would fail at once on a lock the copy held

    def write_meanwhile(line: str) -> None:
        if line.startswith("chats:"):  # chats are copied; watcher_state and events are not yet
            with bot:
                bot.execute("UPDATE watcher_state SET paused = 0 WHERE watcher = 'binance'")
                bot.execute(
                    "INSERT INTO events (key, topic, source, occurred_at, accepted_at, body) "
                    "VALUES ('mid-copy', 'liquidation', 'test', ?, ?, '{}')",
                    (T0.isoformat(), T0.isoformat()),
                )

    try:
        report = await _copy(f"sqlite:///{path}", f"sqlite:///{tmp_path / 'copy.db'}", write_meanwhile)
    finally:
        bot.close()
    assert report.rows["events"] == 15
    async with Store(tmp_path / "copy.db", clock=FrozenClock(T0)) as copy, Store(path, clock=FrozenClock(T0)) as live:
        assert await copy.watchers.paused() == {"binance"} and await live.watchers.paused() == set()
        assert (copy.outbox.head, live.outbox.head) == (15, 16)


async def test_a_source_at_another_schema_version_is_refused_before_the_target_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    await _fill(f"sqlite:///{path}")
    newer = release_version("sqlite") + 1
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?)", (newer,))
    with pytest.raises(CopyError, match=f"at schema version {newer}, newer than this release knows"):
        await _copy(f"sqlite:///{path}", f"sqlite:///{tmp_path / 'copy.db'}")
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM schema_version WHERE version >= ?", (release_version("sqlite"),))
    with pytest.raises(CopyError, match="run `perpwatch db upgrade` first"):
        await _copy(f"sqlite:///{path}", f"sqlite:///{tmp_path / 'copy.db'}")
    target = open_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    await target.open(migrate=False)
    try:
        assert (await database_status(target)).version == 0
    finally:
        await target.close()


# --- the command line -------------------------------------------------------------------------------------
def _cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, *args: str
) -> tuple[int, list[str], str]:
    monkeypatch.setenv("PERPWATCH_DATABASE_URL", url)
    capsys.readouterr()  # what came before, e.g. a fill logging through the handler an earlier main() set up
    code = main(["db", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_db_upgrade_and_status_on_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    path = tmp_path / "new.db"
    url = f"sqlite:///{path}"
    release = release_version("sqlite")

    code, out, _ = _cli(capsys, monkeypatch, url, "status")
    assert code == 0 and not path.exists()  # a status looks, it creates nothing
    assert out[:2] == ["engine: sqlite", f"database: {url}"] and out[2].startswith("schema version: 0 (no perpwatch")
    assert out[3] == (
        "pending migrations: 0001_init.sql, 0002_backbone_v2.sql, 0003_event_log.sql, 0004_watcher_kv.sql, "
        "0005_cascades.sql, 0006_distance_warnings.sql, 0007_audience_and_leads.sql, 0008_buybacks.sql, "
        "0009_calendar.sql"
    )
    assert out[4:] == ["chats: -", "subscriptions: -", "events: -", "pending deliveries: -"]

    code, out, _ = _cli(capsys, monkeypatch, url, "upgrade")
    assert code == 0
    assert out[0] == "applied migration 1 (0001_init.sql)"
    assert len(out) == release + 1 and out[-1] == f"database {url} is at version {release}"
    code, out, _ = _cli(capsys, monkeypatch, url, "upgrade")
    assert (code, out) == (0, [f"already at version {release}"])

    _sync(_fill(url))
    code, out, _ = _cli(capsys, monkeypatch, url, "status")
    assert code == 0
    assert out == [
        "engine: sqlite",
        f"database: {url}",
        f"schema version: {release}",
        "pending migrations: none",
        "chats: 4",
        "subscriptions: 5",
        "events: 15",
        "pending deliveries: 25",  # alice 11 (4 sent), desk 14 (one superseded), the gone chat's parked
    ]


def test_db_upgrade_and_status_on_postgresql(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    password = urlsplit(pg_url).password
    masked = open_engine(pg_url).display
    release = release_version("postgresql")

    code, out, err = _cli(capsys, monkeypatch, pg_url, "status")
    assert code == 0 and out[:2] == ["engine: postgresql", f"database: {masked}"]
    assert out[2].startswith("schema version: 0 ") and out[-1] == "pending deliveries: -"
    code, out, err2 = _cli(capsys, monkeypatch, pg_url, "upgrade")
    assert code == 0 and len(out) == release + 1 and out[-1] == f"database {masked} is at version {release}"
    code, out3, err3 = _cli(capsys, monkeypatch, pg_url, "upgrade")
    assert out3 == [f"already at version {release}"]
    code, out4, err4 = _cli(capsys, monkeypatch, pg_url, "status")
    assert out4[2:] == [
        f"schema version: {release}",
        "pending migrations: none",
        "chats: 0",
        "subscriptions: 0",
        "events: 0",
        "pending deliveries: 0",
    ]
    if password:
        assert "***" in masked
        for text in (*out, *out3, *out4, err, err2, err3, err4):
            assert password not in text


def test_db_copy_from_the_command_line(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    _sync(_fill(source))
    password = urlsplit(pg_url).password
    masked = open_engine(pg_url).display

    code, out, err = _cli(capsys, monkeypatch, source, "copy", "--to", pg_url)
    assert code == 0, err
    assert out[0] == f"copying {source} (schema version {release_version('sqlite')}) into {masked}"
    assert [line.split(":")[0] for line in out[1:-1]] == [table for table, _key in TABLES]
    rows = sum(_sync(_rows(source)).values())
    assert out[-1] == f"copied {rows} rows into {masked}: point PERPWATCH_DATABASE_URL at it and start the bot"

    code, again, err2 = _cli(capsys, monkeypatch, source, "copy", "--to", pg_url)
    assert (code, again) == (0, ["already copied: nothing to do"])

    code, status, _ = _cli(capsys, monkeypatch, pg_url, "status")
    assert status[4:] == ["chats: 4", "subscriptions: 5", "events: 15", "pending deliveries: 25"]

    other = f"sqlite:///{tmp_path / 'other.db'}"
    _sync(_fill(other))
    _sync(_add_chat(other))
    code, refused, err3 = _cli(capsys, monkeypatch, other, "copy", "--to", pg_url)
    assert code == 1 and refused == []
    assert err3.splitlines()[-1] == (
        f"perpwatch: target database {masked} is not empty (4 chats, 15 events; rows in subscriptions, "
        "chat_thresholds, watchlist, watcher_state, deliveries, threads too): perpwatch db copy only fills an "
        "empty database"
    )
    if password:
        for text in (*out, *again, *status, err, err2, err3):
            assert password not in text


async def _add_chat(url: str) -> None:
    async with Store(url, clock=FrozenClock(T0)) as store:
        await store.chats.upsert("telegram", "one more", kind="private", title=None)


def test_db_copy_errors_are_one_line_with_the_password_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = f"sqlite:///{tmp_path / 'bot.db'}"
    _sync(_fill(source))
    nowhere = "postgresql://perpwatch:s3cret-pw@127.0.0.1:9/perpwatch"  # nothing listens on the discard port

    code, out, err = _cli(capsys, monkeypatch, source, "copy", "--to", nowhere)
    assert code == 1 and out == [] and "s3cret-pw" not in err and "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith(
        "perpwatch: database postgresql://perpwatch:***@127.0.0.1:9/perpwatch (--to) cannot be reached"
    )
    assert line.endswith(": is the server running and the host right?")

    code, out, err = _cli(capsys, monkeypatch, source, "copy", "--to", source)
    assert code == 1 and err.splitlines()[-1].startswith("perpwatch: --to names the database being copied")

    code, out, err = _cli(capsys, monkeypatch, f"sqlite:///{tmp_path / 'missing.db'}", "copy", "--to", nowhere)
    assert code == 1 and "does not exist: nothing to copy" in err and not (tmp_path / "missing.db").exists()

    code, out, err = _cli(capsys, monkeypatch, source, "copy", "--to", "somewhere.db")
    assert code == 2 and err.strip() == "perpwatch: --to must be a URL like postgresql://user:password@host:port/dbname"
