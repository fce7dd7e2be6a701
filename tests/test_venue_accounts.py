"""Lighter `account` and Pacifica `positions` parsers, on the docs sample (Pacifica) and on a body built from
the official SDK's field list (Lighter: the research has no captured account answer, so the values below are
made up; only the field names and types are the SDK's), edited copies, and refused input; and a `WalletBook`
of each venue fed their snapshots."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpwatch.events import DistanceBody, PositionBody, Venue, is_solana_address
from watchers import lighter_accounts, pacifica_accounts
from watchers.validate import Refused
from watchers.whale_book import WalletBook

PAYLOADS = Path("/work/shared/payloads")
AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
L1 = "0x" + "5a" * 20
SOL = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"


def pacifica_sample() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / "pacifica_rest_positions_docs.json").read_text())
    return data


def lighter_position(symbol: str = "ETH", market_id: int = 0, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "market_id": market_id,
        "symbol": symbol,
        "initial_margin_fraction": "5.00",
        "open_order_count": 0,
        "pending_order_count": 0,
        "position_tied_order_count": 0,
        "sign": 1,
        "position": "10.0000",
        "avg_entry_price": "3000.00",
        "position_value": "31000.000000",
        "unrealized_pnl": "1000.000000",
        "realized_pnl": "0.000000",
        "liquidation_price": "2500.00",
        "total_funding_paid_out": "0.000000",
        "margin_mode": 0,
        "allocated_margin": "0.000000",
        "total_discount": "0.000000",
        "margin_set_flag": 0,
    }
    row.update(fields)
    return row


def lighter_account(index: int, positions: list[dict[str, Any]], address: str = L1) -> dict[str, Any]:
    return {
        "code": 0,
        "account_type": 0,
        "index": index,
        "l1_address": address,
        "cancel_all_time": 0,
        "total_order_count": 0,
        "total_isolated_order_count": 0,
        "pending_order_count": 0,
        "available_balance": "4000.000000",
        "status": 1,
        "collateral": "5000.000000",
        "account_index": index,
        "name": "",
        "description": "",
        "can_invite": True,
        "referral_points_percentage": "",
        "positions": positions,
        "assets": [],
        "total_asset_value": "6000.000000",
        "cross_asset_value": "6000.000000",
        "shares": [],
        "created_at": 1737098461,
        "transaction_time": 1764676800000000,
        "can_rfq": False,
        "cross_initial_margin_requirement": "1550.000000",
        "cross_maintenance_margin_requirement": "930.000000",
        "can_rfq_market_ids": [],
        "agent_enabled": False,
    }


def lighter_body(*accounts: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "total": len(accounts), "accounts": list(accounts)}


# --- Pacifica --------------------------------------------------------------------------------------------


def test_pacifica_docs_sample() -> None:
    snap = pacifica_accounts.parse_positions(pacifica_sample(), at=AT)
    assert snap.at == AT and snap.dex == "" and snap.account_value_usd is None
    [aave] = snap.positions
    assert aave.coin == "AAVE"
    assert aave.size == Decimal("-223.72")  # "ask": short
    assert aave.entry_px == Decimal("279.283134")
    assert aave.position_value_usd == Decimal("223.72") * Decimal("279.283134")  # at entry: no mark given
    assert aave.liquidation_px is None  # Pacifica publishes none
    assert aave.margin_used_usd is None  # a cross position: "margin" is shown for isolated only
    assert (aave.leverage, aave.unrealized_pnl_usd, aave.return_on_equity, aave.max_leverage) == (None,) * 4


def test_pacifica_isolated_long_and_no_positions() -> None:
    body = pacifica_sample()
    body["data"][0].update(side="bid", isolated=True, margin="1200.5")
    [p] = pacifica_accounts.parse_positions(body, at=AT).positions
    assert p.size == Decimal("223.72") and p.margin_used_usd == Decimal("1200.5")
    del body["data"][0]["margin"]
    body["data"][0]["isolated"] = False  # margin may be absent on a cross position
    assert pacifica_accounts.parse_positions(body, at=AT).positions[0].margin_used_usd is None
    body["data"] = []
    assert pacifica_accounts.parse_positions(body, at=AT).positions == ()


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda b: b.update(success=False, error="bad account", code=400), "success=False"),
        (lambda b: b.pop("data"), "data"),
        (lambda b: b["data"][0].update(side="long"), "data[0].side"),
        (lambda b: b["data"][0].update(amount="0"), "data[0].amount"),
        (lambda b: b["data"][0].update(amount=1.5), "data[0].amount"),
        (lambda b: b["data"][0].pop("entry_price"), "data[0].entry_price"),
        (lambda b: b["data"][0].update(isolated="false"), "data[0].isolated"),
        (lambda b: b["data"][0].update(isolated=True, margin=None), "data[0].margin"),
        (lambda b: b["data"][0].update(funding="NaN"), "data[0].funding"),
        (lambda b: b["data"][0].update(created_at="1754928414996"), "data[0].created_at"),
        (lambda b: b["data"][0].update(symbol="AAVE\u202e"), "data[0].symbol"),
        (lambda b: b["data"].append(copy.deepcopy(b["data"][0])), "twice"),
    ],
)
def test_pacifica_refuses_naming_the_field(edit: Any, names: str) -> None:
    body = pacifica_sample()
    edit(body)
    with pytest.raises(ValueError, match=names.replace("[", r"\[").replace("]", r"\]")):
        pacifica_accounts.parse_positions(body, at=AT)


def test_pacifica_params_take_solana_addresses_only() -> None:
    assert pacifica_accounts.params(SOL) == {"account": SOL}
    assert is_solana_address(SOL) and not is_solana_address("ab" * 20) and not is_solana_address(L1)
    with pytest.raises(ValueError, match="not a Solana"):
        pacifica_accounts.params(L1)


# --- Lighter ---------------------------------------------------------------------------------------------


def test_lighter_account_with_a_sub_account_and_a_zero_row() -> None:
    main = lighter_account(
        7,
        [
            lighter_position(),
            lighter_position(
                "BTC", 1, sign=-1, position="0.5000", avg_entry_price="90000.0", position_value="-46000.00"
            ),
            lighter_position("HYPE", 24, position="0.00", sign=0),  # once traded, nothing held: skipped
        ],
    )
    sub = lighter_account(
        281474976710654, [lighter_position(liquidation_price="0")], address=L1.upper()[:2].lower() + L1[2:].upper()
    )
    snaps = lighter_accounts.parse_accounts(lighter_body(sub, main), address=L1, at=AT)
    assert [s.dex for s in snaps] == ["", "281474976710654"]  # the lowest index is the main one
    first, second = snaps
    assert first.account_value_usd == Decimal("6000.000000") and first.at == AT
    eth, btc = first.positions
    assert (eth.coin, eth.size, eth.entry_px, eth.liquidation_px) == ("ETH", Decimal(10), Decimal(3000), Decimal(2500))
    assert eth.position_value_usd == Decimal(31000) and eth.unrealized_pnl_usd == Decimal(1000)
    assert (eth.leverage, eth.margin_used_usd, eth.return_on_equity, eth.max_leverage) == (None,) * 4
    assert (btc.coin, btc.size, btc.position_value_usd) == ("BTC", Decimal("-0.5"), Decimal(46000))
    [sub_eth] = second.positions
    assert sub_eth.coin == "281474976710654:ETH" and sub_eth.dex == "281474976710654"
    assert sub_eth.liquidation_px is None  # "0": no liquidation price given, never a price of zero


def test_lighter_no_account_is_an_empty_list() -> None:
    assert lighter_accounts.parse_accounts({"code": 200, "total": 0, "accounts": []}, address=L1, at=AT) == []
    assert lighter_accounts.params(L1) == {"by": "l1_address", "value": L1}
    with pytest.raises(ValueError, match="not an 0x"):
        lighter_accounts.params(SOL)


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda b: b.update(code=21100, message="account not found"), "code=21100"),
        (lambda b: b.pop("accounts"), "accounts"),
        (lambda b: b["accounts"][0].update(l1_address="0x" + "11" * 20), "l1_address"),
        (lambda b: b["accounts"][0].update(index="7"), "index"),
        (lambda b: b["accounts"].append(copy.deepcopy(b["accounts"][0])), "index 7 twice"),
        (lambda b: b["accounts"][0]["positions"][0].update(sign=2), "sign=2"),
        (lambda b: b["accounts"][0]["positions"][0].update(sign=0), "sign=0"),
        (lambda b: b["accounts"][0]["positions"][0].update(position="-1"), "position"),
        (lambda b: b["accounts"][0]["positions"][0].update(avg_entry_price="0"), "avg_entry_price"),
        (lambda b: b["accounts"][0]["positions"][0].update(liquidation_price=None), "liquidation_price"),
        (lambda b: b["accounts"][0]["positions"][0].update(unrealized_pnl=12.5), "unrealized_pnl"),
        (lambda b: b["accounts"][0]["positions"][0].update(market_id=None), "market_id"),
        (lambda b: b["accounts"][0].update(total_asset_value="1e3"), "total_asset_value"),
        (lambda b: b["accounts"][0]["positions"].append(lighter_position()), "twice"),
    ],
)
def test_lighter_refuses_naming_the_field(edit: Any, names: str) -> None:
    body = lighter_body(lighter_account(7, [lighter_position()]))
    edit(body)
    with pytest.raises(ValueError, match=names):
        lighter_accounts.parse_accounts(body, address=L1, at=AT)


def test_refusals_of_figures_are_refused_with_a_reason() -> None:
    body = lighter_body(lighter_account(7, [lighter_position(avg_entry_price="-3")]))
    with pytest.raises(Refused):
        lighter_accounts.parse_accounts(body, address=L1, at=AT)


# --- the books ---------------------------------------------------------------------------------------------


def test_a_lighter_book_warns_of_distance_under_its_own_venue() -> None:
    book = WalletBook(L1, venue=Venue.LIGHTER, link=None, source="lighter_accounts")

    def snap(size: str, liq: str, at: datetime) -> Any:
        body = lighter_body(lighter_account(7, [lighter_position(position=size, liquidation_price=liq)]))
        return lighter_accounts.parse_accounts(body, address=L1, at=at)

    assert book.on_snapshots(snap("10", "2500", AT)) == []  # seeding tells nothing
    events = book.on_snapshots(snap("12", "3050", AT + timedelta(minutes=1)))  # mark 3100: 1.6% away
    kinds = {type(e.body) for e in events}
    assert kinds == {PositionBody, DistanceBody}
    for event in events:
        assert event.venue is Venue.LIGHTER and event.link is None and event.source == "lighter_accounts"
        assert event.key.startswith("lighter:")
    [position] = [e.body for e in events if isinstance(e.body, PositionBody)]
    assert (position.change, position.seen_by, position.size_after, position.note) == (
        "increased",
        "snapshot",
        Decimal(12),
        None,
    )


def test_a_pacifica_book_never_warns_and_says_why() -> None:
    book = WalletBook(SOL, venue=Venue.PACIFICA, link=None, position_note=pacifica_accounts.NO_LIQUIDATION_PRICE)
    body = pacifica_sample()
    assert book.on_snapshots([pacifica_accounts.parse_positions(body, at=AT)]) == []
    body["data"][0]["amount"] = "300"
    [event] = book.on_snapshots([pacifica_accounts.parse_positions(body, at=AT + timedelta(minutes=1))])
    assert event.venue is Venue.PACIFICA and event.subject == SOL  # base58 keeps its case
    assert isinstance(event.body, PositionBody) and event.body.wallet == SOL
    assert event.body.note is not None and "no liquidation price" in event.body.note
    assert (event.body.change, event.body.side_after, event.body.size_after) == ("increased", "short", Decimal(300))


def test_the_alerts_name_the_venue_and_pacificas_says_why_no_distance() -> None:
    from bot.families.registry import render_event

    book = WalletBook(SOL, venue=Venue.PACIFICA, link=None, position_note=pacifica_accounts.NO_LIQUIDATION_PRICE)
    body = pacifica_sample()
    book.on_snapshots([pacifica_accounts.parse_positions(body, at=AT)])
    body["data"][0]["amount"] = "300"
    [event] = book.on_snapshots([pacifica_accounts.parse_positions(body, at=AT + timedelta(minutes=1))])
    alert = render_event(event)
    assert alert.title.endswith("AAVE SHORT increased on Pacifica")
    assert alert.footer is not None and "publishes no liquidation price" in alert.footer
    assert "Seen in a snapshot" in alert.footer
