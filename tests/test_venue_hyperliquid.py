"""`watchers.hyperliquid` against the ccxt `trades` frame (with the current `users` field added), the docs'
subscription ack, `metaAndAssetCtxs` and HLP `vaultDetails`."""

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
from watchers import hyperliquid as hl
from watchers.instruments import UnknownInstrument
from watchers.validate import BAD_FIGURE, Refused

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
LIQUIDATOR = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"  # "HLP Liquidator" (research §1.5)
STRATEGY = "0x010461c14e146ac35fe42271bdc1134ee31c703a"  # an HLP child that is not named a liquidator
TRADER = "0x005844b2ffb2e122cf4244be7dbcb4f84924907c"  # a follower address from the vaultDetails sample


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


def child_details(address: str, name: str) -> dict[str, Any]:
    """The HLP sample reshaped as a child's details: its address, a name and `relationship: child`."""
    body: dict[str, Any] = load("hyperliquid_vaultDetails_docs.json")
    body.update(vaultAddress=address, name=name, relationship={"type": "child"})
    return body


@pytest.fixture
def ref() -> hl.HyperliquidRef:
    return hl.parse_reference(
        load("hyperliquid_metaAndAssetCtxs_docs.json"),
        [
            load("hyperliquid_vaultDetails_docs.json"),
            child_details(LIQUIDATOR, "HLP Liquidator"),
            child_details(STRATEGY, "HLP Strategy A"),
        ],
    )


@pytest.fixture
def frame() -> dict[str, Any]:
    loaded: dict[str, Any] = load("hyperliquid_ws_trades_ccxt.json")
    return loaded


def with_users(frame: dict[str, Any], buyer: str, seller: str, **fields: Any) -> dict[str, Any]:
    changed = copy.deepcopy(frame)
    changed["data"][0].update(users=[buyer, seller], **fields)
    return changed


def test_reference_from_samples(ref: hl.HyperliquidRef) -> None:
    assert ref.coins == {"BTC", "ETH", "HPOS"}
    assert ref.liquidators == {LIQUIDATOR}
    assert ref.children == {STRATEGY, LIQUIDATOR, "0x31ca8395cf837de08b24da3f660e77761dfb974b"}
    assert hl.topics_for(ref) == ["trades:BTC", "trades:ETH", "trades:HPOS"]


def test_reference_skips_delisted_and_reads_bare_meta() -> None:
    meta = load("hyperliquid_metaAndAssetCtxs_docs.json")[0]
    meta["universe"][2]["isDelisted"] = True
    assert hl.parse_reference(meta).coins == {"BTC", "ETH"}


def test_liquidator_buying_means_a_long_was_liquidated(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    [event] = hl.parse_frame(with_users(frame, LIQUIDATOR, TRADER), ref)
    assert event.topic is Topic.LIQUIDATION
    assert event.venue is Venue.HYPERLIQUID
    assert event.symbol == "BTC"
    assert liq(event).side is PositionSide.LONG
    assert event.subject == TRADER
    assert liq(event).account == TRADER
    assert liq(event).size == Decimal("0.005")
    assert liq(event).price == Decimal("68517.0")
    assert liq(event).notional_usd == Decimal("342.5850")
    assert event.occurred_at == datetime(2024, 3, 11, 2, 47, 46, 669000, tzinfo=UTC)
    assert event.key == "hyperliquid:trades:BTC:1710125266669:981894269203506"
    assert event.link == "https://app.hyperliquid.xyz/trade/BTC"
    assert liq(event).note == hl.NOTE


def test_mirrored_liquidator_selling_means_a_short(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    [event] = hl.parse_frame(with_users(frame, TRADER, LIQUIDATOR.upper().replace("0X", "0x")), ref)
    assert liq(event).side is PositionSide.SHORT
    assert event.subject == TRADER


@pytest.mark.parametrize(
    ("buyer", "seller"), [(TRADER, STRATEGY), (STRATEGY, TRADER), (LIQUIDATOR, LIQUIDATOR), (TRADER, TRADER)]
)
def test_other_trades_are_no_liquidation(
    frame: dict[str, Any], ref: hl.HyperliquidRef, buyer: str, seller: str
) -> None:
    assert hl.parse_frame(with_users(frame, buyer, seller), ref) == []


def test_notional_is_exact_decimal(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    [event] = hl.parse_frame(with_users(frame, LIQUIDATOR, TRADER, sz="0.1", px="3.3"), ref)
    assert liq(event).notional_usd == Decimal("0.33")


def test_key_is_stable_under_replay(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    first = hl.parse_frame(with_users(frame, LIQUIDATOR, TRADER), ref)
    assert first == hl.parse_frame(with_users(copy.deepcopy(frame), LIQUIDATOR, TRADER), ref)


def test_sample_without_users_is_refused(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    with pytest.raises(ValueError, match="users"):
        hl.parse_frame(frame, ref)


@pytest.mark.parametrize(
    "fields", [{"tid": "981894269203506"}, {"time": None}, {"users": [TRADER]}, {"users": ["alice", TRADER]}]
)
def test_malformed_item_raises(frame: dict[str, Any], ref: hl.HyperliquidRef, fields: dict[str, Any]) -> None:
    changed = with_users(frame, LIQUIDATOR, TRADER)
    changed["data"][0].update(fields)
    with pytest.raises(ValueError):
        hl.parse_frame(changed, ref)


def test_bad_figure_is_refused(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    with pytest.raises(Refused) as caught:
        hl.parse_frame(with_users(frame, LIQUIDATOR, TRADER, px=68517.0), ref)
    assert caught.value.reason == BAD_FIGURE


def test_unknown_coin_raises(frame: dict[str, Any], ref: hl.HyperliquidRef) -> None:
    with pytest.raises(UnknownInstrument) as caught:
        hl.parse_frame(with_users(frame, LIQUIDATOR, TRADER, coin="SOL"), ref)
    assert (caught.value.venue, caught.value.name) == ("hyperliquid", "SOL")


def test_unexpected_channel_carries_the_venue_text(ref: hl.HyperliquidRef) -> None:
    with pytest.raises(ValueError, match="Cannot track more than 15 total users"):
        hl.parse_frame({"channel": "error", "data": "Cannot track more than 15 total users."}, ref)


def test_subscribe_one_per_message_and_cap() -> None:
    frames = hl.subscribe_frames(["trades:BTC", "trades:xyz:TSLA"])
    assert frames == [
        '{"method":"subscribe","subscription":{"type":"trades","coin":"BTC"}}',
        '{"method":"subscribe","subscription":{"type":"trades","coin":"xyz:TSLA"}}',
    ]
    assert len(hl.subscribe_frames([f"trades:C{i}" for i in range(hl.MAX_SUBSCRIPTIONS)])) == hl.MAX_SUBSCRIPTIONS
    with pytest.raises(ValueError, match="exceed"):
        hl.subscribe_frames([f"trades:C{i}" for i in range(hl.MAX_SUBSCRIPTIONS + 1)])
    with pytest.raises(ValueError):
        hl.subscribe_frames(["BTC"])


def test_heartbeat_frame_is_exact() -> None:
    assert hl.heartbeat_frame() == '{"method":"ping"}'
    assert hl.HEARTBEAT_S < 60


def test_control_frames(ref: hl.HyperliquidRef) -> None:
    ack = load("hyperliquid_ws_subscriptionResponse_docs.json")
    assert hl.is_control(ack)
    assert hl.is_control({"channel": "pong"})
    assert hl.is_control("Websocket connection established.")
    assert hl.parse_frame(ack, ref) == []
    assert not hl.is_control(load("hyperliquid_ws_trades_ccxt.json"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda v: v.update(vaultAddress="HLP"), "vaultAddress"),
        (lambda v: v.pop("relationship"), "relationship"),
        (lambda v: v["relationship"].update(type="sibling"), "relationship.type"),
        (lambda v: v["relationship"]["data"].pop("childAddresses"), "childAddresses"),
        (lambda v: v["relationship"]["data"]["childAddresses"].append("0x12"), "childAddresses"),
    ],
)
def test_malformed_vault_details_name_the_field(change: Any, field: str) -> None:
    vault = load("hyperliquid_vaultDetails_docs.json")
    change(vault)
    with pytest.raises(ValueError, match=field):
        hl.parse_reference(load("hyperliquid_metaAndAssetCtxs_docs.json"), [vault])


def test_unknown_vault_and_malformed_meta() -> None:
    meta = load("hyperliquid_metaAndAssetCtxs_docs.json")
    with pytest.raises(ValueError, match="vaultDetails"):
        hl.parse_reference(meta, [None])
    with pytest.raises(ValueError, match=r"meta\.universe"):
        hl.parse_reference({"universe": None})
    with pytest.raises(ValueError, match=r"meta.universe\[0\].name"):
        hl.parse_reference({"universe": [{"szDecimals": 5}]})


def test_hip3_coins_follow_the_main_dex_under_the_subscription_cap() -> None:
    main = hl.HyperliquidRef(frozenset({"BTC", "ETH"}))
    hip3 = hl._hip3_coins({"xyz": {"universe": [{"name": "xyz:TSLA"}, {"name": "xyz:NVDA", "isDelisted": True}]}})
    assert hip3 == {"xyz:TSLA"}
    assert hl.topics_for(main.merged(hl.HyperliquidRef(hip3))) == ["trades:BTC", "trades:ETH", "trades:xyz:TSLA"]
    # A dex whose universe names a coin without its own prefix is not guessed at: it is left out.
    assert hl._hip3_coins({"abc": {"universe": [{"name": "TSLA"}]}}) == frozenset()
    many = hl.HyperliquidRef(frozenset({f"C{i}" for i in range(990)} | {f"xyz:C{i}" for i in range(50)}))
    topics = hl.topics_for(many)
    assert len(topics) == hl.MAX_SUBSCRIPTIONS and all(":" not in t[len("trades:") :] for t in topics[:990])
