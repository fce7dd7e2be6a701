"""Shared fixtures: settings isolated from the developer's environment and `.env`, and loopback fakes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.buyback_sources import Sources, every_source
from tests.fakes.telegram_api import FakeTelegramApi
from tests.stored import OutboxRows, deliveries, read_logs, scalar, until_outbox

TG_TOKEN = "123456:TEST-TOKEN"

MakeSettings = Callable[..., Settings]

POSTGRES_URL = os.environ.get("PERPWATCH_TEST_POSTGRES_URL")
"""An admin URL of the throwaway PostgreSQL server `make test` starts (tests/pgserver.py); read before any
test's environment is cleared. Unset: the PostgreSQL half of the engine tests is skipped."""

ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines: run on SQLite and on PostgreSQL (the `database_url` fixture)")
    config.addinivalue_line("markers", "sqlite_only: a test of SQLite itself (a lock held by a sqlite3 shell)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `engines` that use a database run once per engine; `sqlite_only` ones on SQLite alone."""
    if "engine" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("engines") is None:
        return
    only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
    metafunc.parametrize("engine", ENGINES[:1] if only_sqlite else ENGINES)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A developer's real token or database must never leak into a test run.

    Except the two that describe the run itself: the throwaway server tests/pgserver.py started for it (and
    nothing else's), and whether CI demanded one.
    """
    for name in list(os.environ):
        if name in ("PERPWATCH_TEST_POSTGRES_URL", "PERPWATCH_REQUIRE_POSTGRES"):
            continue
        if name.startswith("PERPWATCH_") or name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"):
            monkeypatch.delenv(name)
    yield


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(engine: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the engine under test, dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'perpwatch.db'}"
        return
    if POSTGRES_URL is None:
        pytest.skip("no PostgreSQL server for this run (PERPWATCH_TEST_POSTGRES_URL is unset)")
    with postgres_database(POSTGRES_URL) as url:
        yield url


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new database on the test server, dropped (with its connections) on the way out. Sync, on a thread
    with a loop of its own, so sync tests and fixtures can use it as well as async ones."""
    import asyncio
    import concurrent.futures
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    name = f"pw_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, admin(f'CREATE DATABASE "{name}"')).result()
        try:
            yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        finally:
            pool.submit(asyncio.run, admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')).result()


@pytest.fixture
def make_settings(database_url: str) -> MakeSettings:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "watchers": "binance",
            "ws_probe_after_s": 5.0,
            "ws_probe_timeout_s": 2.0,
            "ws_backoff_initial_s": 0.01,
            "ws_backoff_max_s": 0.05,
            "calendar_sources": "none",  # no test reaches DefiLlama's real host unless it asks to
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
async def binance() -> AsyncIterator[FakeForceOrderServer]:
    async with FakeForceOrderServer() as server:
        yield server


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(token=TG_TOKEN) as api:
        yield api


@pytest.fixture(autouse=True)
async def _dump_tasks_if_stuck(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A test still running after 30 s writes every asyncio task's stack to a file in the temp folder.

    pytest's faulthandler shows only threads, and an idle event loop looks the same for every hang; the
    task stacks say which await never returned. (Captured stderr would be lost if the run is killed.)
    """
    import asyncio
    import tempfile

    def dump() -> None:
        path = Path(tempfile.gettempdir()) / f"perpwatch-stuck-{os.getpid()}.txt"
        with path.open("a", encoding="utf-8") as out:
            out.write(f"=== {request.node.nodeid}\n")
            for task in asyncio.all_tasks():
                out.write(f"--- task {task.get_name()}\n")
                task.print_stack(file=out)

    handle = asyncio.get_running_loop().call_later(30, dump)
    yield
    handle.cancel()


async def eventually(predicate: Callable[[], object], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Re-check a condition the code under test reaches on its own (no fake to wake us); fail if it never does.

    A hang guard, not a timing assertion: the timeout is far above how long any of these takes.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"{what} never held")
        await asyncio.sleep(0.01)


__all__ = ["OutboxRows", "deliveries", "read_logs", "scalar", "until_outbox"]


@pytest.fixture
async def buyback_sources() -> AsyncIterator[Sources]:
    """Loopback fakes of every buyback source, as `Sources` (and `.settings()` to aim a bot at them)."""
    async with every_source() as sources:
        yield sources
