"""`watchers.bybit` against the docs' `allLiquidation` and `instruments-info` samples."""

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
from watchers import bybit
from watchers.instruments import UnknownInstrument
from watchers.validate import BAD_FIGURE, TOO_OLD, Refused

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


@pytest.fixture
def frame() -> dict[str, Any]:
    loaded: dict[str, Any] = load("bybit_allLiquidation_docs.json")
    return loaded


@pytest.fixture
def ref() -> bybit.BybitRef:
    return bybit.parse_reference(load("bybit_instrumentsInfo_docs.json")).merged(
        bybit.BybitRef(frozenset({"ROSEUSDT"}))
    )


def with_item(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = copy.deepcopy(frame)
    changed["data"][0].update(fields)
    return changed


def test_docs_sample_sell_is_a_short_liquidation(frame: dict[str, Any], ref: bybit.BybitRef) -> None:
    [event] = bybit.parse_frame(frame, ref)
    assert event.topic is Topic.LIQUIDATION
    assert event.venue is Venue.BYBIT
    assert event.source == bybit.SOURCE
    assert event.symbol == "ROSEUSDT"
    assert liq(event).side is PositionSide.SHORT
    assert liq(event).size == Decimal("20000")
    assert liq(event).price == Decimal("0.04499")
    assert liq(event).notional_usd == Decimal("899.80000")
    assert event.usd == liq(event).notional_usd
    assert event.occurred_at == datetime(2025, 2, 14, 3, 5, 2, 929000, tzinfo=UTC)
    assert event.key == "bybit:allLiquidation:ROSEUSDT:1739502302929:Sell:20000:0.04499"
    assert event.link is None
    assert liq(event).note == bybit.PRICE_NOTE


def test_mirrored_buy_is_a_long_liquidation(frame: dict[str, Any], ref: bybit.BybitRef) -> None:
    [event] = bybit.parse_frame(with_item(frame, S="Buy"), ref)
    assert liq(event).side is PositionSide.LONG
    assert ":Buy:" in event.key


def test_notional_is_exact_decimal(frame: dict[str, Any], ref: bybit.BybitRef) -> None:
    [event] = bybit.parse_frame(with_item(frame, v="3", p="0.1"), ref)
    assert liq(event).notional_usd == Decimal("0.3")
    assert isinstance(liq(event).notional_usd, Decimal)


def test_key_is_stable_under_replay(frame: dict[str, Any], ref: bybit.BybitRef) -> None:
    first = bybit.parse_frame(frame, ref)
    again = bybit.parse_frame(copy.deepcopy(frame), ref)
    assert [e.key for e in first] == [e.key for e in again]
    assert first == again


@pytest.mark.parametrize(
    "fields",
    [{"S": "buy"}, {"S": None}, {"T": "1739502302929"}, {"s": 5}, {"s": "OTHERUSDT"}],
)
def test_malformed_item_raises(frame: dict[str, Any], ref: bybit.BybitRef, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        bybit.parse_frame(with_item(frame, **fields), ref)


@pytest.mark.parametrize("fields", [{"v": 20000.0}, {"p": "1e3"}, {"v": "-1"}, {"p": "0"}])
def test_bad_figure_is_refused(frame: dict[str, Any], ref: bybit.BybitRef, fields: dict[str, Any]) -> None:
    with pytest.raises(Refused) as caught:
        bybit.parse_frame(with_item(frame, **fields), ref)
    assert caught.value.reason == BAD_FIGURE


def test_missing_data_raises(frame: dict[str, Any], ref: bybit.BybitRef) -> None:
    del frame["data"]
    with pytest.raises(ValueError, match="data"):
        bybit.parse_frame(frame, ref)


def test_unknown_symbol_raises(frame: dict[str, Any]) -> None:
    ref = bybit.parse_reference(load("bybit_instrumentsInfo_docs.json"))
    with pytest.raises(UnknownInstrument) as caught:
        bybit.parse_frame(frame, ref)
    assert caught.value.venue == "bybit"
    assert caught.value.name == "ROSEUSDT"


def test_now_ms_refuses_an_old_frame(frame: dict[str, Any], ref: bybit.BybitRef) -> None:
    assert bybit.parse_frame(frame, ref, now_ms=1739502303204)
    with pytest.raises(Refused) as caught:
        bybit.parse_frame(frame, ref, now_ms=1739502303204 + 400 * 86_400_000)
    assert caught.value.reason == TOO_OLD


def test_other_topics_give_nothing(ref: bybit.BybitRef) -> None:
    assert bybit.parse_frame({"topic": "tickers.BTCUSDT", "data": {}}, ref) == []


def test_subscribe_chunks_respect_the_caps() -> None:
    topics = [f"allLiquidation.S{i}USDT" for i in range(450)]
    frames = [json.loads(f) for f in bybit.subscribe_frames(topics)]
    assert [len(f["args"]) for f in frames] == [200, 200, 50]
    assert all(f["op"] == "subscribe" for f in frames)
    assert [t for f in frames for t in f["args"]] == topics
    long_topics = [f"allLiquidation.{'X' * 500}{i}" for i in range(100)]
    for f in bybit.subscribe_frames(long_topics):
        assert len(json.dumps(json.loads(f)["args"], separators=(",", ":"))) <= bybit.MAX_ARGS_CHARS
    assert bybit.subscribe_frames([]) == []


def test_heartbeat_frame_is_exact() -> None:
    assert bybit.heartbeat_frame() == '{"op":"ping"}'
    assert bybit.HEARTBEAT_S == 20


def test_control_frames() -> None:
    assert bybit.is_control({"op": "ping", "ret_msg": "pong"})
    assert bybit.is_control({"op": "subscribe", "success": True, "ret_msg": ""})
    assert not bybit.is_control({"topic": "allLiquidation.BTCUSDT", "data": []})
    assert not bybit.is_control("pong")
    with pytest.raises(ValueError, match="error:handler not found"):
        bybit.is_control({"op": "subscribe", "success": False, "ret_msg": "error:handler not found"})


def test_reference_parsed_from_sample() -> None:
    ref = bybit.parse_reference(load("bybit_instrumentsInfo_docs.json"))
    assert ref == bybit.BybitRef(frozenset({"BTCUSDT"}), None)
    assert bybit.topics_for(ref) == ["allLiquidation.BTCUSDT"]


def test_reference_cursor_and_status() -> None:
    body = load("bybit_instrumentsInfo_docs.json")
    body["result"]["nextPageCursor"] = "first%3DBIOUSDT%26last%3DBIOUSDT"
    body["result"]["list"].append({**body["result"]["list"][0], "symbol": "BIOUSDT", "status": "PreLaunch"})
    ref = bybit.parse_reference(body)
    assert ref.symbols == {"BTCUSDT"}
    assert ref.next_cursor == "first%3DBIOUSDT%26last%3DBIOUSDT"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.update(retCode=10006, retMsg="Too many visits!"), "Too many visits"),
        (lambda b: b["result"].pop("list"), "result.list"),
        (lambda b: b["result"].update(category="inverse"), "category"),
        (lambda b: b["result"].pop("nextPageCursor"), "nextPageCursor"),
        (lambda b: b["result"]["list"][0].pop("symbol"), r"result.list\[0\].symbol"),
    ],
)
def test_malformed_reference_names_the_field(change: Any, field: str) -> None:
    body = load("bybit_instrumentsInfo_docs.json")
    change(body)
    with pytest.raises(ValueError, match=field):
        bybit.parse_reference(body)
