"""Programmes are data: the bundled defaults load whole, and a bad entry is refused with where and why while the
others still load."""

from __future__ import annotations

import pytest

from bot.buyback_programmes import aster_wallets, bundled, parse_bundled, programme_from

GOOD = """
[[programme]]
id = "hl"
kind = "hyperliquid_spot_balance"
token = "coingecko:hyperliquid"
symbol = "HYPE"
source = "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/fees"
[programme.params]
user = "0xfefefefefefefefefefefefefefefefefefefefe"
token_id = "0x0d01dc56dcaaca66ad901c959b4011ec"
"""


def test_the_bundled_programmes_load_whole_each_with_its_sources() -> None:
    programmes, refused = bundled()
    assert refused == []
    assert [p.id for p in programmes] == ["hyperliquid-af", "aster", "lighter-treasury", "edgex"]
    for p in programmes:
        assert p.source.startswith("https://") and p.supply_source and p.supply_source.startswith("https://")
        assert p.token.startswith(("coingecko:", "ethereum:"))  # never a ticker alone
        assert p.total_supply and p.milestone_tokens
    af = programmes[0]
    assert af.params["user"] == "0x" + "fe" * 20 and af.kind == "hyperliquid_spot_balance"


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('kind = "hyperliquid_spot_balance"', 'kind = "magic"', "kind 'magic' is not one of"),
        ('symbol = "HYPE"', 'symbol = "HYPE"\ncolour = "red"', "unknown field(s) colour"),
        ('symbol = "HYPE"', 'symbol = "HYPE"\ntotal_supply = "1000"', "total_supply and supply_source go together"),
        ('token = "coingecko:hyperliquid"', 'token = "HYPE"', "never a ticker alone"),
        ('user = "0xfefefefefefefefefefefefefefefefefefefefe"', 'user = "fefe"', "user"),
    ],
)
def test_one_bad_entry_is_refused_with_where_and_why_and_the_rest_load(old: str, new: str, reason: str) -> None:
    bad = GOOD.replace('id = "hl"', 'id = "bad"').replace(old, new)
    programmes, refused = parse_bundled(bad + GOOD, "t.toml")
    assert [p.id for p in programmes] == ["hl"]
    assert [r.where for r in refused] == ["t.toml programme #1 (bad)"] and reason in refused[0].reason


def test_a_file_that_is_not_toml_is_refused_as_a_whole_with_its_position() -> None:
    programmes, refused = parse_bundled("[[programme]\nid=", "t.toml")
    assert programmes == [] and "not valid TOML" in refused[0].reason and "line 1" in refused[0].reason


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"token": "HYPE"}, "never a ticker alone"),
        ({"id": "Has Space"}, "id 'has space' must be"),
        ({"source": "http://plain.example"}, "source must be the https:// address"),
        ({"params": {"user": "0x12", "token_id": "0x0d01dc56dcaaca66ad901c959b4011ec"}}, "user"),
        ({"symbol": "hype!"}, "symbol 'HYPE!' must be"),
    ],
)
def test_an_operators_programme_is_checked_the_same_way(entry: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "id": "mine",
        "kind": "hyperliquid_spot_balance",
        "token": "coingecko:hyperliquid",
        "symbol": "HYPE",
        "source": "https://hyperliquid.gitbook.io/hyperliquid-docs/trading/fees",
        "params": {"user": "0x" + "fe" * 20, "token_id": "0x0d01dc56dcaaca66ad901c959b4011ec"},
    }
    assert programme_from(base, origin="chat").origin == "chat"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        programme_from({**base, **entry}, origin="chat")


def test_further_aster_wallets_from_the_setting_are_each_a_programme_of_their_own() -> None:
    from bot.settings import SettingsError, load_settings

    wallet = "0x" + "ab" * 20
    settings = load_settings(aster_buyback_wallets=f" {wallet.upper().replace('0X', '0x')} ,{wallet}")
    assert settings.aster_buyback_wallets == [wallet]
    programmes, _ = bundled()
    [extra] = aster_wallets(programmes, settings.aster_buyback_wallets)
    assert extra.id == "aster-abababab" and extra.params["wallet"] == wallet and extra.kind == "aster_chain_fills"
    with pytest.raises(SettingsError, match=r"PERPWATCH_ASTER_BUYBACK_WALLETS.*'0x12' is not a 0x wallet address"):
        load_settings(aster_buyback_wallets="0x12")
