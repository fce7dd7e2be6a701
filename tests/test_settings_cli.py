"""Settings, the command line, the console sink and the demo, as an operator meets them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import PerpwatchApp
from bot.cli import main
from bot.settings import Settings, env_name
from tests.conftest import MakeSettings, eventually
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import DOCS_T, RUN_MS, sample_frame

REPO = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.M))
    compose_only = {"POSTGRES_PASSWORD"}  # compose.yaml's, not the bot's: it reaches the bot as PGPASSWORD
    assert set(listed) - compose_only == {env_name(name) for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        comment_above = text.split(f"\n{env_name(name)}=")[0].rstrip().splitlines()[-1]
        assert comment_above.startswith("#"), f"{env_name(name)} has no comment"
        if isinstance(field.default, str):
            assert listed[env_name(name)] == field.default, env_name(name)


def test_fixed_setting_names_and_real_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.database_url == "sqlite:///data/perpwatch.db"
    assert settings.binance_ws_url == "wss://fstream.binance.com/market/ws/!forceOrder@arr"
    assert settings.aster_ws_url == "wss://fstream.asterdex.com/ws/!forceOrder@arr"
    assert settings.discord_api_url == "https://discord.com/api/v10"
    assert settings.discord_gateway_url == "wss://gateway.discord.gg/"
    assert settings.bybit_ws_url == "wss://stream.bybit.com/v5/public/linear"
    assert settings.bybit_rest_url == "https://api.bybit.com/v5/market/instruments-info"
    assert settings.okx_ws_url == "wss://ws.okx.com:8443/ws/v5/public"
    assert settings.okx_rest_url == "https://www.okx.com/api/v5/public/instruments"
    assert settings.lighter_ws_url == "wss://mainnet.zklighter.elliot.ai/stream"
    assert settings.lighter_rest_url == "https://mainnet.zklighter.elliot.ai/api/v1/orderBooks"
    assert settings.pacifica_ws_url == "wss://ws.pacifica.fi/ws"
    assert settings.pacifica_rest_url == "https://api.pacifica.fi/api/v1/info"
    assert settings.hyperliquid_ws_url == "wss://api.hyperliquid.xyz/ws"
    assert settings.hyperliquid_info_url == "https://api.hyperliquid.xyz/info"
    assert settings.hyperliquid_node_fills_dir is None
    assert settings.watchers == [
        "binance",
        "aster",
        "bybit",
        "okx",
        "lighter",
        "pacifica",
        "hyperliquid",
        "hyperliquid_whales",
        "lighter_accounts",
        "pacifica_accounts",
        "buybacks",
    ]
    assert settings.ethereum_rpc_url == "https://ethereum.publicnode.com"
    assert settings.buyback_poll_s == 300 and settings.defillama_api_url == "https://api.llama.fi"
    assert settings.lighter_account_url == "https://mainnet.zklighter.elliot.ai/api/v1/account"
    assert settings.pacifica_positions_url == "https://api.pacifica.fi/api/v1/positions"
    assert settings.whale_trade_min_usd == 1_000_000 and settings.whale_weight_per_min == 600
    assert (settings.whale_poll_s, settings.whale_near_poll_s) == (60, 10)
    assert settings.telegram_bot_token is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PERPWATCH_CONSOLE_FORMAT", "xml", "bad setting PERPWATCH_CONSOLE_FORMAT: Input should be 'text' or 'jsonl'"),
        ("PERPWATCH_WATCHERS", "binance,ftx", "bad setting PERPWATCH_WATCHERS: unknown watcher(s) ftx"),
        ("PERPWATCH_CONSOLE_MIN_USD", "lots", "bad setting PERPWATCH_CONSOLE_MIN_USD"),
        ("PERPWATCH_DATABASE_URL", "postgres://x", "bad setting PERPWATCH_DATABASE_URL: names no database"),
        ("PERPWATCH_DATABASE_URL", "mysql://db/x", "bad setting PERPWATCH_DATABASE_URL: has an unknown scheme 'mysql'"),
        ("PERPWATCH_DATABASE_URL", "data/x.db", "bad setting PERPWATCH_DATABASE_URL: expected sqlite:///"),
        (
            "PERPWATCH_DATABASE_URL",
            "postgresql://bot:s3cret@db:port/x",
            "bad setting PERPWATCH_DATABASE_URL: is not a valid PostgreSQL URL: postgresql://bot:***@db:port/x",
        ),
        ("PERPWATCH_ADMIN_IDS", "alice", "bad setting PERPWATCH_ADMIN_IDS: bad admin id 'alice'"),
        ("PERPWATCH_TELEGRAM_API_URL", "api.telegram.org", "bad setting PERPWATCH_TELEGRAM_API_URL: expected"),
        ("PERPWATCH_WS_PROBE_AFTER_S", "-1", "bad setting PERPWATCH_WS_PROBE_AFTER_S"),
        ("PERPWATCH_CASCADE_WINDOW_S", "0", "bad setting PERPWATCH_CASCADE_WINDOW_S"),
        ("PERPWATCH_CASCADE_MIN_USD", "lots", "bad setting PERPWATCH_CASCADE_MIN_USD"),
        ("PERPWATCH_HYPERLIQUID_NODE_POLL_S", "0", "bad setting PERPWATCH_HYPERLIQUID_NODE_POLL_S"),
        ("PERPWATCH_BYBIT_WS_URL", "stream.bybit.com", "bad setting PERPWATCH_BYBIT_WS_URL: expected"),
        ("PERPWATCH_WHALE_WEIGHT_PER_MIN", "5000", "bad setting PERPWATCH_WHALE_WEIGHT_PER_MIN"),
        ("PERPWATCH_WHALE_TRADE_MIN_USD", "0", "bad setting PERPWATCH_WHALE_TRADE_MIN_USD"),
        ("PERPWATCH_WHALE_NEAR_POLL_S", "1", "bad setting PERPWATCH_WHALE_NEAR_POLL_S"),
    ],
)
def test_bad_setting_stops_startup_with_one_clear_line(
    name: str,
    value: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv(name, value)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"perpwatch: {expected}")
    assert "s3cret" not in err


def test_config_masks_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("TELEGRAM_BOT_TOKEN=999:SECRET-FROM-DOTENV\nPERPWATCH_WATCHERS=aster\n")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^TELEGRAM_BOT_TOKEN=\*\*\*$", out, re.M) and "SECRET-FROM-DOTENV" not in out
    assert "PERPWATCH_WATCHERS=aster" in out  # .env was read


async def test_console_jsonl_prints_one_object_per_alert_above_the_floor(
    make_settings: MakeSettings, binance: FakeForceOrderServer
) -> None:
    stream = io.StringIO()
    settings = make_settings(binance_ws_url=binance.url, console_format="jsonl", console_min_usd="1000")
    async with PerpwatchApp(settings, console_stream=stream) as app:
        await binance.wait_connected()
        await binance.push(sample_frame())  # $138.74: under the console floor
        await binance.push(sample_frame(T=1568014470000, q="1", z="1", S="BUY"))  # $9,910
        await eventually(lambda: app.dispatcher.stats.sent >= 1 and app.pipeline.stats.accepted == 2)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1
    alert = lines[0]
    assert {k: alert[k] for k in ("topic", "venue", "symbol", "side", "usd")} == {
        "topic": "liquidation",
        "venue": "binance",
        "symbol": "BTCUSDT",
        "side": "short",
        "usd": "9910",
    }
    assert alert["key"].startswith(f"binance:forceOrder:BTCUSDT:{RUN_MS + 1568014470000 - DOCS_T}")
    assert "BTCUSDT SHORT liquidated on Binance" in alert["text"]


def test_demo_shows_alerts_with_no_network_or_tokens(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--rate", "200"],
        cwd=tmp_path,
        env={"PATH": "", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # The console hears every topic: the demo's 1000PEPE burst opens cascades; the Binance one carries the
    # four 1000PEPE singles after it opened (folded), and both print their growth as updates of one message.
    assert proc.stdout.count("liquidated on") == 36
    assert "🌊 Liquidation cascade growing: 1000PEPEUSDT on Binance" in proc.stdout
    assert "(update of message" in proc.stdout
    printed = len(re.findall(r"^(?:🟥|🟩|🟧|🌊|\(update of message)", proc.stdout, re.M))
    assert f"41 frames → 40 events accepted, 1 duplicate ignored, {printed} alerts sent" in proc.stderr


def test_readme_command_table_matches_help() -> None:
    from bot.commands import COMMANDS

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(/[a-z]+[^`]*)` \|", readme, re.M)
    assert rows == [c.usage for c in COMMANDS]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_rejected_telegram_token_stops_run_with_one_clear_line(
    telegram: FakeTelegramApi, tmp_path: Path, log_format: str
) -> None:
    wrong = "999999:WRONG-TOKEN"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=tmp_path,
        env={
            "PATH": "",
            "PYTHONPATH": str(REPO),
            "TELEGRAM_BOT_TOKEN": wrong,
            "PERPWATCH_TELEGRAM_API_URL": telegram.base_url,
            "PERPWATCH_WATCHERS": "binance",
            "PERPWATCH_BINANCE_WS_URL": "ws://127.0.0.1:9/",
            "PERPWATCH_LOG_FORMAT": log_format,
            "PERPWATCH_LOG_LEVEL": "DEBUG",  # every library's lines too: none may carry the token
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    *logged, last = err.decode().strip().splitlines()
    assert last == "perpwatch: Telegram rejected TELEGRAM_BOT_TOKEN (check it with @BotFather)"
    assert "WRONG-TOKEN" not in err.decode() + out.decode()
    assert logged, "the run logged nothing: the mask was not exercised"
    if log_format == "json":  # one object per line, every line
        assert all(set(json.loads(line)) >= {"time", "level", "logger", "message"} for line in logged)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_formats_carry_the_same_fields_with_secrets_masked(log_format: str) -> None:
    from bot.logs import make_handler

    secret = "123456:SECRET-in-a-url"
    stream = io.StringIO()
    logger = logging.getLogger(f"perpwatch.test_logs.{log_format}")
    logger.propagate = False
    logger.handlers[:] = [make_handler(stream, secrets=[secret], fmt=log_format)]  # type: ignore[arg-type]
    try:
        logger.warning("request failed url=%s attempt=%d", f"https://api.telegram.org/bot{secret}/getMe", 3)
        try:
            raise RuntimeError(f"token {secret} refused")
        except RuntimeError:
            logger.exception("send failed chat=%d", 7)
    finally:
        logger.handlers.clear()
    text = stream.getvalue()
    assert secret not in text and "SECRET" not in text
    if log_format == "text":
        first, second = re.findall(rf"^\S+ \S+ (\w+) ({re.escape(logger.name)}): (.*)$", text, re.M)
        assert first == ("WARNING", logger.name, "request failed url=https://api.telegram.org/bot***/getMe attempt=3")
        assert second == ("ERROR", logger.name, "send failed chat=7")
        assert "RuntimeError: token *** refused" in text  # the traceback follows its line
        return
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2  # a traceback stays inside its record
    assert [(r["level"], r["logger"], r["message"]) for r in lines] == [
        ("WARNING", logger.name, "request failed url=https://api.telegram.org/bot***/getMe attempt=3"),
        ("ERROR", logger.name, "send failed chat=7"),
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", lines[0]["time"])  # as the text format's asctime
    assert "exception" not in lines[0] and "RuntimeError: token *** refused" in lines[1]["exception"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://", "http://[::1", "ftp://example.com", "x"])
def test_malformed_urls_are_refused_at_startup(url: str) -> None:
    from bot.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="bad setting PERPWATCH_TELEGRAM_API_URL: expected an http"):
        load_settings(_env_file=None, telegram_api_url=url)


def test_transport_errors_never_carry_the_token() -> None:
    from bot.platforms.telegram_http import without_token

    text = "Cannot connect to host x:1 [http://127.0.0.1:1/bot123456:SECRET-abc/getMe]"
    assert without_token(text) == "Cannot connect to host x:1 [http://127.0.0.1:1/bot***/getMe]"
