"""`watchers.pacifica` against the docs' `trades` push and `/info` sample."""

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
from watchers import pacifica
from watchers.instruments import UnknownInstrument
from watchers.validate import BAD_FIGURE, Refused
from watchers.venuekit import SIDE_MISMATCH, UNKNOWN_KIND

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


@pytest.fixture
def ref() -> pacifica.PacificaRef:
    return pacifica.parse_reference(load("pacifica_info_docs.json"))


@pytest.fixture
def frame() -> dict[str, Any]:
    loaded: dict[str, Any] = load("pacifica_ws_trades_docs.json")
    return loaded


def with_item(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = copy.deepcopy(frame)
    changed["data"][0].update(fields)
    return changed


def test_sample_is_an_ordinary_trade(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    assert pacifica.parse_frame(frame, ref) == []
    assert pacifica.parse_frame(with_item(frame, tc="settlement"), ref) == []


def test_close_short_liquidation_is_a_short(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    [event] = pacifica.parse_frame(with_item(frame, tc="market_liquidation"), ref)
    assert event.topic is Topic.LIQUIDATION
    assert event.venue is Venue.PACIFICA
    assert event.symbol == "BTC"
    assert liq(event).side is PositionSide.SHORT
    assert event.subject == "42trU9A5..."
    assert liq(event).account == "42trU9A5..."
    assert liq(event).size == Decimal("0.00001")
    assert liq(event).price == Decimal("89471")
    assert liq(event).notional_usd == Decimal("0.89471")
    assert event.occurred_at == datetime(2025, 12, 6, 10, 52, 59, 85000, tzinfo=UTC)
    assert event.key == "pacifica:trades:BTC:80062522:1559885104"
    assert liq(event).note is None
    assert event.link is None


def test_mirrored_close_long_backstop_is_a_long(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    [event] = pacifica.parse_frame(with_item(frame, tc="backstop_liquidation", d="close_long"), ref)
    assert liq(event).side is PositionSide.LONG
    assert liq(event).note == pacifica.BACKSTOP_NOTE


def test_notional_is_exact_decimal(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    [event] = pacifica.parse_frame(with_item(frame, tc="market_liquidation", a="0.1", p="3.3"), ref)
    assert liq(event).notional_usd == Decimal("0.33")


def test_key_is_stable_under_replay(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    live = with_item(frame, tc="market_liquidation")
    assert pacifica.parse_frame(live, ref) == pacifica.parse_frame(copy.deepcopy(live), ref)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"d": "open_long"}, SIDE_MISMATCH),
        ({"tc": "adl"}, UNKNOWN_KIND),
        ({"a": 0.00001}, BAD_FIGURE),
        ({"p": "8.9e4"}, BAD_FIGURE),
    ],
)
def test_refused_with_a_reason(
    frame: dict[str, Any], ref: pacifica.PacificaRef, fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Refused) as caught:
        pacifica.parse_frame(with_item(frame, **{"tc": "market_liquidation", **fields}), ref)
    assert caught.value.reason == reason


@pytest.mark.parametrize("fields", [{"d": "sell"}, {"h": "80062522"}, {"t": None}, {"u": ""}])
def test_malformed_item_raises(frame: dict[str, Any], ref: pacifica.PacificaRef, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        pacifica.parse_frame(with_item(frame, **{"tc": "market_liquidation", **fields}), ref)


def test_unknown_symbol_raises(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    with pytest.raises(UnknownInstrument) as caught:
        pacifica.parse_frame(with_item(frame, s="SOL"), ref)
    assert (caught.value.venue, caught.value.name) == ("pacifica", "SOL")


def test_subscribe_frames_and_connection_cap(ref: pacifica.PacificaRef) -> None:
    assert pacifica.subscribe_frames(pacifica.topics_for(ref)) == [
        '{"method":"subscribe","params":{"source":"trades","symbol":"BTC"}}',
        '{"method":"subscribe","params":{"source":"trades","symbol":"ETH"}}',
    ]
    topics = [f"trades:S{i}" for i in range(45)]
    batches = pacifica.per_connection(topics)
    assert [len(b) for b in batches] == [20, 20, 5]
    assert [t for b in batches for t in b] == topics
    assert all(len(pacifica.subscribe_frames(b)) == len(b) for b in batches)
    with pytest.raises(ValueError, match="exceed"):
        pacifica.subscribe_frames(topics[:21])


def test_heartbeat_frame_is_exact() -> None:
    assert pacifica.heartbeat_frame() == '{"method":"ping"}'
    assert pacifica.HEARTBEAT_S < 60


def test_control_frames(frame: dict[str, Any], ref: pacifica.PacificaRef) -> None:
    assert pacifica.is_control({"channel": "pong"})
    assert pacifica.is_control({"channel": "subscribe", "data": {"source": "trades", "symbol": "BTC"}})
    assert not pacifica.is_control(frame)
    assert pacifica.parse_frame({"channel": "pong"}, ref) == []
    with pytest.raises(ValueError, match="Invalid symbol"):
        pacifica.parse_frame({"channel": "error", "data": "Invalid symbol"}, ref)


def test_reference_from_sample(ref: pacifica.PacificaRef) -> None:
    assert ref.symbols == {"BTC", "ETH"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b.update(success=False, error="rate limited"), "rate limited"),
        (lambda b: b.pop("data"), "data"),
        (lambda b: b["data"][1].pop("symbol"), r"data\[1\]\.symbol"),
        (lambda b: b["data"].append("BTC"), r"data\[2\]"),
    ],
)
def test_malformed_reference_names_the_field(change: Any, field: str) -> None:
    body = load("pacifica_info_docs.json")
    change(body)
    with pytest.raises(ValueError, match=field):
        pacifica.parse_reference(body)
