"""`watchers.okx` against the docs' `liquidation-orders` push and the ccxt-captured SWAP instruments."""

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
from watchers import okx
from watchers.instruments import UnknownInstrument
from watchers.validate import BAD_FIGURE, Refused
from watchers.venuekit import SIDE_MISMATCH

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


@pytest.fixture
def frame() -> dict[str, Any]:
    loaded: dict[str, Any] = load("okx_liquidation_orders_docs.json")
    return loaded


@pytest.fixture
def ref() -> okx.OkxRef:
    return okx.parse_reference(load("okx_instruments_ccxt.json"))


def on_btc(frame: dict[str, Any], inst_id: str = "BTC-USDT-SWAP", **detail: Any) -> dict[str, Any]:
    """The docs' push moved onto an instrument whose ctVal the sample holds, at the research's bkPx 60000."""
    changed = copy.deepcopy(frame)
    changed["data"][0].update(instId=inst_id, instFamily=inst_id[:-5], uly=inst_id[:-5])
    changed["data"][0]["details"][0].update({"bkPx": "60000", **detail})
    return changed


def test_docs_sample_instrument_is_not_guessed(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    with pytest.raises(UnknownInstrument) as caught:
        okx.parse_frame(frame, ref)
    assert (caught.value.venue, caught.value.name) == ("okx", "IOST-USDT-SWAP")


def test_docs_sample_short_on_a_known_linear_swap(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    [event] = okx.parse_frame(on_btc(frame), ref)
    assert event.topic is Topic.LIQUIDATION
    assert event.venue is Venue.OKX
    assert event.symbol == "BTC-USDT-SWAP"
    assert liq(event).side is PositionSide.SHORT
    assert liq(event).size == Decimal("0.13")
    assert liq(event).price == Decimal("60000")
    assert liq(event).notional_usd == Decimal("7800")
    assert event.usd == Decimal("7800")
    assert event.occurred_at == datetime(2023, 8, 17, 10, 0, 34, 10000, tzinfo=UTC)
    assert event.key == "okx:liquidation-orders:BTC-USDT-SWAP:1692266434010:short:buy:13:60000"
    assert liq(event).note == okx.PRICE_NOTE and liq(event).sampled


def test_mirrored_long(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    [event] = okx.parse_frame(on_btc(frame, posSide="long", side="sell"), ref)
    assert liq(event).side is PositionSide.LONG


@pytest.mark.parametrize(("side", "expected"), [("buy", PositionSide.SHORT), ("sell", PositionSide.LONG)])
def test_net_mode_reads_the_closing_order(
    frame: dict[str, Any], ref: okx.OkxRef, side: str, expected: PositionSide
) -> None:
    [event] = okx.parse_frame(on_btc(frame, posSide="net", side=side), ref)
    assert liq(event).side is expected


def test_contradictory_sides_are_refused(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    with pytest.raises(Refused) as caught:
        okx.parse_frame(on_btc(frame, posSide="short", side="sell"), ref)
    assert caught.value.reason == SIDE_MISMATCH


def test_inverse_swap_is_refused(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    with pytest.raises(Refused) as caught:
        okx.parse_frame(on_btc(frame, "BTC-USD-SWAP"), ref)
    assert caught.value.reason == okx.INVERSE_CONTRACT


def test_notional_is_exact_decimal(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    # In float, 0.03 * 33.3 is 0.9990000000000001.
    [event] = okx.parse_frame(on_btc(frame, sz="3", bkPx="33.3"), ref)
    assert liq(event).size == Decimal("0.03")
    assert liq(event).notional_usd == Decimal("0.999")


def test_key_is_stable_under_replay(frame: dict[str, Any], ref: okx.OkxRef) -> None:
    first = okx.parse_frame(on_btc(frame), ref)
    assert first == okx.parse_frame(on_btc(copy.deepcopy(frame)), ref)
    assert first[0].key == okx.parse_frame(on_btc(frame), ref)[0].key


@pytest.mark.parametrize(
    "detail", [{"posSide": "both"}, {"side": "BUY"}, {"ts": 1692266434010.5}, {"ts": "16922x"}, {"ts": None}]
)
def test_malformed_detail_raises(frame: dict[str, Any], ref: okx.OkxRef, detail: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        okx.parse_frame(on_btc(frame, **detail), ref)


@pytest.mark.parametrize("detail", [{"sz": "1e2"}, {"bkPx": "-1"}, {"sz": 13.0}])
def test_bad_figure_is_refused(frame: dict[str, Any], ref: okx.OkxRef, detail: dict[str, Any]) -> None:
    with pytest.raises(Refused) as caught:
        okx.parse_frame(on_btc(frame, **detail), ref)
    assert caught.value.reason == BAD_FIGURE


def test_other_channels_give_nothing(ref: okx.OkxRef) -> None:
    assert okx.parse_frame({"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": []}, ref) == []


def test_subscribe_frames_one_arg_each() -> None:
    assert okx.topics_for(okx.OkxRef({})) == ["liquidation-orders:SWAP"]
    frames = okx.subscribe_frames(["liquidation-orders:SWAP", "liquidation-orders:FUTURES"])
    assert frames == [
        '{"op":"subscribe","args":[{"channel":"liquidation-orders","instType":"SWAP"}]}',
        '{"op":"subscribe","args":[{"channel":"liquidation-orders","instType":"FUTURES"}]}',
    ]
    assert all(len(json.loads(f)["args"]) <= okx.ARGS_PER_FRAME for f in frames)
    with pytest.raises(ValueError):
        okx.subscribe_frames(["liquidation-orders"])


def test_heartbeat_frame_is_exact() -> None:
    assert okx.heartbeat_frame() == "ping"
    assert okx.HEARTBEAT_S < 30


def test_control_frames(frame: dict[str, Any]) -> None:
    assert okx.is_control("pong")
    assert okx.is_control({"event": "subscribe", "arg": {"channel": "liquidation-orders", "instType": "SWAP"}})
    assert not okx.is_control(frame)
    with pytest.raises(ValueError, match="60012"):
        okx.is_control({"event": "error", "code": "60012", "msg": "Invalid request"})


def test_reference_parsed_from_sample(ref: okx.OkxRef) -> None:
    linear = ref.instruments["BTC-USDT-SWAP"]
    assert (linear.ct_type, linear.ct_val, linear.ct_mult, linear.ct_val_ccy, linear.settle_ccy) == (
        "linear",
        Decimal("0.01"),
        Decimal("1"),
        "BTC",
        "USDT",
    )
    inverse = ref.instruments["BTC-USD-SWAP"]
    assert (inverse.ct_type, inverse.ct_val, inverse.ct_val_ccy) == ("inverse", Decimal("100"), "USD")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.update(code="50011", msg="Too Many Requests"), "Too Many Requests"),
        (lambda b: b.pop("data"), "data"),
        (lambda b: b["data"][0].update(ctVal=""), r"data\[0\].ctVal"),
        (lambda b: b["data"][0].update(ctMult="0"), r"data\[0\].ctMult"),
        (lambda b: b["data"][1].update(ctType="quanto"), r"data\[1\].ctType"),
        (lambda b: b["data"][0].pop("instId"), r"data\[0\].instId"),
    ],
)
def test_malformed_reference_names_the_field(change: Any, field: str) -> None:
    body = load("okx_instruments_ccxt.json")
    change(body)
    with pytest.raises(ValueError, match=field):
        okx.parse_reference(body)
