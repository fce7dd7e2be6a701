"""The one watcher registry: the settings take their watcher names and URL checks from it, the app builds
its watchers from it, and the setting names operators script against keep their names and meaning."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.settings import KNOWN_WATCHERS, Settings, SettingsError, env_name, load_settings
from perpwatch.clock import FrozenClock
from perpwatch.events import Topic, Venue
from watchers.forceorder import ForceOrderWatcher, sampling_note
from watchers.registry import REGISTRY, URL_SETTINGS, build_watchers


def test_the_known_watcher_names_are_the_registry_entries() -> None:
    names = (
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
    )
    assert KNOWN_WATCHERS == tuple(REGISTRY) == names
    assert load_settings(watchers="all").watchers == list(REGISTRY)
    with pytest.raises(SettingsError, match=r"PERPWATCH_WATCHERS: unknown watcher\(s\) edgex; .* binance, aster"):
        load_settings(watchers="binance,edgex")


def test_every_setting_an_entry_reads_is_a_setting_of_the_bot() -> None:
    fields = Settings.model_fields
    for spec in REGISTRY.values():
        assert spec.settings, spec.name
        assert [name for name in spec.settings if name not in fields] == [], spec.name


@pytest.mark.parametrize("name", URL_SETTINGS)
def test_every_endpoint_a_watcher_reads_is_checked_as_a_url(name: str) -> None:
    with pytest.raises(SettingsError, match=f"bad setting {env_name(name)}: expected an http"):
        load_settings(**{name: "ftp://example.com/stream"})


def test_the_setting_names_are_a_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "PERPWATCH_WATCHERS": "aster,binance",
        "PERPWATCH_BINANCE_WS_URL": "ws://127.0.0.1:1/binance",
        "PERPWATCH_ASTER_WS_URL": "ws://127.0.0.1:1/aster",
        "PERPWATCH_WS_PROBE_AFTER_S": "7",
        "PERPWATCH_WS_PROBE_TIMEOUT_S": "3",
        "PERPWATCH_WS_MAX_LIFETIME_S": "600",
        "PERPWATCH_WS_BACKOFF_INITIAL_S": "2",
        "PERPWATCH_WS_BACKOFF_MAX_S": "30",
    }
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    clock = FrozenClock()
    watchers = build_watchers(load_settings(), clock=clock)

    assert [w.name for w in watchers] == ["aster", "binance"]
    for watcher in watchers:
        assert isinstance(watcher, ForceOrderWatcher)
        assert watcher.stream.url == f"ws://127.0.0.1:1/{watcher.name}"
        tuning = watcher.stream.tuning
        assert (tuning.probe_after_s, tuning.probe_timeout_s, tuning.max_lifetime_s) == (7.0, 3.0, 600.0)
        assert (tuning.backoff_initial_s, tuning.backoff_max_s) == (2.0, 30.0)


@pytest.mark.parametrize("venue", [Venue.BINANCE, Venue.ASTER])
def test_a_built_watcher_carries_its_entry_and_the_shared_clock(venue: Venue) -> None:
    clock = FrozenClock()
    [watcher] = build_watchers(load_settings(watchers=venue.value), clock=clock)

    assert watcher.name == venue.value
    assert watcher.covers == REGISTRY[venue.value].covers == frozenset({(Topic.LIQUIDATION, venue)})
    assert watcher.health.note == sampling_note(venue)
    assert watcher.clock is watcher.health.clock is clock
    assert isinstance(watcher, ForceOrderWatcher)
    assert watcher.stream.clock is clock


def test_settings_that_lack_what_an_entry_reads_are_refused_by_name() -> None:
    @dataclass
    class Partial:
        watchers: tuple[str, ...] = ("binance",)
        binance_ws_url: str = "ws://127.0.0.1:1/"

    with pytest.raises(TypeError, match="'binance' reads settings the given settings lack: ws_probe_after_s"):
        build_watchers(Partial(), clock=FrozenClock())


def test_watchers_never_import_the_bot() -> None:
    code = "import sys, watchers.registry; print(sorted(m for m in sys.modules if m.split('.')[0] == 'bot'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    out = done.stdout
    assert out.strip() == "[]"


def test_every_entry_builds_from_the_default_settings_and_says_what_it_covers(tmp_path: Path) -> None:
    """Building opens nothing (no socket, no request), so every venue builds here from its real defaults."""
    from storage import Store
    from watchers.hyperliquid_node import NODE_NOTE, PUBLIC_FEED_NOTE, HyperliquidNodeWatcher
    from watchers.runtime import Runtime
    from watchers.venue_stream import TopicVenueWatcher

    runtime = Runtime(clock=FrozenClock(), buybacks=Store(tmp_path / "unopened.db").buybacks)  # opens nothing
    built = {w.name: w for w in build_watchers(load_settings(watchers="all"), clock=FrozenClock(), runtime=runtime)}
    assert list(built) == list(REGISTRY)
    assert built["buybacks"].covers and built["buybacks"].health.note
    for name in ("bybit", "okx", "lighter", "pacifica", "hyperliquid"):
        assert isinstance(built[name], TopicVenueWatcher)
        assert built[name].covers == frozenset({(Topic.LIQUIDATION, Venue(name))})
    assert built["hyperliquid"].health.note == PUBLIC_FEED_NOTE  # backstops only, and /status says so
    [node] = build_watchers(
        load_settings(watchers="hyperliquid", hyperliquid_node_fills_dir=str(tmp_path)), clock=FrozenClock()
    )
    assert isinstance(node, HyperliquidNodeWatcher) and node.name == "hyperliquid"
    assert node.health.note == NODE_NOTE
