"""The container's HEALTHCHECK without a listener (bot/health.py): `perpwatch run`'s loop rewrites a heartbeat
file, and `perpwatch healthcheck` fails when it is missing or stale; a stopped bot leaves none behind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.cli import main
from bot.health import beat, check


def test_fresh_stale_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    assert check(path) is not None and "not running" in str(check(path))
    path.write_text(f"{time.time()}\n")
    assert check(path) is None
    assert "stuck" in str(check(path, now=time.time() + 3600))
    path.write_text("garbage\n")
    assert "unreadable" in str(check(path))
    assert "PERPWATCH_HEARTBEAT_FILE" in str(check(None))


async def test_beat_writes_while_the_loop_turns_and_removes_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    task = asyncio.create_task(beat(path, every_s=0.01))
    for _ in range(500):
        if path.exists():
            break
        await asyncio.sleep(0.01)
    assert check(path) is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not path.exists()


def test_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "heartbeat"
    monkeypatch.setenv("PERPWATCH_HEARTBEAT_FILE", str(path))
    assert main(["healthcheck"]) == 1
    path.write_text(f"{time.time()}\n")
    assert main(["healthcheck"]) == 0
    assert main(["healthcheck", "--file", str(tmp_path / "other")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "no heartbeat at " + str(path) + ": the bot is not running (or still starting)",
        "ok",
        f"no heartbeat at {tmp_path / 'other'}: the bot is not running (or still starting)",
    ]
