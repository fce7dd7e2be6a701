"""Binance USD-M and Aster liquidations from the `!forceOrder@arr` stream.

Aster copied Binance's futures API down to the stream names, and the payloads are identical, so one parser
serves both and only the venue, the URL and the wording of the caveat differ. The stream is chosen by the
URL path, so nothing is subscribed; `LIST_SUBSCRIPTIONS` is sent only as a liveness probe, because a quiet
market (Aster saw 2 liquidations in 24 minutes) sends no data and protocol pings never surface as frames.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import aiohttp

from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import (
    MAX_USD,
    MIN_USD,
    SYMBOL_PATTERN,
    Event,
    LiquidationBody,
    PositionSide,
    Topic,
    Venue,
    parse_decimal,
    utc_from_ms,
)
from watchers.base import EventSink, Watcher
from watchers.runtime import WatcherContext
from watchers.validate import BAD_FIGURE, BAD_SYMBOL, BAD_TIME, IMPLAUSIBLE_USD, Refused
from watchers.ws import WsSettings, WsStream, WsTuning

logger = logging.getLogger(__name__)

SOURCE = "forceorder"
VENUES: tuple[Venue, ...] = (Venue.BINANCE, Venue.ASTER)
_VENUE_NAMES = {Venue.BINANCE: "Binance", Venue.ASTER: "Aster"}
# The venue's ORDER side: the engine sells to close a long and buys to close a short.
_LIQUIDATED = {"SELL": PositionSide.LONG, "BUY": PositionSide.SHORT}


# The venues' web pages for one perpetual market. Neither venue documents these in its API docs; they are
# the addresses their sites use, as linked by many public trading tools (e.g. binance.com/en/futures/BTCUSDT,
# asterdex.com/en/futures/v1/BTCUSDT). A link only: nothing here is fetched.
_MARKET_PAGES = {
    Venue.BINANCE: "https://www.binance.com/en/futures/{symbol}",
    Venue.ASTER: "https://www.asterdex.com/en/futures/v1/{symbol}",
}


def market_page(venue: Venue, symbol: str) -> str:
    return _MARKET_PAGES[venue].format(symbol=symbol)


def sampling_note(venue: Venue) -> str:
    return (
        f"{_VENUE_NAMES[venue]} pushes at most one liquidation per symbol per second (the latest), "
        "so counts and totals in a cascade are a floor."
    )


def list_subscriptions_probe(probe_id: int) -> str:
    """The cheapest control message that gets an answer (`{"result":["!forceOrder@arr"],"id":N}`)."""
    return json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": probe_id}, separators=(",", ":"))


def _decimal(order: Mapping[str, Any], field: str) -> Decimal:
    """A figure from its plain decimal string; an absent one is 0, so the fallback field is read instead."""
    raw = order.get(field)
    if raw is None:
        return Decimal(0)
    try:
        value = parse_decimal(raw, f"forceOrder o.{field}")
    except ValueError as exc:
        raise Refused(BAD_FIGURE, str(exc)) from None
    if value < 0:
        raise Refused(BAD_FIGURE, f"forceOrder o.{field}={raw!r} is negative")
    return value


def _trade_time(raw: object) -> datetime:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ValueError(f"forceOrder o.T={raw!r} is not a millisecond timestamp")
    try:
        return utc_from_ms(raw)
    except (OverflowError, OSError, ValueError):
        raise Refused(BAD_TIME, f"forceOrder o.T={raw!r} is no date") from None


def parse(frame: Mapping[str, Any], venue: Venue) -> list[Event]:
    """One `forceOrder` frame as events; control replies and other streams' frames give `[]`.

    The docs' sample (Binance and Aster print the same one)::

        {"e":"forceOrder","E":1568014460893,
         "o":{"s":"BTCUSDT","S":"SELL","o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9910",
              "X":"FILLED","l":"0.014","z":"0.014","T":1568014460893}}

    is a long of 0.014 BTC closed at 9910, notional 138.74. `o.S` is the liquidation *order's* side, so
    SELL means a long was liquidated. Size is the filled quantity `z` (the order quantity `q` if nothing is
    reported filled); price is the average fill `ap` (the order price `p` if `ap` is 0). USD-M contracts
    are quoted in USD stablecoins (USDT, USDC), counted as USD at par; the figure is in the quote asset,
    so a contract quoted in anything else would be reported in that asset, unconverted.

    The combined-stream wrapper `{"stream":…,"data":…}` is unwrapped. `!forceOrder@arr` delivers one
    object per frame despite its name (docs and live captures), so a JSON array is not a frame shape
    here. A frame that claims to be a forceOrder but cannot be read raises ValueError; one that reads but
    cannot be true or shown (a symbol outside `SYMBOL_PATTERN`, a figure that is not a plain decimal, a
    notional out of range) raises `Refused` with the reason it is counted under. Whether its time is near
    now is the stream's to judge, on its clock: this function is pure.
    """
    if "stream" in frame and isinstance(frame.get("data"), Mapping):
        frame = frame["data"]
    kind = frame.get("e")
    if kind is None and "id" in frame and ("result" in frame or "error" in frame):
        return []
    if kind != "forceOrder":
        if isinstance(kind, str):
            return []
        raise ValueError(f"not a forceOrder frame: keys {sorted(frame)[:8]}")
    order = frame.get("o")
    if not isinstance(order, Mapping):
        raise ValueError("forceOrder frame has no object 'o'")
    symbol, order_side, trade_ms = order.get("s"), order.get("S"), order.get("T")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError(f"forceOrder o.s={symbol!r} is not a symbol")
    if not SYMBOL_PATTERN.match(symbol):
        raise Refused(BAD_SYMBOL, f"forceOrder o.s={symbol[:60]!r} is not a plain venue symbol")
    if order_side not in _LIQUIDATED:
        raise ValueError(f"forceOrder o.S={order_side!r} is neither BUY nor SELL")
    occurred_at = _trade_time(trade_ms)
    size = _decimal(order, "z") or _decimal(order, "q")
    price = _decimal(order, "ap") or _decimal(order, "p")
    if not size or not price:
        raise ValueError(f"forceOrder for {symbol} has no positive size or price")
    notional = size * price
    if not MIN_USD <= notional <= MAX_USD:
        raise Refused(IMPLAUSIBLE_USD, f"forceOrder for {symbol} has a notional of {notional:f}")
    return [
        Event(
            key=f"{venue.value}:forceOrder:{symbol}:{trade_ms}:{order_side}:{size}:{price}",
            topic=Topic.LIQUIDATION,
            source=SOURCE,
            venue=venue,
            symbol=symbol,
            usd=notional,
            occurred_at=occurred_at,
            link=market_page(venue, symbol),
            body=LiquidationBody(
                side=_LIQUIDATED[order_side],
                size=size,
                price=price,
                notional_usd=notional,
                sampled=True,
            ),
        )
    ]


class ForceOrderSettings(WsSettings, Protocol):
    @property
    def binance_ws_url(self) -> str: ...
    @property
    def aster_ws_url(self) -> str: ...


class ForceOrderWatcher(Watcher):
    """Watches one venue's `!forceOrder@arr`; the watcher's name is the venue's ("binance", "aster").

    What it covers and its `/status` note are its registry entry's (`watchers.registry`), set when built.
    """

    def __init__(
        self,
        venue: Venue,
        url: str,
        tuning: WsTuning,
        *,
        clock: Clock = SYSTEM_CLOCK,
        session: aiohttp.ClientSession | Callable[[], aiohttp.ClientSession] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if venue not in VENUES:
            raise ValueError(f"forceOrder serves {', '.join(VENUES)}, not {venue}")
        super().__init__(venue.value, clock=clock)
        self.venue = venue
        self.stream = WsStream(
            label=venue.value,
            url=url,
            handler=self._handle,
            health=self.health,
            tuning=tuning,
            probe=list_subscriptions_probe,
            session=session,
            clock=clock,
            rand=rand,
        )

    @classmethod
    def from_settings(
        cls,
        settings: ForceOrderSettings,
        venue: Venue,
        *,
        clock: Clock = SYSTEM_CLOCK,
        session: aiohttp.ClientSession | None = None,
    ) -> ForceOrderWatcher:
        url = settings.binance_ws_url if venue is Venue.BINANCE else settings.aster_ws_url
        return cls(venue, url, WsTuning.from_settings(settings), clock=clock, session=session)

    @classmethod
    def from_context(cls, settings: ForceOrderSettings, venue: Venue, context: WatcherContext) -> ForceOrderWatcher:
        """As the registry builds it: the runtime's clock and shared session. `!forceOrder@arr` needs no
        reference data (the stream names every symbol), so none is asked for."""
        url = settings.binance_ws_url if venue is Venue.BINANCE else settings.aster_ws_url
        return cls(venue, url, WsTuning.from_settings(settings), clock=context.clock, session=context.session)

    async def run(self, sink: EventSink) -> None:
        await self.stream.run(sink)

    def _handle(self, frame: Any) -> list[Event]:
        if not isinstance(frame, Mapping):
            raise ValueError(f"expected a JSON object, got {type(frame).__name__}")
        if "error" in frame and "id" in frame:
            # An error reply to our probe means the venue no longer accepts it; say so, once per reply.
            logger.warning("control error venue=%s reply=%.200r", self.venue.value, frame)
        return parse(frame, self.venue)
