"""Pacifica liquidations from the public per-symbol `trades` stream (pure functions, no I/O).

Facts (`/work/shared/research/exchange-apis.md` §0, §5.2, §6, §8.4; samples `payloads/pacifica_ws_trades_docs.json`,
`payloads/pacifica_info_docs.json`):

- `wss://ws.pacifica.fi/ws`; `{"method":"subscribe","params":{"source":"trades","symbol":"BTC"}}`, one symbol
  per message; push `{"channel":"trades","data":[{u, h, s, a, p, d, tc, t, li}]}`: `u` account (Solana
  base58), `h` history id, `s` symbol, `a` amount (base), `p` price, `d` open_long|open_short|close_long|
  close_short, `tc` trade cause, `t` ms, `li` exchange-wide nonce. The stream shows the **taker** side.
- **Liquidation marker**: `tc` ∈ {`market_liquidation`, `backstop_liquidation`}; `settlement` is ADL/other and
  `normal` an ordinary trade, neither reported. The taker of a liquidation is the liquidated account, so
  **`d` names the liquidated position: close_long ⇒ LONG, close_short ⇒ SHORT**.
- Heartbeat: closed if the client sends nothing for 60 s (and after 24 h); `{"method":"ping"}` →
  `{"channel":"pong"}`.
- Limits: 20 subscriptions per channel per connection; 100 connections per IP (older docs: 300).
- Reference: `GET https://api.pacifica.fi/api/v1/info` → `{success, data:[{symbol,…}], error, code}`; linear,
  USDC-margined markets, so USD = amount × price.

Unsettled, handled conservatively:

- A liquidation whose `d` opens a position (open_long/open_short) contradicts "the taker is the liquidated
  account": refused (`SIDE_MISMATCH`), never guessed. A `tc` the research does not list is refused
  (`UNKNOWN_KIND`).
- The subscribe ack is not in the research: a `{"channel":"subscribe"|"unsubscribe",…}` echo is taken as one
  (outside the research, unverified). No error frame is documented: any other channel raises ValueError
  carrying its `data`, so the venue's text reaches the log.
- Key from `(s, h, li)`: the research names `h`/`li` as the dedupe ids without saying which is unique alone.
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

SOURCE = "pacifica_trades"
WS_URL = "wss://ws.pacifica.fi/ws"
REST_URL = "https://api.pacifica.fi/api/v1/info"

SUBSCRIPTIONS_PER_FRAME = 1
SUBSCRIPTIONS_PER_CHANNEL_PER_CONNECTION = 20
CONNECTIONS_PER_IP = 100
HEARTBEAT_S = 30.0
"""Pacifica closes a connection whose client sent nothing for 60 s."""

LIQUIDATION_CAUSES = frozenset({"market_liquidation", "backstop_liquidation"})
OTHER_CAUSES = frozenset({"normal", "settlement"})
BACKSTOP_NOTE = "Pacifica backstop liquidation."
_CLOSED = {"close_long": PositionSide.LONG, "close_short": PositionSide.SHORT}
_OPENED = frozenset({"open_long", "open_short"})


@dataclass(frozen=True, slots=True)
class PacificaRef:
    symbols: frozenset[str]


def heartbeat_frame() -> str:
    return kit.compact({"method": "ping"})


def topics_for(ref: PacificaRef) -> list[str]:
    return [f"trades:{symbol}" for symbol in sorted(ref.symbols)]


def per_connection(topics: Sequence[str]) -> list[list[str]]:
    """Topics split so that no connection holds more than 20 `trades` subscriptions."""
    return kit.chunks(topics, SUBSCRIPTIONS_PER_CHANNEL_PER_CONNECTION)


def subscribe_frames(topics: Sequence[str]) -> list[str]:
    """One subscribe message per `trades:<symbol>`, at most 20 for one connection (see `per_connection`)."""
    if len(topics) > SUBSCRIPTIONS_PER_CHANNEL_PER_CONNECTION:
        raise ValueError(
            f"{len(topics)} trades subscriptions exceed {SUBSCRIPTIONS_PER_CHANNEL_PER_CONNECTION} per connection"
        )
    frames = []
    for topic in topics:
        source, sep, symbol = topic.partition(":")
        if source != "trades" or not sep or not symbol:
            raise ValueError(f"pacifica topic {topic!r} is not trades:<symbol>")
        frames.append(kit.compact({"method": "subscribe", "params": {"source": source, "symbol": symbol}}))
    return frames


def is_control(frame: Any) -> bool:
    return isinstance(frame, Mapping) and frame.get("channel") in ("pong", "subscribe", "unsubscribe")


def parse_reference(body: Any) -> PacificaRef:
    """`GET /api/v1/info` in its envelope form: every market's symbol."""
    body = kit.mapping(body, "info body")
    if body.get("success") is not True:
        raise ValueError(f"info success={body.get('success')!r}: {str(body.get('error'))[:200]}")
    symbols = {
        kit.text(kit.mapping(item, f"data[{i}]").get("symbol"), f"data[{i}].symbol")
        for i, item in enumerate(kit.array(body.get("data"), "data"))
    }
    return PacificaRef(frozenset(symbols))


def parse_frame(frame: Any, ref: PacificaRef, *, now_ms: int | None = None) -> list[Event]:
    """The liquidations among one `trades` push; ordinary and settlement trades give nothing.

    The docs' sample (`BTC`, `a` 0.00001, `p` 89471, `d` close_short, `tc` normal) is an ordinary trade; with
    `tc: market_liquidation` it is a SHORT of 0.00001 BTC liquidated at 89471 on the sample's account, notional
    0.89471 USDC. The whole frame is refused if any item is.
    """
    if is_control(frame):
        return []
    frame = kit.mapping(frame, "pacifica frame")
    channel = frame.get("channel")
    if channel != "trades":
        raise ValueError(f"unexpected pacifica channel {str(channel)[:60]!r}: {str(frame.get('data'))[:200]}")
    events: list[Event] = []
    for i, raw in enumerate(kit.array(frame.get("data"), "trades data")):
        where = f"trades[{i}]"
        item = kit.mapping(raw, where)
        symbol = kit.symbol(item.get("s"), f"{where}.s")
        if symbol not in ref.symbols:
            raise UnknownInstrument(Venue.PACIFICA.value, symbol)
        cause = item.get("tc")
        if cause in OTHER_CAUSES:
            continue
        if cause not in LIQUIDATION_CAUSES:
            raise Refused(kit.UNKNOWN_KIND, f"{where}.tc={str(cause)[:40]!r} is no trade cause the research lists")
        direction = item.get("d")
        if direction in _OPENED:
            raise Refused(kit.SIDE_MISMATCH, f"{where}: a {cause} whose taker side is {direction}")
        if direction not in _CLOSED:
            raise ValueError(f"{where}.d={str(direction)[:40]!r} is not a trade side")
        history_id = kit.integer(item.get("h"), f"{where}.h")
        nonce = kit.integer(item.get("li"), f"{where}.li")
        account = kit.text(item.get("u"), f"{where}.u")
        occurred_at = kit.ms_time(item.get("t"), f"{where}.t")
        size = kit.figure(item.get("a"), f"{where}.a")
        price = kit.figure(item.get("p"), f"{where}.p")
        usd = kit.notional(size, price, f"pacifica liquidation of {symbol}")
        events.append(
            Event(
                key=f"pacifica:trades:{symbol}:{history_id}:{nonce}",
                topic=Topic.LIQUIDATION,
                source=SOURCE,
                venue=Venue.PACIFICA,
                symbol=symbol,
                usd=usd,
                occurred_at=occurred_at,
                subject=account,
                body=LiquidationBody(
                    side=_CLOSED[direction],
                    size=size,
                    price=price,
                    notional_usd=usd,
                    account=account,
                    note=BACKSTOP_NOTE if cause == "backstop_liquidation" else None,
                ),
            )
        )
    return kit.plausible(events, now_ms)


def reference(rest_url: str) -> RefSource[PacificaRef]:
    return RefSource("pacifica.markets", parse=parse_reference, keys=lambda ref: ref.symbols, request=Request(rest_url))


STREAM = VenueStream(
    venue=Venue.PACIFICA,
    reference=reference,
    topics_for=topics_for,
    subscribe_frames=subscribe_frames,
    per_frame=SUBSCRIPTIONS_PER_FRAME,
    per_connection=SUBSCRIPTIONS_PER_CHANNEL_PER_CONNECTION,
    heartbeat=Heartbeat(HEARTBEAT_S, heartbeat_frame()),
    is_control=is_control,
    parse_frame=parse_frame,
    budget_per_min=20,  # research §5.2: 100 credits a minute unidentified, heavy GETs up to 12 credits
)
