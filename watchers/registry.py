"""Every watcher the bot can run, one entry each: a new venue is one entry here, not edits to four lists.

An entry names the watcher (its name in `PERPWATCH_WATCHERS`), the settings its factory reads (field names
of the bot's settings, `PERPWATCH_<NAME>` in the environment), the factory, what it covers as
(topic, venue) pairs, and an optional note `/status` shows with it. The bot's settings take the known
names and the URL settings to validate from here; the app builds its watchers with `build_watchers`.
Settings are typed by Protocols declared beside each watcher, so nothing here imports the bot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from perpwatch.clock import Clock
from perpwatch.events import Topic, Venue
from watchers import bybit, hyperliquid, lighter, okx, pacifica
from watchers.account_poller import LIGHTER, PACIFICA, AccountPollTuning, AccountPollWatcher, AccountVenue
from watchers.base import Watcher
from watchers.buybacks import COVERS as BUYBACK_COVERS
from watchers.buybacks import NAME as BUYBACKS
from watchers.buybacks import BuybackTuning, BuybackWatcher
from watchers.forceorder import ForceOrderSettings, ForceOrderWatcher, sampling_note
from watchers.hyperliquid_node import HyperliquidNodeWatcher
from watchers.hyperliquid_whales import NAME as WHALES
from watchers.hyperliquid_whales import HyperliquidWhaleWatcher, WhaleTuning
from watchers.runtime import Runtime, WatcherContext
from watchers.venue_stream import TopicVenueWatcher, VenueStream
from watchers.ws import WS_SETTINGS, WsTuning

__all__ = ["REGISTRY", "URL_SETTINGS", "WATCHER_NAMES", "WatcherContext", "WatcherSpec", "build_watchers"]


@dataclass(frozen=True, slots=True)
class WatcherSpec:
    """One watcher the bot can run. `build` receives the bot's settings, which carry at least `settings`."""

    name: str
    settings: tuple[str, ...]
    build: Callable[[Any, WatcherContext], Watcher]
    covers: frozenset[tuple[Topic, Venue]]
    note: str | None = None


def _forceorder(venue: Venue, url_setting: str) -> WatcherSpec:
    def build(settings: ForceOrderSettings, context: WatcherContext) -> Watcher:
        return ForceOrderWatcher.from_context(settings, venue, context)

    return WatcherSpec(
        name=venue.value,
        settings=(url_setting, *WS_SETTINGS),
        build=build,
        covers=frozenset({(Topic.LIQUIDATION, venue)}),
        note=sampling_note(venue),
    )


def _topic_venue(stream: VenueStream[Any], note: str | None = None) -> WatcherSpec:
    name = stream.venue.value
    ws_setting, rest_setting = f"{name}_ws_url", f"{name}_rest_url"

    def build(settings: Any, context: WatcherContext) -> Watcher:
        ws_url, rest_url = getattr(settings, ws_setting), getattr(settings, rest_setting)
        return TopicVenueWatcher(stream, ws_url, rest_url, WsTuning.from_settings(settings), context)

    return WatcherSpec(
        name=name,
        settings=(ws_setting, rest_setting, *WS_SETTINGS),
        build=build,
        covers=frozenset({(Topic.LIQUIDATION, stream.venue)}),
        note=note,
    )


class _StateCursor:
    """The node reader's cursor in the watcher's durable state."""

    def __init__(self, context: WatcherContext) -> None:
        self.state = context.state

    async def load(self) -> dict[str, Any] | None:
        value = await self.state.get("node_fills_cursor")
        return dict(value) if isinstance(value, dict) else None

    async def save(self, cursor: dict[str, Any]) -> None:
        await self.state.put("node_fills_cursor", cursor)


def _hyperliquid() -> WatcherSpec:
    """The public `trades` stream (backstop liquidations only), or, with a node's fills directory set, every
    liquidation read from the node: never both, which would alert a backstop twice under two keys."""
    public = _topic_venue(hyperliquid.STREAM)
    info_setting = "hyperliquid_info_url"

    def build(settings: Any, context: WatcherContext) -> Watcher:
        if settings.hyperliquid_node_fills_dir is not None:
            return HyperliquidNodeWatcher.from_settings(
                settings, _StateCursor(context), clock=context.clock, name=context.name
            )
        watcher = TopicVenueWatcher(
            hyperliquid.STREAM,
            settings.hyperliquid_ws_url,
            getattr(settings, info_setting),
            WsTuning.from_settings(settings),
            context,
        )
        watcher.health.note = hyperliquid.NOTE
        return watcher

    return WatcherSpec(
        name=public.name,
        settings=(
            "hyperliquid_ws_url",
            info_setting,
            "hyperliquid_node_fills_dir",
            "hyperliquid_node_poll_s",
            *WS_SETTINGS,
        ),
        build=build,
        covers=public.covers,
        note=None,
    )


def _whales() -> WatcherSpec:
    """Watched wallets and whale trades. Its trades connection is the `hyperliquid` watcher's when that one
    streams (`build_watchers` joins them), else its own, which parses nothing else."""

    def build(settings: Any, context: WatcherContext) -> Watcher:
        watcher = HyperliquidWhaleWatcher(settings.hyperliquid_info_url, WhaleTuning.from_settings(settings), context)

        def own() -> Watcher:
            stream = TopicVenueWatcher(
                hyperliquid.STREAM,
                settings.hyperliquid_ws_url,
                settings.hyperliquid_info_url,
                WsTuning.from_settings(settings),
                context,
                name=f"{context.name}:trades",
                parse=False,
            )
            stream.add_consumer(watcher.consumer)
            return stream

        watcher.own_stream = own
        return watcher

    return WatcherSpec(
        name=WHALES,
        settings=(
            "hyperliquid_ws_url",
            "hyperliquid_info_url",
            "whale_trade_min_usd",
            "whale_weight_per_min",
            "whale_poll_s",
            "whale_near_poll_s",
            *WS_SETTINGS,
        ),
        build=build,
        covers=frozenset({(Topic.WHALE, Venue.HYPERLIQUID)}),
        note="Hyperliquid wallets on the watch lists, and trades above PERPWATCH_WHALE_TRADE_MIN_USD by anyone",
    )


def _accounts(spec: AccountVenue, url_setting: str, share_setting: str) -> WatcherSpec:
    """Watched wallets of a venue read by snapshot only: polls only the watched addresses that are the
    venue's kind (none watched, no request)."""

    def build(settings: Any, context: WatcherContext) -> Watcher:
        tuning = AccountPollTuning.from_settings(settings, getattr(settings, share_setting))
        return AccountPollWatcher(spec, getattr(settings, url_setting), tuning, context)

    name = spec.venue.value
    return WatcherSpec(
        name=f"{name}_accounts",
        settings=(
            url_setting,
            share_setting,
            "venue_accounts_poll_s",
            "venue_accounts_near_poll_s",
            "venue_accounts_absent_recheck_s",
        ),
        build=build,
        covers=frozenset({(Topic.WHALE, spec.venue)}),
        note={
            Venue.LIGHTER: "Watched 0x wallets that have a Lighter account (others asked again every few hours)",
            Venue.PACIFICA: "Watched Solana wallets' Pacifica positions (Pacifica publishes no liquidation price)",
        }.get(spec.venue),
    )


BUYBACK_URL_SETTINGS = (
    "hyperliquid_info_url",
    "aster_chain_rpc_url",
    "defillama_api_url",
    "lighter_explorer_url",
    "ethereum_rpc_url",
    "bsc_rpc_url",
    "arbitrum_rpc_url",
)
"""Every endpoint a buyback source may read; an EVM programme names its chain's among them."""


def _buybacks() -> WatcherSpec:
    """Every buyback programme in the store, each on its own poller; the ledger is the store's."""

    def build(settings: Any, context: WatcherContext) -> Watcher:
        if context.buybacks is None:
            raise ValueError("the buybacks watcher needs the store's buyback ledger (Runtime(buybacks=…))")
        urls = {name: getattr(settings, name) for name in BUYBACK_URL_SETTINGS}
        return BuybackWatcher(context.buybacks, urls, BuybackTuning.from_settings(settings), context)

    return WatcherSpec(
        name=BUYBACKS,
        settings=(*BUYBACK_URL_SETTINGS, "buyback_poll_s", "buyback_refresh_s"),
        build=build,
        covers=BUYBACK_COVERS,
        note="Buyback programmes (/buybacks list): each source's state is listed below",
    )


def _share_streams(built: Sequence[Watcher]) -> None:
    """One Hyperliquid `trades` connection, not two: the whale watcher reads the `hyperliquid` watcher's."""
    public = next((w for w in built if isinstance(w, TopicVenueWatcher) and w.spec is hyperliquid.STREAM), None)
    for watcher in built:
        if isinstance(watcher, HyperliquidWhaleWatcher) and public is not None:
            public.add_consumer(watcher.consumer)
            watcher.own_stream = None


REGISTRY: Mapping[str, WatcherSpec] = {
    spec.name: spec
    for spec in (
        _forceorder(Venue.BINANCE, "binance_ws_url"),
        _forceorder(Venue.ASTER, "aster_ws_url"),
        _topic_venue(bybit.STREAM),
        _topic_venue(okx.STREAM, okx.NOTE),
        _topic_venue(lighter.STREAM),
        _topic_venue(pacifica.STREAM),
        _hyperliquid(),
        _whales(),
        _accounts(LIGHTER, "lighter_account_url", "lighter_accounts_per_min"),
        _accounts(PACIFICA, "pacifica_positions_url", "pacifica_accounts_per_min"),
        _buybacks(),
    )
}

WATCHER_NAMES: tuple[str, ...] = tuple(REGISTRY)
"""The names `PERPWATCH_WATCHERS` accepts, in the order the registry lists them."""

URL_SETTINGS: tuple[str, ...] = tuple(
    dict.fromkeys(name for spec in REGISTRY.values() for name in spec.settings if name.endswith("_url"))
)
"""Every endpoint setting a watcher reads, for the bot's settings to validate as URLs."""


class WatcherSettings(Protocol):
    """What `build_watchers` itself reads; each entry's factory reads its own `settings` besides."""

    @property
    def watchers(self) -> Sequence[str]: ...


def build_watchers(
    settings: WatcherSettings,
    *,
    clock: Clock,
    session: aiohttp.ClientSession | None = None,
    runtime: Runtime | None = None,
) -> list[Watcher]:
    """One watcher per name in `settings.watchers`, in that order, each given its context of the shared
    runtime (made here from `clock` and `session` when none is given) and its entry's coverage and note.
    A settings object lacking what an entry reads is a wiring bug, refused here with the missing names
    rather than as an AttributeError deep in a factory."""
    if runtime is None:
        runtime = Runtime(clock=clock, session=session)
    built: list[Watcher] = []
    for name in settings.watchers:
        spec = REGISTRY.get(name)
        if spec is None:
            raise ValueError(f"unknown watcher {name!r}; known: {', '.join(WATCHER_NAMES)}")
        missing = [setting for setting in spec.settings if not hasattr(settings, setting)]
        if missing:
            raise TypeError(f"watcher {name!r} reads settings the given settings lack: {', '.join(missing)}")
        watcher = spec.build(settings, runtime.context(name))
        watcher.covers = spec.covers
        if spec.note is not None:  # a watcher that words its own note (the node reader) keeps it
            watcher.health.note = spec.note
        built.append(watcher)
    _share_streams(built)
    return built
