"""`forceorder.parse` against the venues' documented frames and the ways a frame can be wrong."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.settings import load_settings
from perpwatch.events import PositionSide, Topic, Venue
from tests.factories import liq
from watchers.forceorder import ForceOrderWatcher, list_subscriptions_probe, parse
from watchers.validate import Refused
from watchers.ws import WsTuning

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"


def load(name: str) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)
    return frame


def with_order(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = copy.deepcopy(frame)
    for name, value in fields.items():
        if value is None:
            changed["o"].pop(name, None)
        else:
            changed["o"][name] = value
    return changed


@pytest.fixture
def docs_frame() -> dict[str, Any]:
    return load("binance_forceOrder_docs.json")


@pytest.mark.parametrize(
    ("sample", "venue"),
    [("binance_forceOrder_docs.json", Venue.BINANCE), ("aster_forceOrder_docs.json", Venue.ASTER)],
)
def test_docs_sample_is_a_long_liquidation(sample: str, venue: Venue) -> None:
    [event] = parse(load(sample), venue)

    assert event.topic is Topic.LIQUIDATION
    assert event.source == "forceorder"
    assert event.venue is venue
    assert event.symbol == "BTCUSDT"
    assert event.occurred_at == datetime(2019, 9, 9, 7, 34, 20, 893000, tzinfo=UTC)
    assert liq(event).side is PositionSide.LONG
    assert liq(event).size == Decimal("0.014")
    assert liq(event).price == Decimal("9910")
    assert liq(event).notional_usd == Decimal("138.74")
    assert event.usd == Decimal("138.74")
    assert event.key == f"{venue.value}:forceOrder:BTCUSDT:1568014460893:SELL:0.014:9910"
    # A single liquidation is exact; only counts built from this feed are floors, which a cascade says once.
    assert liq(event).sampled and liq(event).note is None
    assert (
        event.link
        == {
            Venue.BINANCE: "https://www.binance.com/en/futures/BTCUSDT",
            Venue.ASTER: "https://www.asterdex.com/en/futures/v1/BTCUSDT",
        }[venue]
    )


def test_buy_order_means_a_short_was_liquidated(docs_frame: dict[str, Any]) -> None:
    [event] = parse(with_order(docs_frame, S="BUY"), Venue.BINANCE)
    assert liq(event).side is PositionSide.SHORT
    assert event.key.endswith(":BUY:0.014:9910")


def test_notional_is_exact_decimal_from_strings(docs_frame: dict[str, Any]) -> None:
    # In float, 3 * 0.1 is 0.30000000000000004 and 0.07 * 1.1 is 0.07700000000000001.
    [event] = parse(with_order(docs_frame, s="PEPEUSDT", z="3", ap="0.1"), Venue.ASTER)
    assert liq(event).notional_usd == Decimal("0.3")
    [event] = parse(with_order(docs_frame, z="0.07", ap="1.1"), Venue.ASTER)
    assert str(event.usd) == "0.077"
    frame = with_order(docs_frame, s="COTIUSDT", q="288183", z="288183", ap="0.0219120", p="0.0220482")
    [event] = parse(frame, Venue.ASTER)
    assert str(liq(event).notional_usd) == "6314.6658960"
    assert str(liq(event).price) == "0.0219120"


def test_unfilled_order_falls_back_to_order_quantity_and_price(docs_frame: dict[str, Any]) -> None:
    [event] = parse(with_order(docs_frame, z="0", ap="0", q="2.5", p="100.1"), Venue.BINANCE)
    assert (liq(event).size, liq(event).price, event.usd) == (Decimal("2.5"), Decimal("100.1"), Decimal("250.25"))


def test_absent_z_and_ap_fall_back_too(docs_frame: dict[str, Any]) -> None:
    [event] = parse(with_order(docs_frame, z=None, ap=None), Venue.BINANCE)
    assert (liq(event).size, liq(event).price) == (Decimal("0.014"), Decimal("9910"))


def test_combined_stream_wrapper_is_unwrapped(docs_frame: dict[str, Any]) -> None:
    [event] = parse({"stream": "!forceOrder@arr", "data": docs_frame}, Venue.BINANCE)
    assert event.key == "binance:forceOrder:BTCUSDT:1568014460893:SELL:0.014:9910"


@pytest.mark.parametrize(
    "reply",
    [
        {"result": ["!forceOrder@arr"], "id": 1},
        {"result": None, "id": 7},
        {"error": {"code": 2, "msg": "Invalid request"}, "id": 3},
        {"e": "aggTrade", "E": 1, "s": "BTCUSDT"},
    ],
)
def test_control_replies_and_other_streams_give_nothing(reply: dict[str, Any]) -> None:
    assert parse(reply, Venue.BINANCE) == []


def test_probe_is_the_documented_control_message() -> None:
    assert json.loads(list_subscriptions_probe(4)) == {"method": "LIST_SUBSCRIPTIONS", "id": 4}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"S": "SIDEWAYS"}, "neither BUY nor SELL"),
        ({"S": None}, "neither BUY nor SELL"),
        ({"s": ""}, "not a symbol"),
        ({"T": None}, "not a millisecond timestamp"),
        ({"T": "1568014460893"}, "not a millisecond timestamp"),
        ({"z": "abc"}, "not a plain decimal"),
        ({"ap": "NaN"}, "not a plain decimal"),
        ({"z": "-1"}, "negative"),
        ({"z": 0.014}, "expected a decimal string"),
        ({"z": "0", "q": "0"}, "no positive size or price"),
        ({"ap": "0", "p": None}, "no positive size or price"),
    ],
)
def test_malformed_force_order_raises(docs_frame: dict[str, Any], fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(with_order(docs_frame, **fields), Venue.BINANCE)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"s": "BTC\x1b[2JUSDT"}, "bad_symbol"),
        ({"s": "BTC\u202eUSDT"}, "bad_symbol"),
        ({"s": "BTCUSDT\x07"}, "bad_symbol"),
        ({"s": "x" * 41}, "bad_symbol"),
        ({"z": "1e400"}, "bad_figure"),
        ({"z": Decimal("1E+400")}, "bad_figure"),  # an unquoted 1e400, as the stream decodes it
        ({"z": "1_000"}, "bad_figure"),
        ({"z": "\u0661\u0660"}, "bad_figure"),
        ({"z": "NaN"}, "bad_figure"),
        ({"z": "-1"}, "bad_figure"),
        ({"z": "1000000", "ap": "1000000"}, "implausible_usd"),
        ({"z": "0.0000000001", "ap": "0.0000000001"}, "implausible_usd"),
        ({"T": 10**20}, "bad_time"),
    ],
)
def test_a_frame_that_cannot_be_true_is_refused_with_a_reason(
    docs_frame: dict[str, Any], fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Refused) as refused:
        parse(with_order(docs_frame, **fields), Venue.BINANCE)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    "frame",
    [{"e": "forceOrder", "E": 1}, {"e": "forceOrder", "o": []}, {"unexpected": True}, {"e": 5}],
)
def test_frames_that_are_not_readable_raise(frame: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse(frame, Venue.ASTER)


def test_key_is_stable_for_a_replayed_frame_and_differs_per_occurrence(docs_frame: dict[str, Any]) -> None:
    first = parse(docs_frame, Venue.BINANCE)[0].key
    replayed = parse(json.loads(json.dumps(docs_frame, default=str), parse_float=Decimal), Venue.BINANCE)[0].key
    later = parse(with_order(docs_frame, T=1568014461893), Venue.BINANCE)[0].key
    elsewhere = parse(docs_frame, Venue.ASTER)[0].key
    assert first == replayed
    assert len({first, later, elsewhere}) == 3


@pytest.mark.parametrize("venue", [Venue.BINANCE, Venue.ASTER])
def test_watcher_from_settings_is_named_after_its_venue(venue: Venue) -> None:
    settings = load_settings(
        binance_ws_url="ws://127.0.0.1:1/binance",
        aster_ws_url="ws://127.0.0.1:1/aster",
        ws_probe_after_s=7.0,
        ws_max_lifetime_s=600.0,
    )
    watcher = ForceOrderWatcher.from_settings(settings, venue)
    assert watcher.name == venue.value
    assert watcher.stream.url == f"ws://127.0.0.1:1/{venue.value}"
    assert (watcher.stream.tuning.probe_after_s, watcher.stream.tuning.max_lifetime_s) == (7.0, 600.0)


def test_watcher_refuses_a_venue_with_another_wire_format() -> None:
    tuning = WsTuning(probe_after_s=1, probe_timeout_s=1, max_lifetime_s=1, backoff_initial_s=1, backoff_max_s=1)
    with pytest.raises(ValueError, match="bybit"):
        ForceOrderWatcher(Venue.BYBIT, "ws://127.0.0.1:1/", tuning)
