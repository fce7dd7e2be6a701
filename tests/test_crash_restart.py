"""A real bot process, killed with SIGKILL after accepting an event and before Telegram confirmed the send,
delivers that alert exactly once after a restart. The same run proves no token reaches a log line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.app import PerpwatchApp
from storage import Store
from tests.conftest import TG_TOKEN, MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import alerts, sample_frame, seeded_settings, wait_alerts

REPO = Path(__file__).resolve().parents[1]


async def test_killed_after_accept_delivers_exactly_once_after_restart(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer, tmp_path: Path
) -> None:
    settings = await seeded_settings(make_settings, telegram, binance)

    telegram.latency_s = 30.0  # the send is in flight, unconfirmed, when the process dies
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        "TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "PERPWATCH_TELEGRAM_API_URL": telegram.base_url,
        "PERPWATCH_DATABASE_URL": settings.database_url,
        "PERPWATCH_WATCHERS": "binance",
        "PERPWATCH_BINANCE_WS_URL": binance.url,
        "PERPWATCH_LOG_LEVEL": "DEBUG",
    }
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
        try:
            await binance.wait_connected(timeout_s=30)
            await binance.push(sample_frame())
            await telegram.wait_until(
                lambda: any("liquidated" in str(r.params.get("text")) for r in telegram.requests_for("sendMessage")),
                timeout=10,
            )
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    assert alerts(telegram) == []
    async with Store(settings.database_path) as store:
        backlog = await store.outbox.backlog()
        assert (backlog.pending, backlog.parked) == (1, 0)

    telegram.latency_s = 0.0
    binance.replay_on_connect = [sample_frame()]  # the venue re-sends the frame to the new process, too
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected(2)
        [message] = await wait_alerts(telegram, 1)
        assert "BTCUSDT LONG liquidated" in message.body
        await eventually(lambda: app.pipeline.stats.duplicates == 1, what="the re-sent frame was recognised")
    assert len(alerts(telegram)) == 1

    logged = log_path.read_text(encoding="utf-8", errors="replace")
    assert "perpwatch started" in logged  # the log was really captured
    assert "TEST-TOKEN" not in logged and TG_TOKEN not in logged
