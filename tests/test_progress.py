"""Progress of long operator work (bot/progress.py): a bar redrawn in place on a terminal, plain lines in a
log or a pipe; and `perpwatch db copy` showing one or the other, on a real pseudo-terminal and through a pipe."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from bot.progress import CLEAR_LINE, BarProgress, LineProgress, progress_for
from storage import Store


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_first_every_few_seconds_and_last() -> None:
    out, clock = io.StringIO(), Clock()
    with progress_for(out, unit="rows", clock=clock) as shown:
        assert isinstance(shown, LineProgress)
        shown.update("events", 0, 1000)
        clock.now = 1.0
        shown.update("events", 100, 1000)  # too soon after the last line: not shown
        clock.now = 6.0
        shown.update("events", 600, 1000)
        shown.note("a word from the job")
        clock.now = 6.5
        shown.update("events", 1000, 1000)  # the last always shows
        shown.update("chats", 1, 1)
        shown.update("threads", 7)  # no total known
    assert out.getvalue().splitlines() == [
        "events: 0 of 1,000 rows (0%)",
        "events: 600 of 1,000 rows (60%)",
        "a word from the job",
        "events: 1,000 rows",
        "chats: 1 row",
        "threads: 7 rows",
    ]
    assert "\r" not in out.getvalue()


def test_bar_redraws_in_place_and_keeps_notes_and_finished_parts() -> None:
    out, clock = Terminal(), Clock()
    with progress_for(out, unit="rows", clock=clock, width=100) as shown:
        assert isinstance(shown, BarProgress)
        shown.update("events", 0, 400)
        clock.now = 10.0
        shown.update("events", 200, 400)
        clock.now = 10.05
        shown.update("events", 300, 400)  # within the redraw interval: skipped
        shown.note("checkpoint")
        clock.now = 20.0
        shown.update("events", 400, 400)
        shown.update("deliveries", 10, 40)
    text = out.getvalue()
    frames = text.split(CLEAR_LINE)[1:]
    assert frames[0] == "events [" + "." * 40 + "]   0%  0 of 400 rows"
    assert frames[1] == "events [" + "#" * 20 + "." * 20 + "]  50%  200 of 400 rows, about 10 s left"
    assert frames[2] == "checkpoint\n" + frames[1]  # the note on its own line, the bar drawn again under it
    assert frames[3] == "events [" + "#" * 40 + "] 100%  400 rows\n"  # finished: stays as a line
    assert frames[4].startswith("deliveries [") and frames[4].endswith("10 of 40 rows\n")  # closed: a newline
    assert all(len(line) < 100 for line in text.replace(CLEAR_LINE, "\n").splitlines())


def _source_database(path: Path) -> str:
    url = f"sqlite:///{path}"

    async def fill() -> None:
        async with Store(url) as store:
            for n in range(3):
                chat = await store.chats.upsert("telegram", str(-100 - n), kind="group", title=None)
                await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=50)

    asyncio.run(fill())
    return url


def _copy_command(tmp_path: Path, target: str) -> tuple[list[str], dict[str, str]]:
    source = _source_database(tmp_path / "source.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERPWATCH_")}
    env.update({"PERPWATCH_DATABASE_URL": source, "COLUMNS": "100"})
    command = [sys.executable, "-m", "bot", "db", "copy", "--to", f"sqlite:///{tmp_path / target}"]
    return command, env


def test_db_copy_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    command, env = _copy_command(tmp_path, "on-a-terminal.db")
    leader, follower = pty.openpty()
    child = subprocess.Popen(  # noqa: S603
        command, stdout=follower, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _w, _x = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert child.wait(timeout=60) == 0
    shown = b"".join(chunks).decode()
    assert CLEAR_LINE in shown
    assert "subscriptions [" + "#" * 10 in shown and "100%  3 rows" in shown
    assert "copied " in shown


def test_db_copy_writes_plain_lines_into_a_pipe(tmp_path: Path) -> None:
    command, env = _copy_command(tmp_path, "through-a-pipe.db")
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False)  # noqa: S603
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "\r" not in done.stdout and "\x1b" not in done.stdout
    assert "chats: 3 rows" in lines and "subscriptions: 3 rows" in lines
    assert lines[-1].startswith("copied ")
