"""PostgreSQL as the bot meets it: start-up refusals in one line with the password masked, a password that
never reaches a log line, and a server restart in the middle of a stream that loses and doubles nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot.cli import main
from tests import pgserver
from tests.conftest import POSTGRES_URL, MakeSettings, eventually, postgres_database
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import alerts, running_bot, sample_frame, subscribed

ROOT = Path(__file__).resolve().parent.parent

needs_server = pytest.mark.skipif(POSTGRES_URL is None, reason="no PostgreSQL server for this run")


def _with(url: str, *, password: str | None = None, database: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    secret = parts.password if password is None else password
    host = f"{parts.hostname}:{parts.port if port is None else port}"
    netloc = f"{user}:{secret}@{host}" if secret else f"{user}@{host}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path))


def _refusal(url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp: Path) -> str:
    monkeypatch.chdir(tmp)  # no .env here
    monkeypatch.setenv("PERPWATCH_DATABASE_URL", url)
    monkeypatch.setenv("PERPWATCH_WATCHERS", "")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["run"]) == 1
    finally:  # main() logs to the captured stderr, which closes after this test
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_an_unreachable_server_stops_startup_with_one_line_and_no_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    closed = pgserver.free_loopback_port()  # nothing listens there
    err = _refusal(f"postgresql://bot:Sup3rSecret@127.0.0.1:{closed}/perpwatch", monkeypatch, capsys, tmp_path)
    assert err.startswith("perpwatch: database postgresql://bot:***@127.0.0.1:")
    assert "PERPWATCH_DATABASE_URL" in err and "cannot be reached" in err
    assert "Sup3rSecret" not in err


@needs_server
def test_bad_credentials_stop_startup_with_one_line_and_no_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert POSTGRES_URL is not None
    err = _refusal(_with(POSTGRES_URL, password="Wr0ngPassword"), monkeypatch, capsys, tmp_path)
    assert "refused the user or password" in err and "PERPWATCH_DATABASE_URL" in err
    assert "Wr0ngPassword" not in err and ":***@" in err


@needs_server
def test_an_unknown_database_stops_startup_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert POSTGRES_URL is not None
    err = _refusal(_with(POSTGRES_URL, database="no_such_db"), monkeypatch, capsys, tmp_path)
    assert "names a database the server does not have" in err
    password = urlsplit(POSTGRES_URL).password
    assert password and password not in err


@needs_server
def test_the_password_never_reaches_a_log_line(tmp_path: Path) -> None:
    """The real bot, at DEBUG, connects, migrates and runs: its whole log shows the URL only masked."""
    assert POSTGRES_URL is not None
    password = urlsplit(POSTGRES_URL).password
    assert password
    with postgres_database(POSTGRES_URL) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PERPWATCH_", "TELEGRAM_", "DISCORD_"))}
        env |= {"PERPWATCH_DATABASE_URL": url, "PERPWATCH_LOG_LEVEL": "DEBUG", "PERPWATCH_WATCHERS": ""}
        bot = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        log = ""
        assert bot.stderr is not None
        while time.monotonic() < deadline:
            line = bot.stderr.readline()
            log += line
            if "console sink" in line or not line:
                break
        bot.send_signal(signal.SIGTERM)
        _, rest = bot.communicate(timeout=30)
    log += rest
    assert "migrating database engine=postgresql url=postgresql://perpwatch:***@" in log
    assert password not in log


@pytest.fixture
def own_server() -> Iterator[tuple[pgserver.ThrowawayServer, str]]:
    """A server of this test's own, to stop and start again under the running bot."""
    programs = pgserver.find_programs(pg_config=shutil.which("pg_config"))
    if programs is None:
        pytest.skip("PostgreSQL's server programs are not on this machine")
    root = os.geteuid() == 0
    server = pgserver.ThrowawayServer(programs, as_user=pgserver.SERVER_USER if root else None)
    try:
        yield server, server.start()
    finally:
        server.close()


@pytest.mark.skipif(POSTGRES_URL is None, reason="no PostgreSQL for this run")
async def test_a_server_restart_mid_stream_holds_events_pauses_sending_and_loses_and_doubles_nothing(
    own_server: tuple[pgserver.ThrowawayServer, str],
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
) -> None:
    server, admin_url = own_server
    with postgres_database(admin_url) as url:
        async with running_bot(make_settings, telegram, binance, database_url=url) as app:
            await subscribed(telegram)
            telegram.latency_s = 1.0  # the first alert is still on its way when the server goes
            await binance.push(sample_frame(T=1568014460001))
            await telegram.wait_until(lambda: any("liquidated" in str(r.params.get("text")) for r in telegram.requests))
            await asyncio.to_thread(server.stop)  # every pooled connection dies with it
            await telegram.wait_until(lambda: len(alerts(telegram)) == 1)  # sent, but it cannot be recorded
            telegram.latency_s = 0.0
            for i in range(2, 6):
                await binance.push(sample_frame(T=1568014460000 + i))
            await asyncio.sleep(1.5)  # the watcher holds them and retries; the dispatcher probes
            assert len(alerts(telegram)) == 1
            await asyncio.to_thread(server.resume)

            await telegram.wait_until(lambda: len(alerts(telegram)) >= 5, timeout=20)
            for i in range(1, 6):  # the venue sends them all again: replays
                await binance.push(sample_frame(T=1568014460000 + i))
            await eventually(lambda: app.pipeline.stats.duplicates >= 5, what="the replays to be refused")
            await asyncio.sleep(0.5)
            assert app.dispatcher.stats.storage_faults >= 1
            watcher = app.supervisor.watchers["binance"]
            assert watcher.health.rejected == {}
        bodies = [m.body for m in alerts(telegram)]
        assert len(bodies) == 5, bodies  # each once: nothing lost, nothing doubled
