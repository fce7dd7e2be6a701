"""Bybit v5 liquidations from the public `allLiquidation.{symbol}` topics (pure functions, no I/O).

Facts (`/work/shared/research/exchange-apis.md` §0, §3.2, §6, §8.1; sample
`payloads/bybit_allLiquidation_docs.json`):

- `wss://stream.bybit.com/v5/public/linear`, `{"op":"subscribe","args":["allLiquidation.BTCUSDT",…]}`, one
  topic per symbol (no all-market topic). A request's args may be at most 21,000 characters; a public
  collector chunks 200 topics a frame (belyjelli/ai-rates liqbybit.go). No per-connection topic cap is given.
- Frame `{topic, type:"snapshot", ts, data:[{T: ms, s, S: "Buy"|"Sell", v: base size, p: bankruptcy price}]}`,
  pushed every 500 ms, every liquidation (not sampled).
- **`S` is the POSITION side: Buy ⇒ a long was liquidated**, Sell ⇒ a short (docs; confirmed by an
  order-book measurement in liqbybit.go). The opposite of Binance's order side.
- Heartbeat: `{"op":"ping"}` every 20 s; the reply carries `"op":"ping"` and `"ret_msg":"pong"`.
- Reference data: `GET /v5/market/instruments-info?category=linear&limit=1000`, paged by
  `result.nextPageCursor` (`""` on the last page); only `Trading` symbols by default.

Unsettled, handled conservatively:

- Inverse contracts: the unit of `v` is not documented for them (§8.10), so only `category=linear` bodies
  are accepted and only the linear URL is offered; an inverse body is refused.
- The subscribe ack's shape is not in the research beyond the pong's `op`/`ret_msg`. Any object with an
  `op` and no `topic` is control; its `success` flag (outside the research) is read only so that an explicit
  `false` fails loudly with the venue's `ret_msg` instead of passing silently.
- `p` is the bankruptcy price, not an average fill: the price and notional use it, and the body says so.
- The research gives no market web page for Bybit, so events carry no link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue
from watchers import venuekit as kit
from watchers.instruments import UnknownInstrument
from watchers.poller import Request
from watchers.refdata import Fetch, RefSource
from watchers.venue_stream import VenueStream
from watchers.ws import Heartbeat

SOURCE = "bybit_allliquidation"
WS_URL = "wss://stream.bybit.com/v5/public/linear"
REST_URL = "https://api.bybit.com/v5/market/instruments-info"
REST_PARAMS: Mapping[str, str] = {"category": "linear", "limit": "1000"}
"""`limit` is 1-1000 (default 500); pass `cursor=<nextPageCursor>` for the next page."""

MAX_ARGS_CHARS = 21_000
"""Bybit's cap on one subscribe request's args, in characters (counted here as the JSON array's length)."""
TOPICS_PER_FRAME = 200
"""The chunk a public collector uses (liqbybit.go); well inside `MAX_ARGS_CHARS` for real symbols."""
TOPICS_PER_CONNECTION: int | None = None
"""Not documented for public topics (research §3.2): no cap is enforced here."""

HEARTBEAT_S = 20.0
TOPIC_PREFIX = "allLiquidation."
PRICE_NOTE = "Bybit reports the bankruptcy price, not the fill price; the notional uses it."

_LIQUIDATED = {"Buy": PositionSide.LONG, "Sell": PositionSide.SHORT}
"""`S` is the position side (docs): Buy ⇒ a long was liquidated."""


@dataclass(frozen=True, slots=True)
class BybitRef:
    """One page (or several merged) of linear instruments: the `Trading` symbols, and the cursor of the next
    page (None on the last)."""

    symbols: frozenset[str]
    next_cursor: str | None = None

    def merged(self, page: BybitRef) -> BybitRef:
        """This page's symbols with the next page's, and the next page's cursor."""
        return BybitRef(self.symbols | page.symbols, page.next_cursor)


def heartbeat_frame() -> str:
    return kit.compact({"op": "ping"})


def topics_for(ref: BybitRef) -> list[str]:
    return [f"{TOPIC_PREFIX}{symbol}" for symbol in sorted(ref.symbols)]


def subscribe_frames(topics: Sequence[str]) -> list[str]:
    """Subscribe requests of at most `TOPICS_PER_FRAME` topics and `MAX_ARGS_CHARS` characters of args."""
    frames: list[str] = []
    batch: list[str] = []
    for topic in topics:
        if len(kit.compact([topic])) > MAX_ARGS_CHARS:
            raise ValueError(f"topic {topic[:60]!r}… alone exceeds {MAX_ARGS_CHARS} characters")
        if batch and (len(batch) >= TOPICS_PER_FRAME or len(kit.compact([*batch, topic])) > MAX_ARGS_CHARS):
            frames.append(kit.compact({"op": "subscribe", "args": batch}))
            batch = []
        batch.append(topic)
    if batch:
        frames.append(kit.compact({"op": "subscribe", "args": batch}))
    return frames


def is_control(frame: Any) -> bool:
    """Pongs and subscribe acks (objects with an `op` and no `topic`); a refused request raises ValueError."""
    if not isinstance(frame, Mapping) or "topic" in frame or not isinstance(frame.get("op"), str):
        return False
    if frame.get("success") is False:
        raise ValueError(f"bybit refused op={frame['op']!r}: {str(frame.get('ret_msg'))[:200]}")
    return True


def parse_reference(body: Any) -> BybitRef:
    """One page of `instruments-info?category=linear`: the `Trading` symbols and `nextPageCursor`."""
    body = kit.mapping(body, "instruments-info body")
    code = body.get("retCode")
    if code != 0:
        raise ValueError(f"instruments-info retCode={code!r}: {str(body.get('retMsg'))[:200]}")
    result = kit.mapping(body.get("result"), "result")
    if result.get("category") != "linear":
        raise ValueError(f"result.category={result.get('category')!r}; only linear is read (inverse unit unsettled)")
    cursor = result.get("nextPageCursor")
    if not isinstance(cursor, str):
        raise ValueError(f"result.nextPageCursor={cursor!r} is not a string")
    symbols: set[str] = set()
    for i, item in enumerate(kit.array(result.get("list"), "result.list")):
        item = kit.mapping(item, f"result.list[{i}]")
        name = kit.text(item.get("symbol"), f"result.list[{i}].symbol")
        status = kit.text(item.get("status"), f"result.list[{i}].status")
        if status == "Trading":
            symbols.add(name)
    return BybitRef(frozenset(symbols), cursor or None)


def parse_frame(frame: Any, ref: BybitRef, *, now_ms: int | None = None) -> list[Event]:
    """One `allLiquidation.{symbol}` frame as events; control frames and other topics give `[]`.

    The docs' sample `{"topic":"allLiquidation.ROSEUSDT","type":"snapshot","ts":1739502303204,"data":[{"T":
    1739502302929,"s":"ROSEUSDT","S":"Sell","v":"20000","p":"0.04499"}]}` is a SHORT of 20000 ROSE liquidated
    at 0.04499, notional 899.80 USDT (counted as USD at par). The key is `(s, T, S, v, p)`, the frame's own
    figures, so a replay gives the same key. The whole frame is refused if any item is.
    """
    frame = kit.mapping(frame, "bybit frame")
    if is_control(frame):
        return []
    topic = kit.text(frame.get("topic"), "bybit topic")
    if not topic.startswith(TOPIC_PREFIX):
        return []
    topic_symbol = topic[len(TOPIC_PREFIX) :]
    events: list[Event] = []
    for i, raw in enumerate(kit.array(frame.get("data"), f"{topic} data")):
        item = kit.mapping(raw, f"{topic} data[{i}]")
        symbol = kit.symbol(item.get("s"), f"{topic} data[{i}].s")
        if symbol != topic_symbol:
            raise ValueError(f"{topic} data[{i}].s={symbol!r} is another symbol")
        if symbol not in ref.symbols:
            raise UnknownInstrument(Venue.BYBIT.value, symbol)
        side = item.get("S")
        if side not in _LIQUIDATED:
            raise ValueError(f"{topic} data[{i}].S={side!r} is neither Buy nor Sell")
        trade_ms = item.get("T")
        occurred_at = kit.ms_time(trade_ms, f"{topic} data[{i}].T")
        size = kit.figure(item.get("v"), f"{topic} data[{i}].v")
        price = kit.figure(item.get("p"), f"{topic} data[{i}].p")
        usd = kit.notional(size, price, f"bybit liquidation of {symbol}")
        events.append(
            Event(
                key=f"bybit:allLiquidation:{symbol}:{trade_ms}:{side}:{item['v']}:{item['p']}",
                topic=Topic.LIQUIDATION,
                source=SOURCE,
                venue=Venue.BYBIT,
                symbol=symbol,
                usd=usd,
                occurred_at=occurred_at,
                body=LiquidationBody(side=_LIQUIDATED[side], size=size, price=price, notional_usd=usd, note=PRICE_NOTE),
            )
        )
    return kit.plausible(events, now_ms)


MAX_PAGES = 20
"""A listing of more pages than this is a venue bug (a cursor that never ends), not more markets."""


def reference(rest_url: str) -> RefSource[BybitRef]:
    """Every page of linear instruments, followed by `nextPageCursor`; the pages are the stored copy."""

    async def fetch(get: Fetch) -> list[Any]:
        pages: list[Any] = []
        cursor: str | None = None
        while len(pages) < MAX_PAGES:
            params = dict(REST_PARAMS, **({"cursor": cursor} if cursor else {}))
            body = await get(Request(rest_url, params=params))
            pages.append(body)
            cursor = parse_reference(body).next_cursor
            if cursor is None:
                break
        return pages

    def parse(pages: Any) -> BybitRef:
        merged = BybitRef(frozenset())
        for page in kit.array(pages, "pages"):
            merged = merged.merged(parse_reference(page))
        return merged

    return RefSource("bybit.linear.instruments", parse=parse, keys=lambda ref: ref.symbols, fetch=fetch)


STREAM = VenueStream(
    venue=Venue.BYBIT,
    reference=reference,
    topics_for=topics_for,
    subscribe_frames=subscribe_frames,
    per_frame=TOPICS_PER_FRAME,
    per_connection=TOPICS_PER_CONNECTION or 500,  # no documented cap: spread conservatively over connections
    heartbeat=Heartbeat(HEARTBEAT_S, heartbeat_frame()),
    is_control=is_control,
    parse_frame=parse_frame,
    budget_per_min=600,  # research §8.1: 600 requests per 5 s per IP; a minute's share kept far below it
)
