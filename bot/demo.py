"""`perpwatch demo`: the real bot, end to end, against the loopback venue the tests use.

Two fake exchange sockets (Binance and Aster format, `bot.demo_venue`) replay recorded-shape frames
(`bot/demo_frames`, package data); the real watchers, pipeline, SQLite outbox and dispatcher carry them to the
console. Nothing leaves this machine, no token is needed, and one frame is replayed twice to show that a
replay alerts nobody twice. It needs nothing from `tests`, so it runs from an installed wheel.
"""

from __future__ import annotations

import json
import logging
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.demo_venue import FakeForceOrderServer
from bot.settings import Settings
from perpwatch.clock import SYSTEM_CLOCK

if TYPE_CHECKING:
    from bot.app import PerpwatchApp

log = logging.getLogger(__name__)


def load_frames() -> list[dict[str, Any]]:
    text = resources.files("bot").joinpath("demo_frames/forceorder_replay.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _restamp(frame: dict[str, Any]) -> dict[str, Any]:
    """Replayed frames carry the time of the replay, as a live venue's would."""
    now_ms = int(SYSTEM_CLOCK.now().timestamp() * 1000)
    return {**frame, "E": now_ms, "o": {**frame["o"], "T": now_ms}}


async def run_demo(settings: Settings, *, rate: float = 8.0) -> None:
    from bot.app import PerpwatchApp

    frames = load_frames()
    with tempfile.TemporaryDirectory(prefix="perpwatch-demo-") as tmp:
        async with FakeForceOrderServer() as binance, FakeForceOrderServer() as aster:
            demo_settings = settings.model_copy(
                update={
                    "binance_ws_url": binance.url,
                    "aster_ws_url": aster.url,
                    "database_url": f"sqlite:///{Path(tmp) / 'demo.db'}",
                    "watchers": ["binance", "aster"],
                    "telegram_bot_token": None,
                    "discord_bot_token": None,
                }
            )
            async with PerpwatchApp(demo_settings) as app:
                await binance.wait_connected()
                await aster.wait_connected()
                log.info("demo: replaying %d frames at %.0f/s to two loopback venues", len(frames), rate)
                sent: list[dict[str, Any]] = []
                for i, frame in enumerate(frames):
                    stamped = _restamp(frame)
                    await (binance if i % 3 else aster).push(stamped)
                    sent.append(stamped)
                    await SYSTEM_CLOCK.sleep(1 / rate)
                await binance.push(sent[1])  # the venue re-sends a frame: accepted once, alerted once
                await _settle(app, frames=len(sent) + 1)
                stats = app.pipeline.stats
                log.info(
                    "demo: %d frames → %d events accepted, %d duplicate ignored, %d alerts sent",
                    len(sent) + 1,
                    stats.accepted,
                    stats.duplicates,
                    app.dispatcher.stats.sent,
                )


async def _settle(app: PerpwatchApp, *, frames: int, timeout_s: float = 10.0) -> None:
    """Until every frame was accepted (or recognised), held cascade growth written and every alert sent."""
    deadline = SYSTEM_CLOCK.monotonic() + timeout_s
    while SYSTEM_CLOCK.monotonic() < deadline:
        seen = app.pipeline.stats.accepted + app.pipeline.stats.duplicates
        settled = seen >= frames and not app.cascades.holding and await app.dispatcher.idle()
        if settled and not await app.store.outbox.pending_chats(limit=1):  # none held by pacing either
            return
        await SYSTEM_CLOCK.sleep(0.1)
