"""`perpwatch db upgrade | status`: the schema version, the migrations a database lacks, its rows, on both
engines, with the password never shown.

The tests that need PostgreSQL create and drop their own databases on the server PERPWATCH_TEST_POSTGRES_URL
names (an admin URL to database `postgres`), and are skipped without it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import os
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.cli import main
from perpwatch.clock import FrozenClock
from perpwatch.events import Event
from storage import Store, open_engine
from storage.admin import release_version
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
    assert out[3] == "pending migrations: 0001_init.sql, 0002_backbone_v2.sql, 0003_event_log.sql"
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
