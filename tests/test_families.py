"""The body union and the family registry stay in step: a body without a renderer cannot ship."""

from __future__ import annotations

import typing

from bot.families import family_of, registered, render_event, render_summary
from perpwatch.events import EventBody
from tests.factories import liquidation


def _union_kinds() -> set[str]:
    inner = typing.get_args(EventBody)[0]
    members = typing.get_args(inner) or (inner,)
    return {typing.get_args(m.model_fields["kind"].annotation)[0] for m in members}


def test_every_body_in_the_union_has_a_family_and_every_family_a_body() -> None:
    assert _union_kinds() == set(registered())


def test_a_family_renders_its_event_and_its_summary_line() -> None:
    event = liquidation(key="a", usd="2500000")
    assert family_of(event).kind == "liquidation"
    assert "LONG liquidated" in render_event(event).title
    summary = render_summary([event, liquidation(key="b", side="short")], reason="digest")
    assert "Quiet-hours digest: 2 alerts" in summary.title
    assert summary.items[0].startswith("$2.50M BTCUSDT long on Binance")


def test_adl_and_method_are_said_never_called_a_liquidation() -> None:
    base = liquidation(venue="hyperliquid", symbol="BTC", side="short")
    adl = base.model_copy(update={"body": base.body.model_copy(update={"cause": "adl", "method": "backstop"})})
    alert = render_event(adl)
    assert alert.title == "🟧 BTC SHORT auto-deleveraged on Hyperliquid"
    assert ("Method", "backstop (taken by the venue's vault)") in [(f.name, f.value) for f in alert.fields]
    assert "liquidated" not in alert.title
    assert render_event(base).title == "🟩 BTC SHORT liquidated on Hyperliquid"
