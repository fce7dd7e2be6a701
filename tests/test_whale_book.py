"""A watched wallet's book: seeding, each alert kind, confirmations by fill and by ledger, ADL, replays and
snapshots older than trades, on the documented clearinghouseState, trades and userFills shapes."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from perpwatch.events import DistanceBody, Event, LiquidationBody, PositionBody
from watchers import hl_account as acct
from watchers.whale_book import WalletBook

PAYLOADS = Path(__file__).resolve().parents[2] / "shared" / "payloads"
WHALE = "0x15f43d1f2dee81424afd891943262aa90f22cc2a"  # the user of the ccxt userFills sample
OTHER = "0x" + "ab" * 20
SNAP_MS = 1708622398623  # the clearinghouseState sample's time


def load(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def snapshot(*positions: tuple[str, str, str, str | None], at_ms: int = SNAP_MS) -> acct.AccountSnapshot:
    """The docs' clearinghouseState with its one ETH position replaced by (coin, szi, value, liquidationPx)."""
    body = load("hyperliquid_clearinghouseState_docs.json")
    template = body["assetPositions"][0]
    body["assetPositions"] = []
    for coin, szi, value, liq in positions:
        entry = copy.deepcopy(template)
        entry["position"].update(coin=coin, szi=szi, positionValue=value, liquidationPx=liq)
        body["assetPositions"].append(entry)
    body["time"] = at_ms
    return acct.parse_clearinghouse(body)


def trades(*rows: tuple[int, str, str, str, str], wallet: str = WHALE) -> list[acct.WalletTrade]:
    """The ccxt trades sample, one row per (tid, side of the wallet, px, sz, time offset ms after SNAP_MS)."""
    frame = load("hyperliquid_ws_trades_ccxt.json")
    template = frame["data"][0]
    frame["data"] = []
    for tid, side, px, sz, offset in rows:
        users = [wallet, OTHER] if side == "B" else [OTHER, wallet]
        frame["data"].append(
            dict(template, coin="ETH", tid=tid, px=px, sz=sz, time=SNAP_MS + int(offset), users=users, side=side)
        )
    return [t for _, t in acct.fills_for_wallets(frame, {wallet})]


def seeded(*positions: tuple[str, str, str, str | None]) -> WalletBook:
    book = WalletBook(WHALE)
    assert book.on_snapshots([snapshot(*positions)]) == []  # seeding tells nothing
    return book


def position(event: Event) -> PositionBody:
    assert isinstance(event.body, PositionBody), event.body
    return event.body


def test_seeding_then_an_add_is_an_increase_never_an_open() -> None:
    book = seeded(("ETH", "10", "30000", None))
    [event] = book.on_trades(trades((1, "B", "3000", "2", "10")))
    body = position(event)
    assert (body.change, body.size_before, body.size_after, body.side_after.value) == (  # type: ignore[union-attr]
        "increased",
        Decimal(10),
        Decimal(12),
        "long",
    )
    assert event.subject == WHALE and event.usd == Decimal(6000) and body.price == Decimal(3000)


def test_before_seeding_trades_move_nothing() -> None:
    book = WalletBook(WHALE)
    assert book.on_trades(trades((1, "B", "3000", "2", "10"))) == []
    assert book.holdings == {}


def test_fills_of_one_order_in_one_frame_are_one_alert_and_a_replay_none() -> None:
    book = seeded()
    rows = [(1, "B", "3000", "1", "10"), (2, "B", "3002", "1", "10")]  # one taker order, two makers (one hash)
    [opened] = book.on_trades(trades(*rows))
    assert position(opened).change == "opened" and position(opened).size_after == Decimal(2)
    assert position(opened).price == Decimal(3001)
    assert book.on_trades(trades(*rows)) == []  # the stream replays after a resubscribe
    assert book.holdings["ETH"].size == Decimal(2)


def test_reduce_close_and_flip() -> None:
    book = seeded(("ETH", "-5", "15000", None))
    [cut] = book.on_trades(trades((1, "B", "3000", "2", "10")))
    [flip] = book.on_trades(trades((2, "B", "3000", "4", "20")))
    assert (position(cut).change, position(cut).size_after) == ("reduced", Decimal(3))
    assert (position(flip).change, position(flip).side_after.value, position(flip).size_after) == (  # type: ignore[union-attr]
        "flipped",
        "long",
        Decimal(1),
    )
    [closed] = book.on_trades(trades((3, "A", "3100", "1", "30")))
    assert position(closed).change == "closed" and "ETH" not in book.holdings


def test_a_trade_the_snapshot_already_holds_is_not_applied_again() -> None:
    book = seeded(("ETH", "10", "30000", None))
    assert book.on_trades(trades((1, "B", "3000", "2", "-5"))) == []  # before the seeding snapshot's time


def test_a_snapshot_older_than_applied_trades_does_not_undo_or_repeat_them() -> None:
    book = seeded(("ETH", "10", "30000", None))
    book.on_trades(trades((1, "B", "3000", "2", "100")))
    # A snapshot taken 50 ms after the seeding one, before the trade: it still says 10.
    assert book.on_snapshots([snapshot(("ETH", "10", "30000", None), at_ms=SNAP_MS + 50)]) == []
    assert book.holdings["ETH"].size == Decimal(12)
    # The next one includes the trade: nothing to tell either.
    assert book.on_snapshots([snapshot(("ETH", "12", "36000", None), at_ms=SNAP_MS + 200)]) == []


def test_what_changed_while_down_is_told_once_per_coin_from_the_snapshot() -> None:
    book = seeded(("ETH", "10", "30000", None))
    restored = WalletBook.from_json(WHALE, json.loads(json.dumps(book.to_json())))  # a restart
    later = SNAP_MS + 3_600_000
    [event] = restored.on_snapshots([snapshot(("ETH", "25", "75000", None), at_ms=later)])
    body = position(event)
    assert (body.change, body.seen_by, body.price, event.usd) == ("increased", "snapshot", None, Decimal(75000))
    assert restored.on_snapshots([snapshot(("ETH", "25", "75000", None), at_ms=later + 1000)]) == []


def test_distance_warns_once_per_step_crossed_on_one_thread() -> None:
    book = seeded(("ETH", "10", "30000", "2000"))  # mark 3000, liquidation 2000: 33% away
    warned = book.on_snapshots([snapshot(("ETH", "10", "21500", "2000"), at_ms=SNAP_MS + 1)])  # 7% away
    # One warning per step of the ladder crossed, each chat hearing the steps it chose (`/distance`).
    assert all(isinstance(e.body, DistanceBody) for e in warned)
    steps = [e.body.threshold for e in warned if isinstance(e.body, DistanceBody)]
    assert steps == [Decimal("0.20"), Decimal("0.15"), Decimal("0.10"), Decimal("0.075")]
    assert {e.thread for e in warned} == {f"hl:dist:{WHALE}:ETH"} and [e.revision for e in warned] == [1, 2, 3, 4]
    # Hovering at a step does not re-alert; deeper does, on the same thread.
    assert book.on_snapshots([snapshot(("ETH", "10", "21800", "2000"), at_ms=SNAP_MS + 2)]) == []  # 8.3%
    assert book.on_snapshots([snapshot(("ETH", "10", "21600", "2000"), at_ms=SNAP_MS + 3)]) == []
    deeper = book.on_snapshots([snapshot(("ETH", "10", "20300", "2000"), at_ms=SNAP_MS + 4)])  # 1.5% away
    assert [e.body.threshold for e in deeper if isinstance(e.body, DistanceBody)] == [
        Decimal("0.05"),
        Decimal("0.03"),
        Decimal("0.02"),
    ]
    assert [e.revision for e in deeper] == [5, 6, 7] and deeper[0].thread == warned[0].thread


def _endangered() -> WalletBook:
    book = seeded(("ETH", "10", "30000", "2000"))
    book.on_snapshots([snapshot(("ETH", "10", "20500", "2000"), at_ms=SNAP_MS + 1)])  # 2.4% away
    assert book.endangered
    return book


def _user_fill(**change: Any) -> acct.Fill:
    raw = load("hyperliquid_ws_userFills_ccxt.json")["data"]["fills"][0]
    raw = dict(raw, coin="ETH", px="2040", sz="10", side="A", startPosition="10", time=SNAP_MS + 10, **change)
    return acct.parse_user_fill(raw)


def test_a_close_near_liquidation_is_held_and_confirmed_by_the_wallets_fill() -> None:
    book = _endangered()
    assert book.on_trades(trades((7, "A", "2040", "10", "10"))) == []  # held: maybe a liquidation
    assert book.vanished([snapshot(at_ms=SNAP_MS + 20)])
    fill = _user_fill(
        dir="Liquidated Cross Long",
        tid=7,
        liquidation={"liquidatedUser": WHALE, "markPx": "2041", "method": "market"},
    )
    [event] = book.on_snapshots([snapshot(at_ms=SNAP_MS + 20)], fills=[fill])
    assert isinstance(event.body, LiquidationBody)
    assert (event.body.cause, event.body.method, event.body.side.value) == ("liquidation", "market", "long")
    assert event.usd == Decimal(20400) and event.subject == WHALE and book.held == []


def test_a_held_close_without_a_liquidation_fill_is_told_as_the_close_it_was() -> None:
    book = _endangered()
    book.on_trades(trades((7, "A", "2040", "10", "10")))
    [event] = book.on_snapshots([snapshot(at_ms=SNAP_MS + 20)], fills=[_user_fill(dir="Close Long", tid=7)])
    assert position(event).change == "closed" and position(event).seen_by == "fills"


def test_a_vanished_position_confirmed_by_the_ledger() -> None:
    book = _endangered()
    update = acct.parse_ledger_update(
        {
            "time": SNAP_MS + 15,
            "hash": "0x" + "12" * 32,
            "delta": {
                "type": "liquidation",
                "accountValue": "-12.5",
                "leverageType": "Cross",
                "liquidatedPositions": [{"coin": "ETH", "szi": "10"}],
            },
        }
    )
    [event] = book.on_snapshots([snapshot(at_ms=SNAP_MS + 20)], ledger=[update])
    assert isinstance(event.body, LiquidationBody) and event.body.method is None
    assert event.usd == Decimal(20000)  # valued at the liquidation price last seen, and the alert says so
    assert event.body.note is not None and "ledger" in event.body.note


def test_an_adl_of_the_wallet_is_told_as_adl_never_as_its_liquidation() -> None:
    book = _endangered()
    fill = _user_fill(dir="Auto-Deleveraging", tid=9)
    [event] = book.on_snapshots([snapshot(at_ms=SNAP_MS + 20)], fills=[fill])
    assert isinstance(event.body, LiquidationBody) and event.body.cause == "adl"


def test_a_fill_naming_another_liquidated_user_is_not_this_wallets_liquidation() -> None:
    book = _endangered()
    fill = _user_fill(
        dir="Liquidated Cross Long", tid=7, liquidation={"liquidatedUser": OTHER, "markPx": "2041", "method": "market"}
    )
    [event] = book.on_snapshots([snapshot(at_ms=SNAP_MS + 20)], fills=[fill])
    assert position(event).change == "closed" and position(event).seen_by == "snapshot"


def test_the_book_survives_json() -> None:
    book = _endangered()
    book.on_trades(trades((7, "A", "2040", "4", "10")))
    again = WalletBook.from_json(WHALE, json.loads(json.dumps(book.to_json())))
    assert again.to_json() == book.to_json()
    assert again.endangered and again.held[0].event == book.held[0].event
