"""Hyperliquid backstop liquidations from the public `trades` stream (pure functions, no I/O).

Facts (`/work/shared/research/exchange-apis.md` §0, §1.1, §1.3-§1.5, §6, §8.5; samples
`payloads/hyperliquid_ws_trades_ccxt.json`, `hyperliquid_ws_subscriptionResponse_docs.json`,
`hyperliquid_metaAndAssetCtxs_docs.json`, `hyperliquid_vaultDetails_docs.json`):

- The official API has **no public market-wide liquidation feed**. Liquidations by market orders on the book
  look like ordinary trades. Only **backstop** liquidations are visible: the liquidator vault (an HLP child)
  takes the position over, so one of a trade's `users` (`[buyer, seller]`, docs WsTrade) is that vault.
- `wss://api.hyperliquid.xyz/ws`; `{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}`, one
  subscription per message; ack `{"channel":"subscriptionResponse",…}`; data `{"channel":"trades","data":
  [{coin, side, px, sz, hash, time, tid, users}]}`. Numbers are decimal strings, `time` ms, `tid` an int.
  Trades replay on subscribe: the key is `(coin, time, tid)` (docs: the globally unique key), so a replay
  is recognised.
- Heartbeat: the server closes a connection that sent nothing for 60 s; `{"method":"ping"}` →
  `{"channel":"pong"}` (SDK every 50 s, nktkas every 30 s). A legacy text frame "Websocket connection
  established." is ignored.
- Limits per IP: 10 connections, 30 new connections a minute, 1000 subscriptions, 2000 messages a minute.
- Reference: `POST /info {"type":"meta"}` → `universe[].name` (delisted entries skipped);
  `{"type":"vaultDetails","vaultAddress":HLP}` → `relationship.data.childAddresses`, then each child's
  `vaultDetails(...).name`. Which child liquidates changes over time, so the research says to resolve them
  at start-up and track every child named "Liquidator" (§1.5, §7).

Unsettled, and how it is handled:

- **The liquidated side.** The research quotes one third-party rule (napo99/TG-Bot, §1.5): "liquidator =
  buyer ⇒ short liquidated, liquidator = seller ⇒ long liquidated". That contradicts the research's own
  better-sourced facts: `users` is `[buyer, seller]` (docs), the two users of a trade are its two sides, and
  the liquidated account's own fill with side `A` (sold) is a long liquidated (§0, docs). A backstop is a
  trade between the liquidated account and the vault, so when the vault is the buyer the liquidated account
  is the seller, closing a long. The project's node-fills reader saw the same from the vault's side (an HLP
  child's backstop fill `"side":"B","dir":"Liquidated Cross Long"`, `watchers/hyperliquid_node.py`), and an
  ADL against the vault (the ADL'd account buying back a short from `0x2e3d…`) shows the vault holding longs.
  So this module reads **liquidator = buyer ⇒ LONG liquidated, liquidator = seller ⇒ SHORT liquidated**,
  against the quoted README; a live frame checked against `userFills` of the liquidated account would settle
  it. A trade between two liquidator vaults, or with no vault, is no liquidation here (`[]`).
- **Which vaults.** The brief asked for the HLP vault "and every child"; the research says HLP's children
  include market-making strategies (`0x010461c1…`, `0x31ca8395…`), whose every trade would then be reported
  as a liquidation. Only vaults whose own `vaultDetails.name` contains "Liquidator" are matched; the other
  children are kept in `HyperliquidRef.children` so the caller can fetch their details. A child whose details
  were not fetched is not matched (a missed backstop rather than a false alert).
- A trade without `users` (the 2024 ccxt sample predates the field) cannot be judged and raises ValueError.
- No error frame shape is documented: any channel other than `trades`, `pong` and `subscriptionResponse`
  raises ValueError carrying the frame's `data`, so a venue's complaint reaches the log.
- HIP-3 dexes have their own `meta`; merge their refs with `HyperliquidRef.merged`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from watchers import venuekit as kit
from watchers.base import describe
from watchers.hyperliquid_node import PUBLIC_FEED_NOTE, market_page
from watchers.instruments import UnknownInstrument
from watchers.poller import Request
from watchers.refdata import Fetch, RefSource
from watchers.venue_stream import VenueStream
from watchers.ws import Heartbeat

logger = logging.getLogger(__name__)

SOURCE = "hyperliquid_trades"
WS_URL = "wss://api.hyperliquid.xyz/ws"
REST_URL = "https://api.hyperliquid.xyz/info"
HLP_VAULT = "0xdfc24b077bc1425ad1dea75bcb6f8158e10df303"
"""HLP, the parent vault whose children include the liquidators (§1.5)."""

SUBSCRIPTIONS_PER_FRAME = 1
MAX_SUBSCRIPTIONS = 1000
"""Per IP (docs, current page)."""
MAX_CONNECTIONS = 10
NEW_CONNECTIONS_PER_MIN = 30
MESSAGES_PER_MIN = 2000
HEARTBEAT_S = 30.0
"""The server closes after 60 s of client silence; nktkas pings every 30 s, the SDK every 50 s."""

NOTE = PUBLIC_FEED_NOTE
"""Every event says the public feed shows backstop liquidations only."""

LEGACY_GREETING = "Websocket connection established."
LIQUIDATOR_NAME = "liquidator"
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True, slots=True)
class HyperliquidRef:
    coins: frozenset[str]
    """Perp coins of the universe, delisted ones left out."""
    liquidators: frozenset[str] = frozenset()
    """Lower-case addresses of vaults named "…Liquidator…"."""
    children: frozenset[str] = frozenset()
    """Every child address a parent vault listed (lower case), liquidator or not."""

    def merged(self, other: HyperliquidRef) -> HyperliquidRef:
        return HyperliquidRef(
            self.coins | other.coins, self.liquidators | other.liquidators, self.children | other.children
        )


def heartbeat_frame() -> str:
    return kit.compact({"method": "ping"})


def topics_for(ref: HyperliquidRef) -> list[str]:
    """`trades:<coin>` for every listed coin (a HIP-3 coin keeps its `dex:` prefix after the first colon):
    the main dex's first, then HIP-3 coins while the IP's `MAX_SUBSCRIPTIONS` leave room (those left out
    are followed by the whale reconcile alone)."""
    ordered = sorted(ref.coins, key=lambda coin: (":" in coin, coin))
    return [f"trades:{coin}" for coin in ordered[:MAX_SUBSCRIPTIONS]]


def subscribe_frames(topics: Sequence[str]) -> list[str]:
    """One subscribe message per `type:coin` topic; more than `MAX_SUBSCRIPTIONS` is refused."""
    if len(topics) > MAX_SUBSCRIPTIONS:
        raise ValueError(f"{len(topics)} subscriptions exceed Hyperliquid's {MAX_SUBSCRIPTIONS} per IP")
    frames = []
    for topic in topics:
        kind, sep, coin = topic.partition(":")
        if not sep or kind != "trades" or not coin:
            raise ValueError(f"hyperliquid topic {topic!r} is not trades:<coin>")
        frames.append(kit.compact({"method": "subscribe", "subscription": {"type": kind, "coin": coin}}))
    return frames


def is_control(frame: Any) -> bool:
    if frame == LEGACY_GREETING:
        return True
    return isinstance(frame, Mapping) and frame.get("channel") in ("pong", "subscriptionResponse")


def _address(value: object, name: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise ValueError(f"{name}={value!r} is not an address")
    return value.lower()


def _coins(meta: Any) -> frozenset[str]:
    meta = kit.mapping(meta, "meta")
    coins: set[str] = set()
    for i, item in enumerate(kit.array(meta.get("universe"), "meta.universe")):
        item = kit.mapping(item, f"meta.universe[{i}]")
        name = kit.text(item.get("name"), f"meta.universe[{i}].name")
        if item.get("isDelisted") is not True:
            coins.add(name)
    return frozenset(coins)


def parse_reference(meta: Any, vault_details: Sequence[Any] = ()) -> HyperliquidRef:
    """`meta` (or element 0 of `metaAndAssetCtxs`) and the `vaultDetails` bodies of HLP and its children."""
    if isinstance(meta, list) and len(meta) == 2:
        meta = meta[0]
    liquidators: set[str] = set()
    children: set[str] = set()
    for i, body in enumerate(vault_details):
        where = f"vaultDetails[{i}]"
        body = kit.mapping(body, where)
        address = _address(body.get("vaultAddress"), f"{where}.vaultAddress")
        name = body.get("name")
        if not isinstance(name, str):
            raise ValueError(f"{where}.name={name!r} is not a string")
        relationship = kit.mapping(body.get("relationship"), f"{where}.relationship")
        kind = relationship.get("type")
        if kind not in ("normal", "child", "parent"):
            raise ValueError(f"{where}.relationship.type={kind!r} is not normal, child or parent")
        if kind == "parent":
            data = kit.mapping(relationship.get("data"), f"{where}.relationship.data")
            listed = kit.array(data.get("childAddresses"), f"{where}.relationship.data.childAddresses")
            children.update(_address(a, f"{where}.relationship.data.childAddresses[{j}]") for j, a in enumerate(listed))
        if LIQUIDATOR_NAME in name.lower():
            liquidators.add(address)
    return HyperliquidRef(_coins(meta), frozenset(liquidators), frozenset(children))


def _liquidated(users: object, liquidators: frozenset[str], where: str) -> tuple[str, PositionSide] | None:
    """The liquidated account and its position side, or None when the trade is no backstop."""
    if not isinstance(users, list) or len(users) != 2:
        raise ValueError(f"{where}.users={str(users)[:120]} is not a [buyer, seller] pair")
    buyer, seller = (_address(u, f"{where}.users") for u in users)
    if (buyer in liquidators) == (seller in liquidators):
        return None
    # The vault bought: the liquidated account sold, closing a long (module docstring on the research's rule).
    return (seller, PositionSide.LONG) if buyer in liquidators else (buyer, PositionSide.SHORT)


def parse_frame(frame: Any, ref: HyperliquidRef, *, now_ms: int | None = None) -> list[Event]:
    """A `trades` frame's backstop liquidations; plain trades give nothing, control frames `[]`.

    The sample's trade (`BTC`, `px` 68517.0, `sz` 0.005, `tid` 981894269203506) with `users` naming a liquidator
    as buyer is a long of 0.005 BTC liquidated at 68517.0, notional 342.585 USDC (counted as USD). The whole
    frame is refused if any item is.
    """
    if is_control(frame):
        return []
    frame = kit.mapping(frame, "hyperliquid frame")
    channel = frame.get("channel")
    if channel != "trades":
        raise ValueError(f"unexpected hyperliquid channel {channel!r}: {str(frame.get('data'))[:200]}")
    events: list[Event] = []
    for i, raw in enumerate(kit.array(frame.get("data"), "trades data")):
        where = f"trades[{i}]"
        item = kit.mapping(raw, where)
        coin = kit.symbol(item.get("coin"), f"{where}.coin")
        if coin not in ref.coins:
            raise UnknownInstrument(Venue.HYPERLIQUID.value, coin)
        tid = kit.integer(item.get("tid"), f"{where}.tid")
        time_ms = item.get("time")
        occurred_at = kit.ms_time(time_ms, f"{where}.time")
        found = _liquidated(item.get("users"), ref.liquidators, where)
        if found is None:
            continue
        user, side = found
        size = kit.figure(item.get("sz"), f"{where}.sz")
        price = kit.figure(item.get("px"), f"{where}.px")
        usd = kit.notional(size, price, f"hyperliquid backstop of {coin}")
        events.append(
            Event(
                key=f"hyperliquid:trades:{coin}:{time_ms}:{tid}",
                topic=Topic.LIQUIDATION,
                source=SOURCE,
                venue=Venue.HYPERLIQUID,
                symbol=coin,
                usd=usd,
                occurred_at=occurred_at,
                link=market_page(coin),
                subject=user,
                body=LiquidationBody(side=side, size=size, price=price, notional_usd=usd, account=user, note=NOTE),
            )
        )
    return kit.plausible(events, now_ms)


INFO_WEIGHT = 20
"""`meta` and `vaultDetails` each weigh 20 of the IP's 1,200 a minute (research §1.4)."""
INFO_WEIGHT_PER_MIN = 1150
"""The IP's 1,200 less a reserve, as `hl_account.BUDGETED_PER_MIN` explains."""


HIP3_KEY = "hip3"
"""The stored copy's last element: `{"hip3": {dex: meta}}`, the HIP-3 dexes' universes."""


async def _hip3_metas(get: Fetch, info_url: str) -> dict[str, Any]:
    """Every HIP-3 dex's `meta` (`perpDexs`, then `meta` with `"dex"`, research §8.5). Secondary to the main
    dex: a failure here costs the HIP-3 coins of this refresh, never the main dex's markets. The trades
    stream is subscribed with the names the universe gives (`dex:COIN`), as every info request takes them;
    the WebSocket docs show no HIP-3 example, so a venue that refused them would show as subscription
    errors in `/status`, the main dex unaffected."""
    try:
        listed = await get(Request(info_url, method="POST", json_body={"type": "perpDexs"}, weight=INFO_WEIGHT))
        dexes = [kit.text(kit.mapping(d, "perpDexs[i]").get("name"), "perpDexs[i].name") for d in listed[1:]]
        metas = {}
        for dex in dexes:
            body = {"type": "meta", "dex": dex}
            metas[dex] = await get(Request(info_url, method="POST", json_body=body, weight=INFO_WEIGHT))
        return metas
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("HIP-3 dexes not read; main dex only until the next refresh error=%s", describe(exc))
        return {}


def _hip3_coins(metas: Any) -> frozenset[str]:
    """A dex's universe names its coins `dex:COIN` (research §8.5); a name without its own dex's prefix is
    not guessed at, and drops that dex."""
    coins: set[str] = set()
    for dex, meta in kit.mapping(metas, "hip3").items():
        names = _coins(meta)
        if all(name.startswith(f"{dex}:") for name in names):
            coins |= names
        else:
            logger.warning("HIP-3 dex %r lists coins without its prefix; left out", str(dex)[:40])
    return frozenset(coins)


def reference(info_url: str) -> RefSource[HyperliquidRef]:
    """The perp coins, and the liquidator vaults: HLP's details name its children, whose own details say
    which of them is a liquidator. The bodies, in that order, are the stored copy."""

    async def fetch(get: Fetch) -> list[Any]:
        meta = await get(Request(info_url, method="POST", json_body={"type": "meta"}, weight=INFO_WEIGHT))
        hlp = await get(
            Request(
                info_url,
                method="POST",
                json_body={"type": "vaultDetails", "vaultAddress": HLP_VAULT},
                weight=INFO_WEIGHT,
            )
        )
        bodies = [meta, hlp]
        for child in sorted(parse_reference(meta, [hlp]).children):
            bodies.append(
                await get(
                    Request(
                        info_url,
                        method="POST",
                        json_body={"type": "vaultDetails", "vaultAddress": child},
                        weight=INFO_WEIGHT,
                    )
                )
            )
        bodies.append({HIP3_KEY: await _hip3_metas(get, info_url)})
        return bodies

    def parse(bodies: Any) -> HyperliquidRef:
        items = list(kit.array(bodies, "bodies"))
        hip3: Any = {}
        if items and isinstance(items[-1], Mapping) and HIP3_KEY in items[-1]:  # copies stored before it: none
            hip3 = items.pop()[HIP3_KEY]
        meta, *details = items
        ref = parse_reference(meta, details)
        return ref.merged(HyperliquidRef(_hip3_coins(hip3)))

    return RefSource("hyperliquid.perps_and_liquidators", parse=parse, keys=lambda ref: ref.coins, fetch=fetch)


STREAM = VenueStream(
    venue=Venue.HYPERLIQUID,
    reference=reference,
    topics_for=topics_for,
    subscribe_frames=subscribe_frames,
    per_frame=SUBSCRIPTIONS_PER_FRAME,
    per_connection=MAX_SUBSCRIPTIONS,
    heartbeat=Heartbeat(HEARTBEAT_S, heartbeat_frame()),
    is_control=is_control,
    parse_frame=parse_frame,
    budget_per_min=INFO_WEIGHT_PER_MIN,
)
