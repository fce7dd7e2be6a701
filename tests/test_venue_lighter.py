"""`watchers.lighter` against the ccxt `trade:0` message and the real `orderBooks` capture."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.events import PositionSide, Topic, Venue
from tests.factories import liq
from watchers import lighter
from watchers.instruments import UnknownInstrument
from watchers.validate import BAD_FIGURE, Refused
from watchers.venuekit import UNKNOWN_KIND

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


@pytest.fixture
def ref() -> lighter.LighterRef:
    return lighter.parse_reference(load("lighter_orderBooks_real.json"))


@pytest.fixture
def frame() -> dict[str, Any]:
    loaded: dict[str, Any] = load("lighter_ws_trade_ccxt.json")
    return loaded


def as_liquidation(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The sample's trade moved into `liquidation_trades`, typed as the research says liquidations are."""
    changed = copy.deepcopy(frame)
    trade = changed["trades"].pop(0)
    trade.update({"type": "liquidation", **fields})
    changed["liquidation_trades"] = [trade]
    return changed


def test_sample_has_no_liquidation(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    assert lighter.parse_frame(frame, ref) == []


def test_maker_bid_means_the_taker_long_was_liquidated(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    [event] = lighter.parse_frame(as_liquidation(frame), ref)
    assert event.topic is Topic.LIQUIDATION
    assert event.venue is Venue.LIGHTER
    assert event.symbol == "ETH"
    assert liq(event).side is PositionSide.LONG
    assert event.subject == "99349"
    assert liq(event).account == "99349"
    assert liq(event).size == Decimal("0.0346")
    assert liq(event).price == Decimal("3028.85")
    assert liq(event).notional_usd == Decimal("104.798210")
    assert event.occurred_at == datetime(2025, 11, 20, 7, 28, 54, 215000, tzinfo=UTC)
    assert event.key == "lighter:trade:0:526801155"
    assert event.link is None


def test_mirrored_maker_ask_means_a_short(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    [event] = lighter.parse_frame(as_liquidation(frame, is_maker_ask=True), ref)
    assert liq(event).side is PositionSide.SHORT
    assert event.subject == "243008"


def test_notional_is_exact_decimal(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    [event] = lighter.parse_frame(as_liquidation(frame, size="0.07", price="1.1"), ref)
    assert liq(event).notional_usd == Decimal("0.077")


def test_key_is_stable_under_replay(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    live = as_liquidation(frame)
    live["type"] = "update/trade"
    replay = as_liquidation(frame)  # "subscribed/trade": the replay on (re)subscribe
    assert lighter.parse_frame(live, ref) == lighter.parse_frame(replay, ref)


@pytest.mark.parametrize(
    "fields",
    [{"is_maker_ask": "false"}, {"trade_id": None}, {"market_id": 1}, {"timestamp": "1763623734215"}],
)
def test_malformed_item_raises(frame: dict[str, Any], ref: lighter.LighterRef, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        lighter.parse_frame(as_liquidation(frame, **fields), ref)


def test_bad_figure_and_unknown_kind_are_refused(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    with pytest.raises(Refused) as caught:
        lighter.parse_frame(as_liquidation(frame, size=0.0346), ref)
    assert caught.value.reason == BAD_FIGURE
    with pytest.raises(Refused) as caught:
        lighter.parse_frame(as_liquidation(frame, type="deleverage"), ref)
    assert caught.value.reason == UNKNOWN_KIND


def test_missing_liquidation_array_and_bad_channel_raise(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    del frame["liquidation_trades"]
    with pytest.raises(ValueError, match="liquidation_trades"):
        lighter.parse_frame(frame, ref)
    with pytest.raises(ValueError, match="channel"):
        lighter.parse_frame({**frame, "channel": "trade/0", "liquidation_trades": []}, ref)


@pytest.mark.parametrize("market", ["141", "2053", "7"])
def test_unknown_inactive_or_spot_market_raises(frame: dict[str, Any], ref: lighter.LighterRef, market: str) -> None:
    with pytest.raises(UnknownInstrument) as caught:
        lighter.parse_frame({**frame, "channel": f"trade:{market}"}, ref)
    assert (caught.value.venue, caught.value.name) == ("lighter", market)


def test_subscribe_one_per_message_and_cap(ref: lighter.LighterRef) -> None:
    assert lighter.subscribe_frames(lighter.topics_for(ref)) == [
        '{"type":"subscribe","channel":"trade/0"}',
        '{"type":"subscribe","channel":"trade/24"}',
        '{"type":"subscribe","channel":"trade/36"}',
    ]
    cap = lighter.SUBSCRIPTIONS_PER_CONNECTION
    assert len(lighter.subscribe_frames([f"trade/{i}" for i in range(cap)])) == cap
    with pytest.raises(ValueError, match="exceed"):
        lighter.subscribe_frames([f"trade/{i}" for i in range(cap + 1)])


def test_heartbeat_frame_is_exact() -> None:
    assert lighter.heartbeat_frame() == '{"type":"ping"}'
    assert lighter.HEARTBEAT_S < 120


def test_control_frames(frame: dict[str, Any], ref: lighter.LighterRef) -> None:
    assert lighter.is_control({"type": "connected", "session_id": "x"})
    assert lighter.is_control({"type": "pong"})
    assert not lighter.is_control(frame)  # subscribed/trade carries the replayed trades
    assert lighter.parse_frame({"type": "pong"}, ref) == []
    with pytest.raises(ValueError, match="invalid param"):
        lighter.is_control({"code": 20001, "message": "invalid param : auth query param and Authorization header"})
    with pytest.raises(ValueError, match="message type"):
        lighter.parse_frame({"type": "update/market_stats", "channel": "market_stats:0"}, ref)


def test_reference_from_real_capture(ref: lighter.LighterRef) -> None:
    assert ref.markets == {0: "ETH", 24: "HYPE", 36: "CRV"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.update(code=20001, message="invalid param"), "invalid param"),
        (lambda b: b.pop("order_books"), "order_books"),
        (lambda b: b["order_books"][0].update(market_id="0"), r"order_books\[0\]\.market_id"),
        (lambda b: b["order_books"][1].pop("symbol"), r"order_books\[1\]\.symbol"),
        (lambda b: b["order_books"][2].pop("status"), r"order_books\[2\]\.status"),
    ],
)
def test_malformed_reference_names_the_field(change: Any, field: str) -> None:
    body = load("lighter_orderBooks_real.json")
    change(body)
    with pytest.raises(ValueError, match=field):
        lighter.parse_reference(body)
