"""The SQLite engine's own promises: atomic transactions on the loop's thread, and checkpoints off it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import StorageUnavailable
from storage.engine import Tx
from storage.sqlite import CHECKPOINT_WAIT_S, RESTART_FRAMES, ROWS_BEFORE_CHECKPOINT, WAL_CHECKPOINT_PAGES
from storage.sqlite import SqliteEngine as Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "t.db", checkpoint_every_s=3600)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def _count(db: Database) -> int:
    [row] = await db.fetch("SELECT COUNT(*) FROM watcher_state")
    return int(row[0])


async def _insert(tx: Tx, name: str) -> None:
    await tx.execute("INSERT INTO watcher_state (watcher, paused, updated_at) VALUES (?, FALSE, 'now')", (name,))


async def test_a_failed_transaction_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as tx:
            await _insert(tx, "a")
            await _insert(tx, "a")  # primary key clash after the first insert succeeded
    assert await _count(db) == 0
    async with db.transaction() as tx:  # and the connection is usable again
        await _insert(tx, "a")
    assert await _count(db) == 1


async def test_a_statement_awaited_inside_a_transaction_is_refused_and_rolls_it_back(db: Database) -> None:
    with pytest.raises(RuntimeError, match="while a transaction was open"):
        async with db.transaction() as tx:
            await _insert(tx, "a")
            await db.execute("DELETE FROM watcher_state")
    assert await _count(db) == 0


async def test_a_lock_held_by_another_process_is_a_passing_fault_and_changes_nothing(
    db: Database, tmp_path: Path
) -> None:
    db.conn.execute("PRAGMA busy_timeout=1")
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StorageUnavailable, match="SQLITE_BUSY"):
        async with db.transaction() as tx:
            await _insert(tx, "a")
    with pytest.raises(StorageUnavailable, match="SQLITE_BUSY"):
        await db.execute("INSERT INTO watcher_state (watcher, paused, updated_at) VALUES ('b', 0, 'now')")
    other.execute("COMMIT")
    other.close()
    assert await _count(db) == 0


async def test_the_worker_thread_copies_the_wal_back(db: Database) -> None:
    for index in range(50):
        async with db.transaction() as tx:
            await _insert(tx, f"w{index}")
    frames, copied = await db.checkpoint()
    assert frames >= 50  # each commit appended to the WAL, and 50 commits are far below the loop's bound
    assert copied == frames


async def _largest_wal_in_frames(db: Database, tmp_path: Path, *, make_room: bool) -> float:
    """The WAL's largest size over 12,000 one-row commits, in frames (a page and a 24-byte header)."""
    wal = tmp_path / "t.db-wal"
    largest = 0
    for index in range(3 * WAL_CHECKPOINT_PAGES):
        async with db.transaction() as tx:
            await _insert(tx, f"w{index}")
        if make_room:
            await db.make_room()
        largest = max(largest, wal.stat().st_size)
    page = int(db.conn.execute("PRAGMA page_size").fetchone()[0])
    return largest / (page + 24)


async def test_the_wal_stays_bounded_under_a_flood_of_commits(db: Database, tmp_path: Path) -> None:
    # No worker checkpoint runs here (it would at 4/s): the bound must hold on the loop's connection alone.
    assert await _largest_wal_in_frames(db, tmp_path, make_room=False) < WAL_CHECKPOINT_PAGES + 100


async def test_a_checkpoint_holding_writers_truncates_the_wal_for_the_commits_after_it(
    db: Database, tmp_path: Path
) -> None:
    # What the checkpointer does when a passive checkpoint finds the WAL long: one more that no commit can
    # race, which cuts the WAL to nothing, so the next commits append to an empty file: none overwrites a
    # page the OS may have dropped from its cache (which it would read back from disk first).
    wal = tmp_path / "t.db-wal"
    for index in range(RESTART_FRAMES):  # two frames or so a commit
        async with db.transaction() as tx:
            await _insert(tx, f"w{index}")
    await db.checkpoint()  # a passive one copies everything but leaves the file as long as it grew
    assert wal.stat().st_size > RESTART_FRAMES * 4096
    landed: list[int] = []

    async def writer() -> None:
        for n in range(50):
            async with db.transaction() as tx:
                await _insert(tx, f"late{n}")
            landed.append(n)
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)  # the writer commits once and yields
    held = asyncio.create_task(db._checkpoint_holding_writers())
    await asyncio.sleep(0)
    assert db._writers_held is not None
    before = len(landed)
    assert await held == (0, 0)  # TRUNCATE's answer when it cut the WAL
    assert len(landed) == before  # the writer waited for it (the loop did not)
    assert wal.stat().st_size < 500 * 4096  # the writer's one commit since, at most
    await task
    frames_after, _ = await db.checkpoint()
    assert frames_after < 500 < RESTART_FRAMES  # only the late commits: the WAL restarted under them


async def test_a_reader_that_outlasts_the_truncating_checkpoint_holds_writers_only_briefly(
    db: Database, tmp_path: Path
) -> None:
    # A read transaction on a thread of its own (what `fetch_slow` runs for /status) keeps the WAL needed:
    # the truncating checkpoint gives up after a short wait, and the writers it held go on; the WAL is cut
    # on a later round. Python's default busy timeout would hold every commit for 5 s.
    for index in range(20):
        async with db.transaction() as tx:
            await _insert(tx, f"w{index}")
    reader = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchall()  # the read snapshot is taken here
        async with db.transaction() as tx:  # a frame the reader's snapshot does not have
            await _insert(tx, "after the reader")
        frames, _copied = await db._checkpoint_holding_writers()
        assert frames > 0  # not cut: the reader still needs it
        assert db._checkpoint_conn is not None  # the wait it gave up after, as SQLite holds it
        [(wait_ms,)] = db._checkpoint_conn.execute("PRAGMA busy_timeout").fetchall()
        assert wait_ms == round(CHECKPOINT_WAIT_S * 1000)
        assert db._writers_held is None
        async with db.transaction() as tx:  # writers go on at once
            await _insert(tx, "late")
    finally:
        reader.close()
    assert await db._checkpoint_holding_writers() == (0, 0)  # the reader gone, the next round cuts it


async def test_a_bulk_writer_making_room_keeps_the_wal_well_inside_its_bound(db: Database, tmp_path: Path) -> None:
    # A one-row commit here writes two pages (the row's and its key's; a split now and then one more), so
    # the WAL stays near twice the rows between checkpoints, well below where the loop itself would sync.
    frames = await _largest_wal_in_frames(db, tmp_path, make_room=True)
    assert frames < 2 * ROWS_BEFORE_CHECKPOINT + 500 < WAL_CHECKPOINT_PAGES


async def test_the_checkpointer_keeps_running_and_reports_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def failing(self: Database, mode: str = "PASSIVE") -> tuple[int, int]:
        calls.append(threading.current_thread().name)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Database, "_checkpoint_once", failing)
    database = Database(tmp_path / "t.db", checkpoint_every_s=0.001)
    with caplog.at_level(logging.ERROR, logger="storage.sqlite"):
        await database.open()
        try:
            async with asyncio.timeout(10):  # a hang guard only
                while len(calls) < 3:  # noqa: ASYNC110 - waiting for the task under test
                    await asyncio.sleep(0.005)
            async with database.transaction() as tx:  # the database still works
                await _insert(tx, "a")
        finally:
            await database.close()
    assert threading.main_thread().name not in calls
    [record] = caplog.records  # once, not once a second
    assert record.getMessage().startswith("database checkpoint failed")


async def test_close_waits_for_a_checkpoint_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    original = Database._checkpoint_once

    def slow(self: Database, mode: str = "PASSIVE") -> tuple[int, int]:
        started.set()
        release.wait(10)
        return original(self, mode)

    monkeypatch.setattr(Database, "_checkpoint_once", slow)
    database = Database(tmp_path / "t.db", checkpoint_every_s=0.001)
    await database.open()
    await asyncio.to_thread(started.wait, 10)
    closing = asyncio.create_task(database.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # the worker thread still uses its connection
    release.set()
    await closing
