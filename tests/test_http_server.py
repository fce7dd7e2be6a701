"""The HTTP listener on a running bot: probes, the token, and what /metrics says after real traffic.

The bot runs against the loopback Binance and Telegram fakes, as in tests/test_e2e_telegram.py, so each
figure is one the real pipeline, dispatcher and watcher produced; metrics are read back with
prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import PerpwatchApp
from bot.cli import main
from bot.http import HttpStartError
from bot.settings import Settings
from storage import StorageUnavailable
from tests.conftest import TG_TOKEN, MakeSettings
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_telegram import sample_frame, subscribed, wait_alerts

HTTP_TOKEN = "http-token-Zq81"
REPO = Path(__file__).resolve().parents[1]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@asynccontextmanager
async def bot_with_http(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer, **overrides: Any
) -> AsyncIterator[PerpwatchApp]:
    settings = make_settings(
        telegram_bot_token=TG_TOKEN,
        telegram_api_url=telegram.base_url,
        binance_ws_url=binance.url,
        http_listen="127.0.0.1:0",
        **overrides,
    )
    async with PerpwatchApp(settings) as app:
        await binance.wait_connected()
        yield app


async def get(url: str, **kw: Any) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, **kw) as response:
        return response.status, await response.text(), dict(response.headers)


@pytest.mark.engines
async def test_metrics_after_alerts_a_replay_and_a_429(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with bot_with_http(make_settings, telegram, binance, http_token=HTTP_TOKEN) as app:
        assert app.http is not None
        await subscribed(telegram)
        await binance.push(sample_frame())
        await wait_alerts(telegram, 1)
        await binance.push(sample_frame())  # the venue repeats itself: a duplicate, no alert
        telegram.fail_next("sendMessage", kind="retry_after", retry_after=1)
        await binance.push(sample_frame(S="BUY", T=1568014461893))
        await wait_alerts(telegram, 2)
        while not await app.dispatcher.idle():  # noqa: ASYNC110 - both rows recorded as sent, not only shown
            await asyncio.sleep(0.01)
        budget = app.runtime.budgets.declare("https://api.example.test/info", 1200)
        await budget.acquire(20)
        budget.pause(30)

        status, text, headers = await get(f"{app.http.url}/metrics", headers={"Authorization": f"Bearer {HTTP_TOKEN}"})
        assert status == 200 and str(headers["Content-Type"]).startswith("text/plain")
        samples = parse(text)
        assert value(samples, "perpwatch_events_total", source="forceorder", result="accepted") == 2
        assert value(samples, "perpwatch_events_total", source="forceorder", result="duplicate") == 1
        assert value(samples, "perpwatch_deliveries_total", platform="telegram", state="sent") == 2
        assert value(samples, "perpwatch_deliveries_total", platform="telegram", state="parked") == 0
        assert value(samples, "perpwatch_frame_to_send_seconds_count", platform="telegram") == 2
        assert value(samples, "perpwatch_frame_to_send_seconds_bucket", platform="telegram", le="+Inf") == 2
        assert value(samples, "perpwatch_rate_limited_total", platform="telegram") == 1
        assert value(samples, "perpwatch_rate_limited_hold_seconds_total", platform="telegram") == 1
        assert value(samples, "perpwatch_backlog", platform="telegram") == 0
        assert value(samples, "perpwatch_watcher_up", watcher="binance") == 1
        assert value(samples, "perpwatch_watcher_state", watcher="binance", state="up") == 1
        assert value(samples, "perpwatch_watcher_reconnects_total", watcher="binance") == 0
        assert value(samples, "perpwatch_watcher_parse_errors_total", watcher="binance") == 0
        assert value(samples, "perpwatch_request_weight_used", host="api.example.test") == 20
        assert value(samples, "perpwatch_request_weight_limit", host="api.example.test") == 1200
        assert value(samples, "perpwatch_host_rate_limited_total", host="api.example.test") == 1
        assert value(samples, "perpwatch_host_rate_limited_hold_seconds_total", host="api.example.test") == 30
        assert 0 < value(samples, "perpwatch_host_paused_seconds", host="api.example.test") <= 30

        # The watcher goes down: the next scrape says so, read from its health at scrape time. (Its health
        # is set directly: a dropped connection would come back up within the test's backoff.)
        app.supervisor.watchers["binance"].health.mark_down("test")
        _, text, _ = await get(f"{app.http.url}/metrics?token={HTTP_TOKEN}")
        assert value(parse(text), "perpwatch_watcher_up", watcher="binance") == 0

    # Our own registry: nothing leaked into prometheus-client's global one.
    assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("perpwatch")]


async def test_the_token_guards_page_and_metrics_not_the_probes(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with bot_with_http(make_settings, telegram, binance, http_token=HTTP_TOKEN) as app:
        assert app.http is not None
        base = app.http.url
        for path in ("/", "/metrics"):
            for kw in ({}, {"headers": {"Authorization": "Bearer wrong"}}, {"params": {"token": "wrong"}}):
                status, body, headers = await get(base + path, **kw)
                assert status == 401, (path, kw)
                assert HTTP_TOKEN not in body and headers["WWW-Authenticate"].startswith("Bearer")
            assert (await get(base + path, headers={"Authorization": f"Bearer {HTTP_TOKEN}"}))[0] == 200
            assert (await get(base + path, params={"token": HTTP_TOKEN}))[0] == 200
        status, page, headers = await get(base + "/", params={"token": HTTP_TOKEN})
        assert HTTP_TOKEN not in page and TG_TOKEN not in page
        assert headers["Referrer-Policy"] == "no-referrer"
        assert (await get(base + "/healthz"))[:2] == (200, "ok\n")
        assert (await get(base + "/readyz"))[:2] == (200, "ready\n")


async def test_without_a_token_everything_is_open_and_without_listen_nothing_listens(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with bot_with_http(make_settings, telegram, binance) as app:
        assert app.http is not None
        assert (await get(app.http.url + "/"))[0] == 200
        assert (await get(app.http.url + "/metrics"))[0] == 200
    settings = make_settings(
        telegram_bot_token=TG_TOKEN, telegram_api_url=telegram.base_url, binance_ws_url=binance.url
    )
    assert PerpwatchApp(settings).http is None


async def test_readyz_waits_for_storage_and_a_platform_and_the_listener_stops_with_the_bot(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    settings = make_settings(
        telegram_bot_token=TG_TOKEN,
        telegram_api_url=telegram.base_url,
        binance_ws_url=binance.url,
        http_listen="127.0.0.1:0",
    )
    app = PerpwatchApp(settings)
    assert app.http is not None
    await app.http.start()  # as the first step of app.start(), before storage opens
    status, body, _ = await get(app.http.url + "/readyz")
    assert (status, body) == (503, "not ready: storage is not open\n")
    assert (await get(app.http.url + "/healthz"))[0] == 200
    await app.http.stop()
    await app.start()
    try:
        url = app.http.url
        status, body, _ = await get(url + "/readyz")
        assert (status, body) == (200, "ready\n")
    finally:
        await app.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(url + "/healthz")


async def test_a_scrape_reads_the_database_only_off_the_loop_and_survives_storage_away(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with bot_with_http(make_settings, telegram, binance) as app:
        assert app.http is not None
        await subscribed(telegram)
        while not await app.dispatcher.idle():  # noqa: ASYNC110 - the answer sent: from here only the scrape reads
            await asyncio.sleep(0.01)
        db = app.store.db
        on_loop: list[str] = []
        slow: list[str] = []
        real_fetch, real_slow = db.fetch, db.fetch_slow

        async def fetch(sql: str, params: Any = ()) -> Any:
            on_loop.append(sql)
            return await real_fetch(sql, params)

        async def fetch_slow(sql: str, params: Any = ()) -> Any:
            slow.append(sql)
            return await real_slow(sql, params)

        db.fetch, db.fetch_slow = fetch, fetch_slow  # type: ignore[method-assign]
        try:
            status, text, _ = await get(app.http.url + "/metrics")
            assert status == 200 and slow and not on_loop
            assert value(parse(text), "perpwatch_backlog", platform="telegram") == 0

            async def away(sql: str, params: Any = ()) -> Any:
                raise StorageUnavailable("database is locked")

            db.fetch_slow = away  # type: ignore[method-assign]
            app.http.metrics.reads.forget()  # no reuse: the scrape must meet the fault
            status, text, _ = await get(app.http.url + "/metrics")
            samples = parse(text)
            assert status == 200
            assert value(samples, "perpwatch_backlog", platform="telegram") == 0  # the last count, kept
            assert ("perpwatch_backlog_age_seconds", ()) in samples
            status, page, _ = await get(app.http.url + "/")
            assert status == 200 and "storage could not be read" in page and "binance" in page
        finally:
            db.fetch, db.fetch_slow = real_fetch, real_slow  # type: ignore[method-assign]


@pytest.mark.parametrize("listen", ["9108", "localhost", "127.0.0.1:99999", "http://127.0.0.1:9108", "127.0.0.1:"])
def test_bad_listen_address_is_refused_with_one_line(
    listen: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERPWATCH_HTTP_LISTEN", listen)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perpwatch: bad setting PERPWATCH_HTTP_LISTEN: expected host:port like 127.0.0.1:9108")
    assert len(err.splitlines()) == 1


def test_a_port_in_use_stops_the_start_with_one_line_before_anything_began(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("PERPWATCH_HTTP_LISTEN", f"127.0.0.1:{port}")
        monkeypatch.setenv("PERPWATCH_HTTP_TOKEN", HTTP_TOKEN)
        monkeypatch.setenv("PERPWATCH_WATCHERS", "binance")
        monkeypatch.setenv("PERPWATCH_BINANCE_WS_URL", "ws://127.0.0.1:9/")
        assert main(["run"]) == 1
    finally:
        taken.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"perpwatch: cannot listen on PERPWATCH_HTTP_LISTEN=127.0.0.1:{port}: ")
    assert "in use" in err[-1].lower()
    assert not (tmp_path / "data").exists()  # the listener starts first: no database was even created


async def test_http_start_error_names_the_setting(make_settings: MakeSettings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        app = PerpwatchApp(make_settings(http_listen=f"127.0.0.1:{taken.getsockname()[1]}"))
        with pytest.raises(HttpStartError, match="PERPWATCH_HTTP_LISTEN"):
            await app.start()


async def test_a_scrape_does_not_wait_long_for_a_count_that_hangs(
    make_settings: MakeSettings,
    telegram: FakeTelegramApi,
    binance: FakeForceOrderServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.http.metrics

    monkeypatch.setattr(bot.http.metrics, "BACKLOG_TIMEOUT_S", 0.05)
    async with bot_with_http(make_settings, telegram, binance) as app:
        assert app.http is not None
        never = asyncio.Event()

        async def hangs(sql: str, params: Any = ()) -> Any:
            await never.wait()

        monkeypatch.setattr(app.store.db, "fetch_slow", hangs)
        status, text, _ = await asyncio.wait_for(get(app.http.url + "/metrics"), 5)
        assert status == 200
        assert ("perpwatch_backlog_age_seconds", ()) not in parse(text)  # never counted: no age to claim
        assert value(parse(text), "perpwatch_watcher_up", watcher="binance") == 1


def test_http_settings_default_off_and_the_token_is_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    defaults = Settings(_env_file=None)
    assert (defaults.http_listen, defaults.http_token, defaults.log_format) == (None, None, "text")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"PERPWATCH_HTTP_LISTEN=[::1]:9108\nPERPWATCH_HTTP_TOKEN={HTTP_TOKEN}\n")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "PERPWATCH_HTTP_LISTEN=[::1]:9108\n" in out and "PERPWATCH_HTTP_TOKEN=***\n" in out
    assert HTTP_TOKEN not in out


async def test_perpwatch_run_serves_the_probes_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import sys

    with socket.socket() as probe:  # a free port for the child (the window before it binds is tiny)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        cwd=tmp_path,
        env={
            "PATH": "",
            "PYTHONPATH": str(REPO),
            "PERPWATCH_WATCHERS": "binance",
            "PERPWATCH_BINANCE_WS_URL": "ws://127.0.0.1:9/",
            "PERPWATCH_HTTP_LISTEN": f"127.0.0.1:{port}",
            "PERPWATCH_LOG_FORMAT": "json",
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ready = None
        for _ in range(300):  # a hang guard: the child starts in about a second
            try:
                ready = await get(f"http://127.0.0.1:{port}/readyz")
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        assert ready is not None and ready[:2] == (200, "ready\n")  # the console platform counts
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    logged = [json.loads(line) for line in err.decode().splitlines()]
    assert any(r["message"].startswith("http listening") for r in logged)
    assert any(r["message"] == "stopping" for r in logged)
