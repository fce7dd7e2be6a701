"""OKX v5 liquidations from the public `liquidation-orders` channel (pure functions, no I/O).

Facts (`/work/shared/research/exchange-apis.md` §0, §3.3, §6, §8.2; samples
`payloads/okx_liquidation_orders_docs.json`, `payloads/okx_instruments_ccxt.json`):

- `wss://ws.okx.com:8443/ws/v5/public`, one subscription for every SWAP:
  `{"op":"subscribe","args":[{"channel":"liquidation-orders","instType":"SWAP"}]}` (no instId).
- Push `{arg:{channel,instType}, data:[{instId, instFamily, instType, uly, details:[{side, posSide, bkPx, sz,
  bkLoss, ccy, ts}]}]}`; `ts` is a string of ms. OKX: "This data doesn't represent the total number of
  liquidations on OKX", and it is not necessarily chronological — every event carries a note saying so.
- **`posSide` names the liquidated position** (long/short); `side` is the closing order's side.
- `sz` is in **contracts** for SWAP: base size = `sz × ctVal × ctMult`, USD = that × `bkPx` for a linear
  SWAP (quote USDT/USDC counted as USD), from `GET /api/v5/public/instruments?instType=SWAP`.
- Heartbeat: the connection drops after 30 s without data; send the text `ping` (reply: text `pong`).
- Limits: 3 connection requests/s per IP; 480 subscribe/unsubscribe/login per connection per hour.

Unsettled, handled conservatively:

- Inverse SWAPs: their `sz × ctVal` is USD already and the base size would need the price; they are refused
  (`INVERSE_CONTRACT`) rather than converted. A linear SWAP settled in anything but USDT/USDC is refused too
  (`NON_USD_QUOTE`): its notional would not be USD.
- `ctMult` is "1" on every sampled SWAP; it is multiplied in, the research's "safe reading" (unverified).
- `posSide: "net"` (one-way mode) names no side: the side is read from `side`, the closing order (buy closes a
  short, sell a long). `long`/`short` must agree with `side` (long is closed by a sell); a contradiction is
  refused (`SIDE_MISMATCH`), never guessed.
- Whether one subscribe request may carry several args, and whether the hourly 480 counts requests or args,
  is not stated: one arg per frame (only one subscription is needed).
- The subscribe ack and error frames are not in the research. Objects without `data` are control; the
  `event` key (outside the research) is read only so that `event: "error"` raises with OKX's `code`/`msg`.
- `bkPx` is the bankruptcy price, not a fill price; there is no market web page in the research, so no link.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from perpwatch.events import Event, LiquidationBody, PositionSide, Topic, Venue, parse_decimal
from watchers import venuekit as kit
from watchers.instruments import UnknownInstrument
from watchers.poller import Request
from watchers.refdata import RefSource
from watchers.validate import Refused
from watchers.venue_stream import VenueStream
from watchers.ws import Heartbeat

SOURCE = "okx_liquidation_orders"
WS_URL = "wss://ws.okx.com:8443/ws/v5/public"
REST_URL = "https://www.okx.com/api/v5/public/instruments"
REST_PARAMS: Mapping[str, str] = {"instType": "SWAP"}

CHANNEL = "liquidation-orders"
INST_TYPE = "SWAP"
ARGS_PER_FRAME = 1
"""Not documented; one subscription per request is all the bot needs."""
SUBSCRIBES_PER_CONNECTION_HOUR = 480
"""subscribe/unsubscribe/login operations per connection per hour."""
CONNECTS_PER_SECOND = 3
"""New connection requests per second per IP."""
HEARTBEAT_S = 25.0
"""Under OKX's 30 s idle cut."""

INVERSE_CONTRACT = "inverse_contract"
NON_USD_QUOTE = "non_usd_quote"
USD_SETTLE = frozenset({"USDT", "USDC"})
NOTE = "OKX says its liquidation feed does not show every liquidation, so counts and totals are a floor."
"""For `/status`; each event says it with `sampled`, and a cascade built from them says it once."""
PRICE_NOTE = "OKX reports the bankruptcy price, not the fill price; the notional uses it."

_POSITION = {"long": PositionSide.LONG, "short": PositionSide.SHORT}
_CLOSED_BY = {"sell": PositionSide.LONG, "buy": PositionSide.SHORT}
"""The closing order's side: a sell closes a long, a buy closes a short."""


@dataclass(frozen=True, slots=True)
class OkxInstrument:
    inst_id: str
    ct_type: str
    """`linear` or `inverse`."""
    ct_val: Decimal
    ct_mult: Decimal
    ct_val_ccy: str
    settle_ccy: str
    state: str


@dataclass(frozen=True, slots=True)
class OkxRef:
    instruments: Mapping[str, OkxInstrument]


def heartbeat_frame() -> str:
    return "ping"


def topics_for(ref: OkxRef) -> list[str]:
    """One subscription covers every SWAP; `ref` is not needed to choose it (kept for a uniform call)."""
    return [f"{CHANNEL}:{INST_TYPE}"]


def subscribe_frames(topics: Sequence[str]) -> list[str]:
    """`channel:instType` topics as subscribe requests of `ARGS_PER_FRAME` args each."""
    args: list[dict[str, str]] = []
    for topic in topics:
        channel, sep, inst_type = topic.partition(":")
        if not sep or not channel or not inst_type:
            raise ValueError(f"okx topic {topic!r} is not channel:instType")
        args.append({"channel": channel, "instType": inst_type})
    return [
        kit.compact({"op": "subscribe", "args": args[i : i + ARGS_PER_FRAME]})
        for i in range(0, len(args), ARGS_PER_FRAME)
    ]


def is_control(frame: Any) -> bool:
    """The text `pong`, and objects without `data` (acks); an `event: "error"` raises with OKX's message."""
    if frame == "pong":
        return True
    if not isinstance(frame, Mapping) or "data" in frame:
        return False
    if frame.get("event") == "error":
        raise ValueError(f"okx error code={frame.get('code')!r}: {str(frame.get('msg'))[:200]}")
    return True


def _instrument(item: Any, where: str) -> OkxInstrument:
    item = kit.mapping(item, where)
    inst_type = item.get("instType")
    if inst_type != INST_TYPE:
        raise ValueError(f"{where}.instType={inst_type!r} is not SWAP")
    ct_type = item.get("ctType")
    if ct_type not in ("linear", "inverse"):
        raise ValueError(f"{where}.ctType={ct_type!r} is neither linear nor inverse")
    values: dict[str, Decimal] = {}
    for name in ("ctVal", "ctMult"):
        value = parse_decimal(item.get(name), f"{where}.{name}")
        if value <= 0:
            raise ValueError(f"{where}.{name}={item.get(name)!r} is not positive")
        values[name] = value
    return OkxInstrument(
        inst_id=kit.text(item.get("instId"), f"{where}.instId"),
        ct_type=ct_type,
        ct_val=values["ctVal"],
        ct_mult=values["ctMult"],
        ct_val_ccy=kit.text(item.get("ctValCcy"), f"{where}.ctValCcy"),
        settle_ccy=kit.text(item.get("settleCcy"), f"{where}.settleCcy"),
        state=kit.text(item.get("state"), f"{where}.state"),
    )


def parse_reference(body: Any) -> OkxRef:
    """`GET /api/v5/public/instruments?instType=SWAP` (no pagination): every SWAP's contract terms."""
    body = kit.mapping(body, "instruments body")
    if body.get("code") != "0":
        raise ValueError(f"instruments code={body.get('code')!r}: {str(body.get('msg'))[:200]}")
    instruments: dict[str, OkxInstrument] = {}
    for i, item in enumerate(kit.array(body.get("data"), "data")):
        instrument = _instrument(item, f"data[{i}]")
        instruments[instrument.inst_id] = instrument
    return OkxRef(instruments)


def _side(detail: Mapping[str, Any], where: str) -> PositionSide:
    pos_side, side = detail.get("posSide"), detail.get("side")
    if side not in _CLOSED_BY:
        raise ValueError(f"{where}.side={side!r} is neither buy nor sell")
    if pos_side == "net":
        return _CLOSED_BY[side]
    if pos_side not in _POSITION:
        raise ValueError(f"{where}.posSide={pos_side!r} is not long, short or net")
    if _POSITION[pos_side] is not _CLOSED_BY[side]:
        raise Refused(kit.SIDE_MISMATCH, f"{where}: posSide={pos_side} cannot be closed by side={side}")
    return _POSITION[pos_side]


def parse_frame(frame: Any, ref: OkxRef, *, now_ms: int | None = None) -> list[Event]:
    """One `liquidation-orders` push as events; control frames and other channels give `[]`.

    The docs' sample (IOST-USDT-SWAP, `posSide:"short"`, `side:"buy"`, `sz:"13"`, `bkPx:"0.007831"`) is a
    short liquidated; with the research's worked example BTC-USDT-SWAP (`ctVal` 0.01) at `bkPx` 60000, 13
    contracts are 0.13 BTC and 7,800 USD. The key is `(instId, ts, posSide, side, sz, bkPx)`. The whole frame
    is refused if any detail is (an unknown instId raises `UnknownInstrument`: refresh, never guess ctVal).
    """
    if is_control(frame):
        return []
    frame = kit.mapping(frame, "okx frame")
    arg = kit.mapping(frame.get("arg"), "okx arg")
    if arg.get("channel") != CHANNEL:
        return []
    events: list[Event] = []
    for i, raw in enumerate(kit.array(frame.get("data"), "okx data")):
        entry = kit.mapping(raw, f"data[{i}]")
        inst_id = kit.symbol(entry.get("instId"), f"data[{i}].instId")
        instrument = ref.instruments.get(inst_id)
        if instrument is None:
            raise UnknownInstrument(Venue.OKX.value, inst_id)
        if entry.get("instType") != INST_TYPE:
            raise ValueError(f"data[{i}].instType={entry.get('instType')!r} is not SWAP")
        for j, raw_detail in enumerate(kit.array(entry.get("details"), f"data[{i}].details")):
            where = f"{inst_id} details[{j}]"
            detail = kit.mapping(raw_detail, where)
            side = _side(detail, where)
            ts = detail.get("ts")
            occurred_at = kit.ms_time(ts, f"{where}.ts", digits_ok=True)
            contracts = kit.figure(detail.get("sz"), f"{where}.sz")
            price = kit.figure(detail.get("bkPx"), f"{where}.bkPx")
            if instrument.ct_type != "linear":
                raise Refused(INVERSE_CONTRACT, f"{inst_id} is an inverse SWAP: sz x ctVal is USD, base size unknown")
            if instrument.settle_ccy not in USD_SETTLE:
                raise Refused(NON_USD_QUOTE, f"{inst_id} settles in {instrument.settle_ccy}, not USDT/USDC")
            size = contracts * instrument.ct_val * instrument.ct_mult
            usd = kit.notional(size, price, f"okx liquidation of {inst_id}")
            events.append(
                Event(
                    key=f"okx:liquidation-orders:{inst_id}:{ts}:{detail['posSide']}:{detail['side']}:"
                    f"{detail['sz']}:{detail['bkPx']}",
                    topic=Topic.LIQUIDATION,
                    source=SOURCE,
                    venue=Venue.OKX,
                    symbol=inst_id,
                    usd=usd,
                    occurred_at=occurred_at,
                    body=LiquidationBody(
                        side=side, size=size, price=price, notional_usd=usd, sampled=True, note=PRICE_NOTE
                    ),
                )
            )
    return kit.plausible(events, now_ms)


def reference(rest_url: str) -> RefSource[OkxRef]:
    return RefSource(
        "okx.swap.instruments",
        parse=parse_reference,
        keys=lambda ref: ref.instruments.keys(),
        request=Request(rest_url, params=REST_PARAMS),
    )


STREAM = VenueStream(
    venue=Venue.OKX,
    reference=reference,
    topics_for=topics_for,
    subscribe_frames=subscribe_frames,
    per_frame=ARGS_PER_FRAME,
    per_connection=1,  # one channel for every SWAP
    heartbeat=Heartbeat(HEARTBEAT_S, heartbeat_frame()),
    is_control=is_control,
    parse_frame=parse_frame,
    budget_per_min=600,  # research §8.2: 20 requests per 2 s
    plain_texts=frozenset({"pong"}),
)
