"""`watchers.hl_account` on the shared Hyperliquid samples (`clearinghouseState` docs example, the AF
`userFills` excerpt, the ccxt WS `userFills` and `trades` frames), the node-fills sample lines of
`tests/node_fills/` (market and backstop liquidations, ADL), and edited copies of them. `perpDexs` and the
ledger `liquidation` delta have no sample in `payloads/`: their frames are built from the field lists of
research §8.5 and §1.2 and say so."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.events import PositionSide
from watchers import hl_account as acct
from watchers.validate import BAD_FIGURE, BAD_SYMBOL, Refused

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
NODE_SAMPLES = Path(__file__).parent / "node_fills" / "sample_blocks.jsonl"

WHALE = "0x15f43d1f2dee81424afd891943262aa90f22cc2a"  # the user of the ccxt userFills sample
OTHER = "0x005844b2ffb2e122cf4244be7dbcb4f84924907c"
LIQUIDATOR = "0x2e3d94f0562703b25c83308a05046ddaf9a8dd14"  # "HLP Liquidator" (research §1.5)
MARKET_LIQUIDATED = "0x5ef843ccf26810073ee689a954f6d05f5b48fccb"  # node sample line 2
MAKER = "0xa775d1bd91ee2cc4cae6113e5fd9c0c17b355277"  # node sample line 2
VAULT = "0x2ed5c4484ea3ff8b57d5f2fb152a40d9f2b68308"  # HLP Liquidator 4, node sample line 3
BACKSTOPPED = "0x7ba283114573bde6fd304ad7b188a763e5402a52"  # node sample line 3
DELEVERAGED = "0xe92d2041199b18f611b137457f3acee8bedb22d3"  # node sample line 4


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(), parse_float=Decimal)


def node_events(line: int) -> list[tuple[str, dict[str, Any]]]:
    """The `[user, fill]` pairs of sample line `line` (1-based)."""
    record = json.loads(NODE_SAMPLES.read_text().splitlines()[line - 1], parse_float=Decimal)
    return [(user, fill) for user, fill in record["events"]]


def node_fill(line: int, user: str) -> dict[str, Any]:
    return next(copy.deepcopy(fill) for who, fill in node_events(line) if who == user)


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


# ---------------------------------------------------------------------------------------------------------
# clearinghouseState
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def house() -> dict[str, Any]:
    body: dict[str, Any] = load("hyperliquid_clearinghouseState_docs.json")
    return body


def test_clearinghouse_sample_reads_every_field(house: dict[str, Any]) -> None:
    snap = acct.parse_clearinghouse(house)
    assert snap.dex == ""
    assert snap.at == ms(1708622398623)
    assert snap.account_value_usd == Decimal("13109.482328")
    assert snap.margin_summary == acct.MarginSummary(
        Decimal("13109.482328"), Decimal("100.02765"), Decimal("13009.454678"), Decimal("4.967826")
    )
    assert snap.cross_margin_summary is not None
    assert snap.cross_margin_summary.account_value_usd == Decimal("13104.514502")
    assert snap.cross_maintenance_margin_used_usd == Decimal("0.0")
    assert snap.withdrawable_usd == Decimal("13104.514502")
    (eth,) = snap.positions
    assert eth == acct.Position(
        coin="ETH",
        dex="",
        size=Decimal("0.0335"),
        entry_px=Decimal("2986.3"),
        position_value_usd=Decimal("100.02765"),
        unrealized_pnl_usd=Decimal("-0.0134"),
        return_on_equity=Decimal("-0.0026789"),
        leverage=acct.Leverage("isolated", 20, Decimal("-95.059824")),
        liquidation_px=Decimal("2866.26936529"),
        margin_used_usd=Decimal("4.967826"),
        max_leverage=50,
    )
    assert eth.side is PositionSide.LONG
    assert snap.position("ETH") is eth
    assert snap.position("BTC") is None
    assert snap.sizes() == {"ETH": Decimal("0.0335")}


def test_clearinghouse_cross_short_with_null_liquidation_px(house: dict[str, Any]) -> None:
    position = house["assetPositions"][0]["position"]
    position.update(szi="-0.0335", liquidationPx=None, leverage={"type": "cross", "value": 5})
    (eth,) = acct.parse_clearinghouse(house).positions
    assert eth.side is PositionSide.SHORT
    assert eth.liquidation_px is None
    assert eth.leverage == acct.Leverage("cross", 5, None)


def test_clearinghouse_no_positions(house: dict[str, Any]) -> None:
    house["assetPositions"] = []
    assert acct.parse_clearinghouse(house).positions == ()


def test_clearinghouse_hip3_coins_are_dex_prefixed(house: dict[str, Any]) -> None:
    # research §1.1/§8.5: HIP-3 dex universes name their coins "dex:COIN"; the API's name is kept.
    house["assetPositions"][0]["position"]["coin"] = "xyz:TSLA"
    snap = acct.parse_clearinghouse(house, dex="xyz")
    assert snap.dex == "xyz"
    assert [(p.coin, p.dex) for p in snap.positions] == [("xyz:TSLA", "xyz")]


@pytest.mark.parametrize(
    ("coin", "dex"),
    [
        ("TSLA", "xyz"),  # bare name from a HIP-3 dex: undocumented, refused rather than prefixed
        ("flx:TSLA", "xyz"),  # another dex's coin
        ("xyz:", "xyz"),
        ("xyz:TSLA", ""),  # a prefixed coin answered for the main dex
    ],
)
def test_clearinghouse_hip3_coin_mismatch_is_refused(house: dict[str, Any], coin: str, dex: str) -> None:
    house["assetPositions"][0]["position"]["coin"] = coin
    with pytest.raises(Refused) as caught:
        acct.parse_clearinghouse(house, dex=dex)
    assert caught.value.reason == acct.HIP3_COIN
    assert "coin" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("time",), None, "time"),
        (("time",), "1708622398623", "time"),
        (("marginSummary",), None, "marginSummary"),
        (("marginSummary", "accountValue"), 13109.48, "marginSummary.accountValue"),
        (("crossMarginSummary", "totalMarginUsed"), "-1", "crossMarginSummary.totalMarginUsed"),
        (("withdrawable",), "NaN", "withdrawable"),
        (("assetPositions",), {}, "assetPositions"),
        (("assetPositions", 0, "type"), "hedge", "assetPositions[0].type"),
        (("assetPositions", 0, "position", "szi"), "0.0", "assetPositions[0].position.szi"),
        (("assetPositions", 0, "position", "szi"), "1e3", "assetPositions[0].position.szi"),
        (("assetPositions", 0, "position", "entryPx"), "0", "assetPositions[0].position.entryPx"),
        (("assetPositions", 0, "position", "liquidationPx"), "-5", "assetPositions[0].position.liquidationPx"),
        (("assetPositions", 0, "position", "leverage", "type"), "portfolio", "leverage.type"),
        (("assetPositions", 0, "position", "leverage", "value"), "20", "leverage.value"),
        (("assetPositions", 0, "position", "leverage", "rawUsd"), None, "leverage.rawUsd"),
        (("assetPositions", 0, "position", "marginUsed"), None, "marginUsed"),
        (("assetPositions", 0, "position", "coin"), "ETH\x1b[31m", "position.coin"),
    ],
)
def test_clearinghouse_bad_field_is_named(
    house: dict[str, Any], path: tuple[str | int, ...], value: object, named: str
) -> None:
    target: Any = house
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=named.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        acct.parse_clearinghouse(house)


def test_clearinghouse_coin_twice_and_not_an_object(house: dict[str, Any]) -> None:
    house["assetPositions"].append(copy.deepcopy(house["assetPositions"][0]))
    with pytest.raises(ValueError, match="twice"):
        acct.parse_clearinghouse(house)
    with pytest.raises(ValueError, match="clearinghouseState"):
        acct.parse_clearinghouse([house])
    with pytest.raises(ValueError, match="dex"):
        acct.parse_clearinghouse(house, dex="x:y")


# ---------------------------------------------------------------------------------------------------------
# perpDexs (no sample: the shape of research §8.5, the docs example's placeholder names "test")
# ---------------------------------------------------------------------------------------------------------


def perp_dex(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "fullName": "test dex",
        "deployer": "0x5e89b26d8d66da9888c835c9bfcc2aa51813e152",
        "oracleUpdater": None,
        "feeRecipient": None,
        "assetToStreamingOiCap": [["COIN1", "1000000.0"]],
        "assetToFundingMultiplier": [],
    }


def test_perp_dexs_main_dex_first_as_empty_name() -> None:
    assert acct.parse_perp_dexs([None, perp_dex("test"), perp_dex("xyz")]) == ["", "test", "xyz"]
    assert acct.parse_perp_dexs([None]) == [""]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([], "empty"),
        ([perp_dex("test")], r"perpDexs\[0\]"),
        ([None, None], r"perpDexs\[1\] is null"),
        ([None, perp_dex("test"), perp_dex("test")], "twice"),
        ([None, {"fullName": "x"}], r"perpDexs\[1\]\.name"),
        ([None, perp_dex("a:b")], "not a dex name"),
        ({"dexs": []}, "perpDexs"),
    ],
)
def test_perp_dexs_refused(body: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        acct.parse_perp_dexs(body)


# ---------------------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def ws_fills() -> dict[str, Any]:
    frame: dict[str, Any] = load("hyperliquid_ws_userFills_ccxt.json")
    return frame


def test_ws_user_fills_sample(ws_fills: dict[str, Any]) -> None:
    frame = acct.parse_user_fills_frame(ws_fills)
    assert frame.user == WHALE
    assert frame.is_snapshot is True
    (fill,) = frame.fills
    assert fill == acct.Fill(
        coin="BTC",
        px=Decimal("72528.0"),
        sz=Decimal("0.11693"),
        side="A",
        at=ms(1710208712815),
        time_ms=1710208712815,
        hash="0xc5adaf35f8402750c218040b0a7bc301130051521273b6f398b3caad3e1f3f5f",
        tid=567547935839686,
        oid=7484888874,
        dir="Close Long",
        closed_pnl=Decimal("-0.81851"),
        start_position=Decimal("0.11693"),
        crossed=True,
        fee=Decimal("2.968244"),
        fee_token=None,
        liquidation=None,
    )
    assert fill.signed_size == Decimal("-0.11693")
    assert fill.end_position == 0
    assert not fill.is_spot


def test_ws_user_fills_live_push_has_no_is_snapshot(ws_fills: dict[str, Any]) -> None:
    del ws_fills["data"]["isSnapshot"]
    ws_fills["data"]["user"] = WHALE.upper().replace("0X", "0x")
    frame = acct.parse_user_fills_frame(ws_fills)
    assert frame.is_snapshot is False
    assert frame.user == WHALE


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"channel": "trades"}, "channel"),
        ({"data": {"user": WHALE, "fills": {}}}, "userFills.fills"),
        ({"data": {"user": "0x12", "fills": []}}, "userFills.user"),
        ({"data": {"user": WHALE, "fills": [], "isSnapshot": "yes"}}, "isSnapshot"),
    ],
)
def test_ws_user_fills_bad_frame(ws_fills: dict[str, Any], edit: dict[str, Any], match: str) -> None:
    ws_fills.update(edit)
    with pytest.raises(ValueError, match=match):
        acct.parse_user_fills_frame(ws_fills)


def test_rest_user_fills_sample_is_spot_with_fee_token() -> None:
    fills = acct.parse_user_fills(load("hyperliquid_userFills_assistanceFund_real2026_excerpt.json"))
    assert [f.tid for f in fills] == [996122509214169, 687484076936407, 214553999059502]
    first = fills[0]
    assert (first.coin, first.side, first.dir, first.crossed) == ("@107", "B", "Buy", False)
    assert first.fee_token == "HYPE"
    assert first.is_spot
    assert first.start_position == Decimal("47941999.3247392327")
    assert fills[2].hash == "0x" + "0" * 64


def test_fill_with_liquidation_object() -> None:
    fill = acct.parse_user_fill(node_fill(2, MARKET_LIQUIDATED))
    assert fill.liquidation == acct.FillLiquidation(MARKET_LIQUIDATED, Decimal("72.149"), "market")
    # The docs TS type says `number` for markPx (§1.3): an exact JSON number decoded as Decimal reads too.
    raw = node_fill(3, VAULT)
    raw["liquidation"]["markPx"] = Decimal("68.2")
    raw["liquidation"]["liquidatedUser"] = BACKSTOPPED.upper().replace("0X", "0x")
    assert acct.parse_user_fill(raw).liquidation == acct.FillLiquidation(BACKSTOPPED, Decimal("68.2"), "backstop")


def test_fill_without_oid_and_without_liquidated_user() -> None:
    raw = node_fill(3, BACKSTOPPED)
    del raw["oid"]
    del raw["liquidation"]["liquidatedUser"]
    fill = acct.parse_user_fill(raw)
    assert fill.oid is None
    assert fill.liquidation is not None and fill.liquidation.liquidated_user is None


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("coin", "", "fill.coin"),
        ("px", "0", "fill.px"),
        ("sz", 0.11693, "fill.sz"),
        ("side", "S", "fill.side"),
        ("time", -1, "fill.time"),
        ("tid", "567547935839686", "fill.tid"),
        ("oid", True, "fill.oid"),
        ("dir", None, "fill.dir"),
        ("closedPnl", None, "fill.closedPnl"),
        ("startPosition", "x", "fill.startPosition"),
        ("crossed", 1, "fill.crossed"),
        ("fee", "Infinity", "fill.fee"),
        ("hash", None, "fill.hash"),
        ("liquidation", {"markPx": "1", "method": "vault"}, "method"),
        ("liquidation", {"markPx": None, "method": "market"}, "markPx"),
        ("liquidation", {"liquidatedUser": "bob", "markPx": "1", "method": "market"}, "liquidatedUser"),
    ],
)
def test_fill_bad_field(ws_fills: dict[str, Any], field: str, value: object, match: str) -> None:
    raw = ws_fills["data"]["fills"][0]
    raw[field] = value
    with pytest.raises(ValueError, match=match):
        acct.parse_user_fill(raw)


def test_user_fills_body_must_be_an_array() -> None:
    with pytest.raises(ValueError, match="userFills"):
        acct.parse_user_fills({"fills": []})


# ---------------------------------------------------------------------------------------------------------
# Public trades
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def trades() -> dict[str, Any]:
    frame: dict[str, Any] = load("hyperliquid_ws_trades_ccxt.json")
    return frame


def with_users(frame: dict[str, Any], buyer: str, seller: str) -> dict[str, Any]:
    changed = copy.deepcopy(frame)
    changed["data"][0]["users"] = [buyer, seller]
    return changed


def test_trades_buyer_is_users_0(trades: dict[str, Any]) -> None:
    # docs WsTrade: users = [buyer, seller]; the sample's side "A" is the aggressor (a seller took).
    found = acct.fills_for_wallets(with_users(trades, WHALE, OTHER), {WHALE})
    assert len(found) == 1
    wallet, trade = found[0]
    assert wallet == WHALE
    assert trade == acct.WalletTrade(
        coin="BTC",
        side="B",
        px=Decimal("68517.0"),
        sz=Decimal("0.005"),
        at=ms(1710125266669),
        time_ms=1710125266669,
        hash="0xc872699f116e012186620407fc08a802015e0097c5cce74710697f7272e6e959",
        tid=981894269203506,
        counterparty=OTHER,
        aggressor="A",
    )
    assert trade.crossed is False  # it bought against an aggressing seller: it was the maker
    assert trade.signed_size == Decimal("0.005")


def test_trades_seller_is_users_1_case_insensitive(trades: dict[str, Any]) -> None:
    frame = with_users(trades, OTHER, WHALE.upper().replace("0X", "0x"))
    [(wallet, trade)] = acct.fills_for_wallets(frame, {WHALE.upper().replace("0X", "0x")})
    assert (wallet, trade.side, trade.crossed, trade.counterparty) == (WHALE, "A", True, OTHER)
    assert trade.signed_size == Decimal("-0.005")


def test_trades_both_watched_and_none_watched(trades: dict[str, Any]) -> None:
    frame = with_users(trades, WHALE, OTHER)
    assert [(w, t.side) for w, t in acct.fills_for_wallets(frame, {WHALE, OTHER})] == [(WHALE, "B"), (OTHER, "A")]
    assert acct.fills_for_wallets(frame, {LIQUIDATOR}) == []
    assert acct.fills_for_wallets(frame, set()) == []


def test_trades_without_users_cannot_be_attributed(trades: dict[str, Any]) -> None:
    # The 2024 ccxt sample predates `users` (its .src.txt).
    with pytest.raises(ValueError, match="users"):
        acct.fills_for_wallets(trades, {WHALE})


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"side": "X"}, r"trades\[0\]\.side"),
        ({"px": "-1"}, r"trades\[0\]\.px"),
        ({"tid": None}, r"trades\[0\]\.tid"),
        ({"coin": "BTC USD"}, r"trades\[0\]\.coin"),
        ({"users": [WHALE]}, "users"),
        ({"users": [WHALE, "nobody"]}, "users"),
    ],
)
def test_trades_bad_item(trades: dict[str, Any], edit: dict[str, Any], match: str) -> None:
    frame = with_users(trades, WHALE, OTHER)
    frame["data"][0].update(edit)
    with pytest.raises(ValueError, match=match):
        acct.fills_for_wallets(frame, {WHALE})


def test_trades_wrong_channel_and_bad_wallet(trades: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="channel"):
        acct.fills_for_wallets(load("hyperliquid_ws_subscriptionResponse_docs.json"), {WHALE})
    with pytest.raises(ValueError, match="wallet"):
        acct.fills_for_wallets(with_users(trades, WHALE, OTHER), {"whale"})


# ---------------------------------------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------------------------------------


def test_group_by_order_sums_one_market_liquidation() -> None:
    # Node sample line 2: the liquidated account's one order (oid 481702553777) crossed two makers.
    pairs = [(user, acct.parse_user_fill(fill)) for user, fill in node_events(2)]
    groups = acct.group_by_order(pairs)
    assert [(g.wallet, g.oid, len(g.fills)) for g in groups] == [
        (MAKER, 481702553903, 1),
        (MARKET_LIQUIDATED, 481702553777, 2),
        ("0x1111111111111111111111111111111111111111", 481702550001, 1),
    ]
    order = groups[1]
    assert order.side == "B"
    assert order.size == Decimal("1.58")
    assert order.notional_usd == Decimal("0.58") * Decimal("72.153") + Decimal("72.16")
    assert order.vwap_px == order.notional_usd / Decimal("1.58")
    assert order.closed_pnl_usd == Decimal("-3.3")
    assert order.fee == 0
    assert order.start_position == Decimal("-1.58")  # a buy's fills raise it: the lowest came first
    assert order.end_position == 0
    assert order.first_at == order.last_at == ms(1782636233257)
    assert acct.classify(order.start_position, order.end_position).kind is acct.ChangeKind.CLOSED


def test_group_by_order_newest_first_arrival_keeps_execution_start() -> None:
    # userFills arrive newest first (AF sample); three fills given one oid: the start is the lowest.
    fills = acct.parse_user_fills(load("hyperliquid_userFills_assistanceFund_real2026_excerpt.json"))
    same = [(WHALE, f) for f in fills]
    same = [(w, acct.Fill(**{**_fields(f), "oid": 1})) for w, f in same]
    [order] = acct.group_by_order(same)
    assert order.start_position == Decimal("47941732.0947392285")
    assert order.size == Decimal("119.22") + Decimal("119.23") + Decimal("22.29")
    assert order.first_at == ms(1791626473040)
    assert order.last_at == ms(1791630597882)


def _fields(fill: acct.Fill) -> dict[str, Any]:
    return {name: getattr(fill, name) for name in acct.Fill.__slots__}


def test_group_by_order_sell_start_is_highest() -> None:
    base = acct.parse_user_fill(load("hyperliquid_ws_userFills_ccxt.json")["data"]["fills"][0])
    later = acct.Fill(**{**_fields(base), "start_position": Decimal("0.06693"), "sz": Decimal("0.06693")})
    first = acct.Fill(**{**_fields(base), "start_position": Decimal("0.11693"), "sz": Decimal("0.05")})
    [order] = acct.group_by_order([(WHALE, later), (WHALE, first)])
    assert order.start_position == Decimal("0.11693")
    assert order.end_position == 0


def test_group_public_trades_by_hash_and_side(trades: dict[str, Any]) -> None:
    frame = with_users(trades, WHALE, OTHER)
    second = copy.deepcopy(frame["data"][0])
    second.update(tid=1, px="68519.0", sz="0.015")
    frame["data"].append(second)
    other_order = copy.deepcopy(second)
    other_order.update(tid=2, hash="0x" + "1" * 64)
    frame["data"].append(other_order)
    groups = acct.group_by_order(acct.fills_for_wallets(frame, {WHALE}))
    assert [len(g.fills) for g in groups] == [2, 1]
    assert groups[0].size == Decimal("0.020")
    assert groups[0].vwap_px == (Decimal("0.005") * 68517 + Decimal("0.015") * 68519) / Decimal("0.020")
    assert groups[0].oid is None
    assert groups[0].closed_pnl_usd is None and groups[0].start_position is None and groups[0].fee is None


def test_group_zero_hash_fills_stand_alone(trades: dict[str, Any]) -> None:
    frame = with_users(trades, WHALE, OTHER)
    frame["data"][0]["hash"] = "0x" + "0" * 64
    second = copy.deepcopy(frame["data"][0])
    second["tid"] = 7
    frame["data"].append(second)
    assert len(acct.group_by_order(acct.fills_for_wallets(frame, {WHALE}))) == 2


def test_group_one_oid_with_both_sides_is_refused() -> None:
    fill = acct.parse_user_fill(node_fill(2, MARKET_LIQUIDATED))
    flipped = acct.Fill(**{**_fields(fill), "side": "A"})
    with pytest.raises(Refused) as caught:
        acct.group_by_order([(MARKET_LIQUIDATED, fill), (MARKET_LIQUIDATED, flipped)])
    assert caught.value.reason == acct.SIDE_MISMATCH


def test_group_empty() -> None:
    assert acct.group_by_order([]) == []


# ---------------------------------------------------------------------------------------------------------
# Position changes
# ---------------------------------------------------------------------------------------------------------

L, S = PositionSide.LONG, PositionSide.SHORT


@pytest.mark.parametrize(
    ("before", "after", "kind", "was", "now"),
    [
        (None, "1", acct.ChangeKind.OPENED, None, L),
        (None, "-1", acct.ChangeKind.OPENED, None, S),
        ("0", "2.5", acct.ChangeKind.OPENED, None, L),
        ("0", "-2.5", acct.ChangeKind.OPENED, None, S),
        ("1", "3", acct.ChangeKind.INCREASED, L, L),
        ("-1", "-3", acct.ChangeKind.INCREASED, S, S),
        ("3", "1", acct.ChangeKind.REDUCED, L, L),
        ("-3", "-1", acct.ChangeKind.REDUCED, S, S),
        ("3", "0", acct.ChangeKind.CLOSED, L, None),
        ("-3", "0.0", acct.ChangeKind.CLOSED, S, None),
        ("1", "-1", acct.ChangeKind.FLIPPED, L, S),
        ("-1", "5", acct.ChangeKind.FLIPPED, S, L),
        ("0.0001", "-0.0001", acct.ChangeKind.FLIPPED, L, S),
        ("2", "2.0", acct.ChangeKind.UNCHANGED, L, L),
        ("-2", "-2", acct.ChangeKind.UNCHANGED, S, S),
        ("0", "0", acct.ChangeKind.UNCHANGED, None, None),
        (None, "0", acct.ChangeKind.UNCHANGED, None, None),
    ],
)
def test_classify(
    before: str | None, after: str, kind: acct.ChangeKind, was: PositionSide | None, now: PositionSide | None
) -> None:
    change = acct.classify(None if before is None else Decimal(before), Decimal(after))
    assert (change.kind, change.side_before, change.side_after) == (kind, was, now)
    assert change.delta == Decimal(after) - Decimal(before or 0)


def test_classify_from_fills_and_refuses_non_decimals() -> None:
    fill = acct.parse_user_fill(load("hyperliquid_ws_userFills_ccxt.json")["data"]["fills"][0])
    assert acct.classify(fill.start_position, fill.end_position).kind is acct.ChangeKind.CLOSED
    with pytest.raises(ValueError, match="after"):
        acct.classify(Decimal(1), Decimal("NaN"))
    with pytest.raises(ValueError, match="before"):
        acct.classify(1.0, Decimal(1))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Liquidations and ADL
# ---------------------------------------------------------------------------------------------------------


def test_market_liquidation_of_the_liquidated_user() -> None:
    fill = acct.parse_user_fill(node_fill(2, MARKET_LIQUIDATED))
    facts = acct.liquidation_of(MARKET_LIQUIDATED.upper().replace("0X", "0x"), fill)
    assert facts is not None
    assert (facts.wallet, facts.cause, facts.side, facts.method) == (
        MARKET_LIQUIDATED,
        "liquidation",
        PositionSide.SHORT,
        "market",
    )
    assert (facts.coin, facts.size, facts.px, facts.mark_px) == (
        "SOL",
        Decimal("0.58"),
        Decimal("72.153"),
        Decimal("72.149"),
    )
    assert facts.notional_usd == Decimal("0.58") * Decimal("72.153")
    assert (facts.oid, facts.tid, facts.dir) == (481702553777, 340554939716632, "Liquidated Cross Short")


def test_the_makers_of_a_liquidation_are_not_liquidated() -> None:
    maker = acct.parse_user_fill(node_fill(2, MAKER))
    assert acct.liquidation_of(MAKER, maker) is None


def test_backstop_liquidation_and_the_vaults_takeover_fill() -> None:
    own = acct.parse_user_fill(node_fill(3, BACKSTOPPED))
    facts = acct.liquidation_of(BACKSTOPPED, own)
    assert facts is not None
    assert (facts.cause, facts.side, facts.method, facts.closed_pnl_usd) == (
        "liquidation",
        PositionSide.LONG,
        "backstop",
        Decimal("-410.5"),
    )
    # The vault's fill reads "Liquidated Cross Long" too, with another liquidatedUser: not its liquidation.
    vault = acct.parse_user_fill(node_fill(3, VAULT))
    assert vault.dir == "Liquidated Cross Long"
    assert acct.liquidation_of(VAULT, vault) is None


def test_without_liquidated_user_dir_decides_only_when_the_fill_closes_that_side() -> None:
    own_raw, vault_raw = node_fill(3, BACKSTOPPED), node_fill(3, VAULT)
    for raw in (own_raw, vault_raw):
        del raw["liquidation"]["liquidatedUser"]
    facts = acct.liquidation_of(BACKSTOPPED, acct.parse_user_fill(own_raw))
    assert facts is not None and facts.side is PositionSide.LONG and facts.liquidated_user is None
    # The vault buys (B) from flat (startPosition 0): it closes no long of its own.
    assert acct.liquidation_of(VAULT, acct.parse_user_fill(vault_raw)) is None


def test_dir_alone_without_liquidation_object() -> None:
    raw = node_fill(3, BACKSTOPPED)
    del raw["liquidation"]
    facts = acct.liquidation_of(BACKSTOPPED, acct.parse_user_fill(raw))
    assert facts is not None
    assert (facts.cause, facts.method, facts.mark_px) == ("liquidation", None, None)
    isolated_short = node_fill(2, MARKET_LIQUIDATED)
    del isolated_short["liquidation"]
    isolated_short["dir"] = "Liquidated Isolated Short"
    facts = acct.liquidation_of(MARKET_LIQUIDATED, acct.parse_user_fill(isolated_short))
    assert facts is not None and facts.side is PositionSide.SHORT


def test_an_ordinary_close_is_no_liquidation() -> None:
    fill = acct.parse_user_fill(load("hyperliquid_ws_userFills_ccxt.json")["data"]["fills"][0])
    assert acct.liquidation_of(WHALE, fill) is None


def test_liquidated_user_with_close_dir_reads_its_side() -> None:
    raw = node_fill(3, BACKSTOPPED)
    raw["dir"] = "Close Long"
    facts = acct.liquidation_of(BACKSTOPPED, acct.parse_user_fill(raw))
    assert facts is not None and facts.side is PositionSide.LONG


def test_adl_is_reported_as_adl_never_as_liquidation() -> None:
    adl = acct.parse_user_fill(node_fill(4, DELEVERAGED))
    facts = acct.liquidation_of(DELEVERAGED, adl)
    assert facts is not None
    assert (facts.cause, facts.side, facts.liquidated_user, facts.method) == (
        "adl",
        PositionSide.SHORT,
        LIQUIDATOR,
        "backstop",
    )
    assert facts.closed_pnl_usd == Decimal("194.275035")
    # The bankrupt side (the HLP Liquidator) is the liquidated one.
    bankrupt = acct.liquidation_of(LIQUIDATOR, acct.parse_user_fill(node_fill(4, LIQUIDATOR)))
    assert bankrupt is not None and bankrupt.cause == "liquidation" and bankrupt.side is PositionSide.LONG


def test_adl_naming_the_wallet_itself_is_refused() -> None:
    raw = node_fill(4, DELEVERAGED)
    raw["liquidation"]["liquidatedUser"] = DELEVERAGED
    with pytest.raises(Refused) as caught:
        acct.liquidation_of(DELEVERAGED, acct.parse_user_fill(raw))
    assert caught.value.reason == acct.UNKNOWN_KIND


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"dir": "Liquidated Cross Short"}, acct.SIDE_MISMATCH),  # a sell (A) cannot close a short
        ({"startPosition": "-28.33"}, acct.SIDE_MISMATCH),  # a sell from a short position closes no long
        ({"startPosition": "0.0", "dir": "Liquidated"}, acct.SIDE_MISMATCH),
        ({"dir": "Backstop Borrow Liquidation"}, acct.BORROW_LIQUIDATION),
    ],
)
def test_liquidation_contradictions_are_refused(edit: dict[str, Any], reason: str) -> None:
    raw = node_fill(3, BACKSTOPPED)
    raw.update(edit)
    with pytest.raises(Refused) as caught:
        acct.liquidation_of(BACKSTOPPED, acct.parse_user_fill(raw))
    assert caught.value.reason == reason


def test_adl_side_contradiction_is_refused() -> None:
    raw = node_fill(4, DELEVERAGED)
    raw["startPosition"] = "28.53"  # a buy cannot close a long
    with pytest.raises(Refused) as caught:
        acct.liquidation_of(DELEVERAGED, acct.parse_user_fill(raw))
    assert caught.value.reason == acct.SIDE_MISMATCH


def test_borrow_liquidation_of_someone_else_is_none_and_bad_wallet_raises() -> None:
    raw = node_fill(3, VAULT)
    raw["dir"] = "Partial Borrow Liquidation"
    del raw["liquidation"]["liquidatedUser"]
    assert acct.liquidation_of(VAULT, acct.parse_user_fill(raw)) is None
    with pytest.raises(ValueError, match="wallet"):
        acct.liquidation_of("vault", acct.parse_user_fill(raw))


# Ledger: no sample in payloads/; the delta's fields are research §1.2's list, figures invented for the test.
def ledger_liquidation(**delta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "liquidation",
        "liquidatedNtlPos": "1918.03",
        "accountValue": "-12.5",
        "leverageType": "Cross",
        "liquidatedPositions": [{"coin": "SOL", "szi": "28.33"}, {"coin": "xyz:TSLA", "szi": "-3.1"}],
    }
    body.update(delta)
    return {"time": 1770337193454, "hash": "0x" + "ab" * 32, "delta": body}


def test_ledger_liquidation() -> None:
    update = acct.parse_ledger_update(ledger_liquidation())
    assert (update.type, update.at, update.hash) == ("liquidation", ms(1770337193454), "0x" + "ab" * 32)
    assert update.liquidation == acct.LedgerLiquidation(
        account_value_usd=Decimal("-12.5"),
        leverage_type="Cross",
        positions=(
            acct.LiquidatedPosition("SOL", Decimal("28.33")),
            acct.LiquidatedPosition("xyz:TSLA", Decimal("-3.1")),
        ),
        liquidated_ntl_pos_usd=Decimal("1918.03"),
    )
    assert [p.side for p in update.liquidation.positions] == [PositionSide.LONG, PositionSide.SHORT]


def test_ledger_liquidation_without_ntl_pos_and_isolated() -> None:
    raw = ledger_liquidation(leverageType="Isolated")
    del raw["delta"]["liquidatedNtlPos"]  # not in the docs' TS type (§1.2)
    update = acct.parse_ledger_update(raw)
    assert update.liquidation is not None
    assert update.liquidation.liquidated_ntl_pos_usd is None
    assert update.liquidation.leverage_type == "Isolated"


def test_ledger_other_documented_type_is_no_liquidation() -> None:
    update = acct.parse_ledger_update({"time": 1770337193454, "hash": "0x01", "delta": {"type": "deposit"}})
    assert (update.type, update.liquidation) == ("deposit", None)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (ledger_liquidation(leverageType="cross"), "leverageType"),
        (ledger_liquidation(liquidatedPositions=[]), "empty"),
        (ledger_liquidation(liquidatedPositions=[{"coin": "SOL", "szi": "0"}]), "szi"),
        (ledger_liquidation(liquidatedPositions=[{"coin": "SOL"}]), "szi"),
        (ledger_liquidation(accountValue=None), "accountValue"),
        (ledger_liquidation(liquidatedNtlPos="-1"), "liquidatedNtlPos"),
        ({"time": 1, "hash": "0x01", "delta": {"type": "mystery"}}, "not a documented"),
        ({"time": 1, "hash": "0x01"}, "delta"),
        ({"hash": "0x01", "delta": {"type": "deposit"}}, "time"),
    ],
)
def test_ledger_refused(raw: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        acct.parse_ledger_update(raw)


# ---------------------------------------------------------------------------------------------------------
# Distance and the alarm
# ---------------------------------------------------------------------------------------------------------


def test_distance_of_the_sample_long(house: dict[str, Any]) -> None:
    (eth,) = acct.parse_clearinghouse(house).positions
    mark = eth.position_value_usd / abs(eth.size)  # positionValue = |szi| × mark (§1.2)
    d = acct.distance(eth, mark)
    assert d == (mark - Decimal("2866.26936529")) / mark
    assert d is not None and Decimal("0.04") < d < Decimal("0.041")
    assert acct.distance(eth, Decimal("2800")) == (Decimal("2800") - Decimal("2866.26936529")) / Decimal("2800")


def test_distance_of_a_short_and_of_no_liquidation_price(house: dict[str, Any]) -> None:
    house["assetPositions"][0]["position"].update(szi="-1", liquidationPx="110")
    (short,) = acct.parse_clearinghouse(house).positions
    assert acct.distance(short, Decimal("100")) == Decimal("0.1")
    house["assetPositions"][0]["position"]["liquidationPx"] = None
    (none,) = acct.parse_clearinghouse(house).positions
    assert acct.distance(none, Decimal("100")) is None
    with pytest.raises(ValueError, match="mark_px"):
        acct.distance(short, Decimal(0))


def run(alarm: acct.DistanceAlarm, *distances: str | None) -> tuple[acct.DistanceAlarm, list[str | None]]:
    out: list[str | None] = []
    for d in distances:
        alarm, crossed = alarm.update(None if d is None else Decimal(d))
        out.append(None if crossed is None else str(crossed))
    return alarm, out


def test_alarm_crosses_each_threshold_once() -> None:
    _, out = run(acct.DistanceAlarm.new(), "0.2", "0.11", "0.10", "0.09", "0.05", "0.049", "0.03", "0.02", "0.0")
    assert out == [None, None, "0.10", None, "0.05", None, None, "0.02", None]


def test_alarm_hovering_does_not_realert_until_above_hysteresis() -> None:
    # h = 0.25: 5% re-arms only above 6.25%.
    _, out = run(acct.DistanceAlarm.new(), "0.049", "0.051", "0.049", "0.0625", "0.049", "0.063", "0.049")
    assert out == ["0.05", None, None, None, None, None, "0.05"]


def test_alarm_jump_alerts_the_tightest_and_disarms_all() -> None:
    alarm, out = run(acct.DistanceAlarm.new(), "0.01", "0.024", "0.015")
    assert out == ["0.02", None, None]
    assert alarm.armed == frozenset()
    alarm, out = run(alarm, "0.2", "-0.01")  # past the liquidation price: still the tightest threshold
    assert out == [None, "0.02"]


def test_alarm_none_distance_and_custom_hysteresis() -> None:
    alarm = acct.DistanceAlarm.new([Decimal("0.1")], Decimal("0"))
    alarm, out = run(alarm, None, "0.1", "0.1001", "0.1")
    assert out == [None, "0.1", None, "0.1"]
    assert alarm.reset().armed == frozenset({Decimal("0.1")})


def test_alarm_round_trips_through_json() -> None:
    alarm, _ = run(acct.DistanceAlarm.new(), "0.04")
    stored = json.loads(json.dumps(alarm.to_dict()))
    assert stored == {"thresholds": ["0.10", "0.05", "0.02"], "hysteresis": "0.25", "armed": ["0.02"]}
    restored = acct.DistanceAlarm.from_dict(stored)
    assert restored == alarm
    assert restored.update(Decimal("0.019"))[1] == Decimal("0.02")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"thresholds": [], "hysteresis": "0.25", "armed": []}, "at least one"),
        ({"thresholds": ["0.05", "0.10"], "hysteresis": "0.25", "armed": []}, "descending"),
        ({"thresholds": ["0.10", "0.10"], "hysteresis": "0.25", "armed": []}, "distinct"),
        ({"thresholds": ["1.5"], "hysteresis": "0.25", "armed": []}, "fraction"),
        ({"thresholds": ["0.1"], "hysteresis": "-1", "armed": []}, "hysteresis"),
        ({"thresholds": ["0.1"], "hysteresis": "0.25", "armed": ["0.2"]}, "armed"),
        ({"thresholds": ["0.1"], "hysteresis": 0.25, "armed": []}, "hysteresis"),
        ({"thresholds": "0.1", "hysteresis": "0.25", "armed": []}, "thresholds"),
    ],
)
def test_alarm_from_bad_dict(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        acct.DistanceAlarm.from_dict(data)


# ---------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------


def test_weights_of_the_requests_used() -> None:
    assert acct.weight("clearinghouseState") == 2
    assert acct.weight("perpDexs") == 20
    assert acct.weight("meta") == 20
    assert acct.weight("metaAndAssetCtxs") == 20
    assert acct.weight("userNonFundingLedgerUpdates", 500) == 20  # not in the per-item list (§1.4)
    assert acct.weight("userFills", 0) == 20
    assert acct.weight("userFills", 20) == 21
    assert acct.weight("userFills", 21) == 22
    assert acct.weight("userFillsByTime", 2000) == 120
    assert acct.WEIGHT_PER_MIN // acct.weight("clearinghouseState") == 600  # §1.4: ~600 polls/min/IP
    with pytest.raises(KeyError):
        acct.weight("webData2")
    with pytest.raises(ValueError, match="negative"):
        acct.weight("userFills", -1)


def test_bad_figure_and_symbol_reasons(house: dict[str, Any]) -> None:
    house["withdrawable"] = "1e5"
    with pytest.raises(Refused) as caught:
        acct.parse_clearinghouse(house)
    assert caught.value.reason == BAD_FIGURE
    house["withdrawable"] = "1"
    house["assetPositions"][0]["position"]["coin"] = "ET H"
    with pytest.raises(Refused) as caught:
        acct.parse_clearinghouse(house)
    assert caught.value.reason == BAD_SYMBOL
