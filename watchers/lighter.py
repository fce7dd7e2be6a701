"""Lighter liquidations from the public per-market `trade/{market_id}` channels (pure functions, no I/O).

Facts (`/work/shared/research/exchange-apis.md` §0, §4, §6, §8.3; samples `payloads/lighter_ws_trade_ccxt.json`,
`payloads/lighter_orderBooks_real.json`):

- `wss://mainnet.zklighter.elliot.ai/stream` (`?readonly=true` bypasses region limits for read-only data);
  on connect `{"type":"connected",…}`; `{"type":"subscribe","channel":"trade/0"}`, one market per message (no
  all-market trade channel); replies use `:` (`"channel":"trade:0"`), first `subscribed/trade` (a replay of
  recent trades, so keys must survive a replay) then `update/trade`.
- Every trade message has `trades` and a separate `liquidation_trades` array; liquidation items carry
  `type:"liquidation"`, `trade_id`, `market_id`, `size` (base), `price`, `usd_amount`, `ask_account_id`,
  `bid_account_id`, `is_maker_ask`, `timestamp` (ms).
- **The liquidated account is the taker**: `is_maker_ask=false` ⇒ the taker sold ⇒ a LONG was liquidated (the
  ask account); `true` ⇒ a SHORT (the bid account) (measured on 15 events, belyjelli/ai-rates liqlighter.go).
- Heartbeat: idle connections are closed after 2 minutes; `{"type":"ping"}` → `{"type":"pong"}`; every ~50 s
  works.
- Limits: 200 client messages a minute and 50 in flight per IP (nautilustrader docs); 500 subscriptions per
  connection only from a third-party SDK (unverified).
- Reference: `GET /api/v1/orderBooks?filter=perp` → `{code:200, order_books:[{symbol, market_id, market_type,
  status,…}]}`; keep active perps; ids are not contiguous and are never derived.

Unsettled, handled conservatively:

- Whether ADL or other kinds appear in `liquidation_trades` with another `type` is unknown: any item whose
  `type` is not `"liquidation"` is refused (`UNKNOWN_KIND`), not reported.
- The WS error frame is not documented; an object carrying the REST `ResultCode` shape (`code` other than 200
  and a `message`) is taken as one and raises with its message (unverified on the WS).
- The notional is `size × price` (the event model's definition); the venue's own `usd_amount` is not used.
- The research gives no market web page, so events carry no link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from watchers import venuekit as kit
from watchers.instruments import UnknownInstrument
from watchers.poller import Request
from watchers.refdata import RefSource
from watchers.validate import Refused
from watchers.venue_stream import VenueStream
from watchers.ws import Heartbeat

SOURCE = "lighter_trade"
WS_URL = "wss://mainnet.zklighter.elliot.ai/stream"
WS_URL_READONLY = "wss://mainnet.zklighter.elliot.ai/stream?readonly=true"
REST_URL = "https://mainnet.zklighter.elliot.ai/api/v1/orderBooks"
REST_PARAMS: Mapping[str, str] = {"filter": "perp"}

CHANNELS_PER_FRAME = 1
SUBSCRIPTIONS_PER_CONNECTION = 500
"""Third-party SDK figure (df-lighter-core), unverified."""
MESSAGES_PER_MIN = 200
"""Client messages a minute per IP: subscribe frames beyond it must be paced by the sender."""
IN_FLIGHT = 50
HEARTBEAT_S = 50.0
"""Lighter closes idle connections after 120 s."""

_TRADE_TYPES = ("subscribed/trade", "update/trade")


@dataclass(frozen=True, slots=True)
class LighterRef:
    markets: Mapping[int, str]
    """Active perp `market_id` → symbol."""


def heartbeat_frame() -> str:
    return kit.compact({"type": "ping"})


def topics_for(ref: LighterRef) -> list[str]:
    return [f"trade/{market_id}" for market_id in sorted(ref.markets)]


def subscribe_frames(topics: Sequence[str]) -> list[str]:
    """One subscribe message per channel, at most `SUBSCRIPTIONS_PER_CONNECTION` for one connection."""
    if len(topics) > SUBSCRIPTIONS_PER_CONNECTION:
        raise ValueError(f"{len(topics)} channels exceed {SUBSCRIPTIONS_PER_CONNECTION} per connection")
    return [kit.compact({"type": "subscribe", "channel": kit.text(t, "lighter channel")}) for t in topics]


def is_control(frame: Any) -> bool:
    if not isinstance(frame, Mapping):
        return False
    if frame.get("type") in ("connected", "pong"):
        return True
    code = frame.get("code")
    if "type" not in frame and isinstance(code, int) and code != 200 and isinstance(frame.get("message"), str):
        raise ValueError(f"lighter error code={code}: {frame['message'][:200]}")
    return False


def parse_reference(body: Any) -> LighterRef:
    """`GET /api/v1/orderBooks[?filter=perp]`: active perp markets by id (spot and inactive rows skipped)."""
    body = kit.mapping(body, "orderBooks body")
    code = body.get("code")
    if isinstance(code, bool) or code != 200:
        raise ValueError(f"orderBooks code={code!r}: {str(body.get('message'))[:200]}")
    markets: dict[int, str] = {}
    for i, item in enumerate(kit.array(body.get("order_books"), "order_books")):
        item = kit.mapping(item, f"order_books[{i}]")
        market_id = kit.integer(item.get("market_id"), f"order_books[{i}].market_id")
        symbol = kit.text(item.get("symbol"), f"order_books[{i}].symbol")
        market_type = kit.text(item.get("market_type"), f"order_books[{i}].market_type")
        status = kit.text(item.get("status"), f"order_books[{i}].status")
        if market_type == "perp" and status == "active":
            markets[market_id] = symbol
    return LighterRef(markets)


def _market(channel: object) -> int:
    name = kit.text(channel, "lighter channel")
    kind, sep, number = name.partition(":")
    if kind != "trade" or not sep or not number.isascii() or not number.isdigit():
        raise ValueError(f"lighter channel {name[:60]!r} is not trade:<market_id>")
    return int(number)


def parse_frame(frame: Any, ref: LighterRef, *, now_ms: int | None = None) -> list[Event]:
    """The `liquidation_trades` of one `trade:{id}` message; its ordinary `trades` are ignored.

    The ccxt sample's trade (ETH, market 0, `size` 0.0346, `price` 3028.85, `is_maker_ask` false) read as a
    liquidation is a LONG of 0.0346 ETH liquidated on account 99349 (the ask side, the taker), notional
    104.79821. The key is the venue's `trade_id`. The whole frame is refused if any item is.
    """
    if is_control(frame):
        return []
    frame = kit.mapping(frame, "lighter frame")
    kind = frame.get("type")
    if kind not in _TRADE_TYPES:
        raise ValueError(f"unexpected lighter message type {str(kind)[:60]!r}")
    market_id = _market(frame.get("channel"))
    symbol = ref.markets.get(market_id)
    if symbol is None:
        raise UnknownInstrument(Venue.LIGHTER.value, str(market_id))
    kit.symbol(symbol, "lighter symbol")
    events: list[Event] = []
    for i, raw in enumerate(kit.array(frame.get("liquidation_trades"), "liquidation_trades")):
        where = f"liquidation_trades[{i}]"
        item = kit.mapping(raw, where)
        if item.get("type") != "liquidation":
            raise Refused(kit.UNKNOWN_KIND, f"{where}.type={str(item.get('type'))[:40]!r} is not liquidation")
        if kit.integer(item.get("market_id"), f"{where}.market_id") != market_id:
            raise ValueError(f"{where}.market_id={item.get('market_id')!r} is not the channel's {market_id}")
        trade_id = kit.integer(item.get("trade_id"), f"{where}.trade_id")
        maker_ask = item.get("is_maker_ask")
        if not isinstance(maker_ask, bool):
            raise ValueError(f"{where}.is_maker_ask={maker_ask!r} is not a boolean")
        side, taker_field = (
            (PositionSide.SHORT, "bid_account_id") if maker_ask else (PositionSide.LONG, "ask_account_id")
        )
        account = kit.integer(item.get(taker_field), f"{where}.{taker_field}")
        occurred_at = kit.ms_time(item.get("timestamp"), f"{where}.timestamp")
        size = kit.figure(item.get("size"), f"{where}.size")
        price = kit.figure(item.get("price"), f"{where}.price")
        usd = kit.notional(size, price, f"lighter liquidation of {symbol}")
        events.append(
            Event(
                key=f"lighter:trade:{market_id}:{trade_id}",
                topic=Topic.LIQUIDATION,
                source=SOURCE,
                venue=Venue.LIGHTER,
                symbol=symbol,
                usd=usd,
                occurred_at=occurred_at,
                subject=str(account),
                body=LiquidationBody(side=side, size=size, price=price, notional_usd=usd, account=str(account)),
            )
        )
    return kit.plausible(events, now_ms)


def reference(rest_url: str) -> RefSource[LighterRef]:
    return RefSource(
        "lighter.perp.order_books",
        parse=parse_reference,
        keys=lambda ref: (str(market_id) for market_id in ref.markets),
        request=Request(rest_url, params=REST_PARAMS),
    )


STREAM = VenueStream(
    venue=Venue.LIGHTER,
    reference=reference,
    topics_for=topics_for,
    subscribe_frames=subscribe_frames,
    per_frame=CHANNELS_PER_FRAME,
    per_connection=SUBSCRIPTIONS_PER_CONNECTION,
    heartbeat=Heartbeat(HEARTBEAT_S, heartbeat_frame()),
    is_control=is_control,
    parse_frame=parse_frame,
    budget_per_min=60,  # research §4: a standard account's 60 requests per rolling minute
)
