"""A database the bot cannot use stops `perpwatch run` with one line naming PERPWATCH_DATABASE_URL, the path
and what to do, never a traceback; a damaged one is refused at start instead of stalling every write later.

Each case is checked twice: on `Database.open()` in this process, and through `perpwatch run` as a
subprocess, the way an operator meets it. Read-only places are made for real: the tests usually run as root,
which ignores file modes, so a read-only file system is a tmpfs remounted read-only and a read-only file or
folder is made immutable (`chattr +i`). Where the machine allows neither, that case is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import StorageStartError
from storage.sqlite import SqliteEngine as Database

ROOT = Path(__file__).resolve().parent.parent

Prepare = Callable[[Path, contextlib.ExitStack], Path]


def _healthy(path: Path, *, rows: int = 3000) -> None:
    """A real perpwatch database, big enough that damage in its middle hits table pages."""

    async def fill() -> None:
        db = Database(path, checkpoint_every_s=3600)
        await db.open()
        try:
            async with db.transaction() as tx:
                await tx.execute("CREATE TABLE filler (n INTEGER PRIMARY KEY, text TEXT)")
                await tx.executemany("INSERT INTO filler VALUES (?, ?)", [(n, f"row {n} " * 20) for n in range(rows)])
        finally:
            await db.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the async tests' fixtures run inside their loop
        pool.submit(asyncio.run, fill()).result()


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed tools


def _make_read_only(target: Path, stack: contextlib.ExitStack) -> None:
    """Root ignores file modes, so as root the file or folder is made immutable instead."""
    if os.geteuid() != 0:
        mode = target.stat().st_mode
        target.chmod(0o555 if target.is_dir() else 0o444)
        stack.callback(target.chmod, mode)
        return
    done = _run("chattr", "+i", str(target))
    if done.returncode != 0:
        pytest.skip(f"running as root, which ignores file modes, and chattr +i fails here: {done.stderr.strip()}")
    stack.callback(_run, "chattr", "-i", str(target))


def _read_only_mount(folder: Path, stack: contextlib.ExitStack) -> Path:
    """A tmpfs at `folder`, remounted read-only by the caller once it holds what the case needs."""
    folder.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to make a read-only file system (needs root): {done.stderr.strip()}")
    stack.callback(lambda: _run("umount", str(folder)).check_returncode())  # fails if something kept it open
    return folder


def _remount_read_only(folder: Path) -> None:
    _run("mount", "-o", "remount,ro", str(folder)).check_returncode()


# --- the cases: each prepares a database path the bot must refuse -------------------------------------------
def read_only_file_system(tmp: Path, stack: contextlib.ExitStack) -> Path:
    mount = _read_only_mount(tmp / "ro", stack)
    _healthy(mount / "perpwatch.db")
    _remount_read_only(mount)
    return mount / "perpwatch.db"


def new_database_on_read_only_file_system(tmp: Path, stack: contextlib.ExitStack) -> Path:
    mount = _read_only_mount(tmp / "ro", stack)
    _remount_read_only(mount)
    return mount / "perpwatch.db"


def read_only_folder(tmp: Path, stack: contextlib.ExitStack) -> Path:
    folder = tmp / "data"
    folder.mkdir()
    _make_read_only(folder, stack)
    return folder / "perpwatch.db"


def read_only_file(tmp: Path, stack: contextlib.ExitStack) -> Path:
    path = tmp / "perpwatch.db"
    _healthy(path)
    _make_read_only(path, stack)
    return path


def parent_that_cannot_be_made(tmp: Path, stack: contextlib.ExitStack) -> Path:
    folder = tmp / "data"
    folder.mkdir()
    _make_read_only(folder, stack)
    return folder / "missing" / "perpwatch.db"


def parent_that_is_a_file(tmp: Path, stack: contextlib.ExitStack) -> Path:
    (tmp / "data").write_text("not a folder\n")
    return tmp / "data" / "perpwatch.db"


def a_folder_as_the_file(tmp: Path, stack: contextlib.ExitStack) -> Path:
    (tmp / "perpwatch.db").mkdir()
    return tmp / "perpwatch.db"


def random_bytes(tmp: Path, stack: contextlib.ExitStack) -> Path:
    path = tmp / "perpwatch.db"
    path.write_bytes(os.urandom(256 * 1024))
    return path


def damaged_header(tmp: Path, stack: contextlib.ExitStack) -> Path:
    path = tmp / "perpwatch.db"
    _healthy(path)
    data = bytearray(path.read_bytes())
    data[:100] = os.urandom(100)
    path.write_bytes(bytes(data))
    return path


def truncated(tmp: Path, stack: contextlib.ExitStack) -> Path:
    path = tmp / "perpwatch.db"
    _healthy(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def damaged_middle_third(tmp: Path, stack: contextlib.ExitStack) -> Path:
    """Opens and answers small queries: only SQLite's quick check at start finds the damage."""
    path = tmp / "perpwatch.db"
    _healthy(path)
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = os.urandom(third)
    path.write_bytes(bytes(data))
    return path


CASES: list[Prepare] = [
    read_only_file_system,
    new_database_on_read_only_file_system,
    read_only_folder,
    read_only_file,
    parent_that_cannot_be_made,
    parent_that_is_a_file,
    a_folder_as_the_file,
    random_bytes,
    damaged_header,
    truncated,
    damaged_middle_third,
]


@pytest.fixture(params=CASES, ids=[c.__name__ for c in CASES])
def bad_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    with contextlib.ExitStack() as stack:
        yield request.param(tmp_path, stack)


def _assert_one_line(message: str, path: Path) -> None:
    assert "\n" not in message.strip(), message
    assert "PERPWATCH_DATABASE_URL" in message, message
    assert str(path) in message, message
    assert "Traceback" not in message, message


# --- in this process ---------------------------------------------------------------------------------------
async def test_open_refuses_with_one_line(bad_database: Path) -> None:
    db = Database(bad_database, checkpoint_every_s=3600)
    try:
        with pytest.raises(StorageStartError) as caught:
            await db.open()
    finally:
        await db.close()
    _assert_one_line(str(caught.value), bad_database)
    assert not isinstance(caught.value.__cause__, sqlite3.Error)  # the engine's errors stay inside storage


async def test_open_leaves_nothing_open_when_it_refuses(tmp_path: Path) -> None:
    """A refused open closes its connection: a caller need not call close(), and a retry starts clean."""
    with contextlib.ExitStack() as stack:
        path = read_only_file_system(tmp_path, stack)
        db = Database(path, checkpoint_every_s=3600)
        with pytest.raises(StorageStartError):
            await db.open()
        with pytest.raises(RuntimeError, match="not open"):
            _ = db.conn
    # the ExitStack unmounted the tmpfs: it would be busy had the connection stayed open


@pytest.mark.parametrize("content", [b"", None], ids=["empty file", "no file"])
async def test_an_empty_or_missing_file_is_a_new_database(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "new" / "perpwatch.db"
    if content is not None:
        path.parent.mkdir()
        path.write_bytes(content)
    db = Database(path, checkpoint_every_s=3600)
    await db.open()
    try:
        assert await db.fetch("SELECT COUNT(*) FROM schema_version")
    finally:
        await db.close()


async def test_a_healthy_database_opens_again(tmp_path: Path) -> None:
    path = tmp_path / "perpwatch.db"
    _healthy(path)
    db = Database(path, checkpoint_every_s=3600)
    await db.open()
    try:
        [row] = await db.fetch("SELECT COUNT(*) FROM filler")
        assert row[0] == 3000
    finally:
        await db.close()


# --- through `perpwatch run` -------------------------------------------------------------------------------
def test_perpwatch_run_says_one_line_and_exits(bad_database: Path, tmp_path: Path) -> None:
    pytest.importorskip("bot.app", reason="bot.app does not import on this branch: `perpwatch run` cannot start")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "PERPWATCH_DATABASE_URL": f"sqlite:///{bad_database}",
        "PERPWATCH_WATCHERS": "binance",
        "PERPWATCH_BINANCE_WS_URL": "ws://127.0.0.1:9/",  # nothing listens there; no watcher gets that far
    }
    workdir = tmp_path / "cwd"  # away from the checkout's .env
    workdir.mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bot.cli", "run"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"perpwatch run started on a database it must refuse; stderr: {exc.stderr!r}")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("perpwatch: "), done.stderr
    _assert_one_line(lines[0], bad_database)
