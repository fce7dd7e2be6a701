"""Known wallets: the bundled list loads and every entry is sourced; a malformed entry is refused with its name;
/watch <name> watches the named address on Telegram and Discord, and /watchlist shows the known name."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from bot import known_wallets
from bot.commands import values
from bot.known_wallets import MAX_QUOTE, KnownWallet, KnownWalletsError, bundled, loads, parse
from tests.conftest import MakeSettings
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_commands_telegram import watchlist
from tests.test_e2e_discord import PLAIN_MEMBER, channel_chat, discord_api, slash, text
from tests.test_e2e_discord import running_bot as running_discord_bot
from tests.test_e2e_telegram import command, running_bot

__all__ = ["discord_api"]  # the Discord fake fixture, used here as in tests/test_e2e_discord.py

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
OTHER = "0x" + "cd" * 20


def entry(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "alice",
        "address": ALICE,
        "venue": "hyperliquid",
        "source": "https://example.com/alice",
        "quote": f"the trader alice ({ALICE})",
        "retrieved": date(2026, 12, 2),
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


# --- the bundled file ------------------------------------------------------------------------------------


def test_the_bundled_file_loads_and_every_entry_is_sourced() -> None:
    wallets = bundled().wallets
    assert wallets, "the bundled list is empty: /watch <name> has nothing to accept"
    for wallet in wallets:
        assert wallet.source.startswith("https://"), wallet.name
        assert 0 < len(wallet.quote) <= MAX_QUOTE, wallet.name
        assert wallet.address in wallet.quote.lower(), wallet.name
        assert any(name.lower() in wallet.quote.lower() for name in wallet.names), wallet.name
        assert wallet.retrieved <= date(2026, 12, 2), wallet.name
        assert wallet.venue == "hyperliquid"
        assert wallet.address == wallet.address.lower()
        for name in wallet.names:
            # What a chat types is what /label would accept, and finds the wallet in any case.
            assert values.label(name) == name
            assert known_wallets.lookup(name.upper()) == wallet
            assert known_wallets.lookup(f" {name.lower()} ") == wallet
        assert known_wallets.label_for(wallet.address.upper()) == wallet.name


def test_lookups_miss_cleanly() -> None:
    assert known_wallets.lookup("nobody-at-all") is None
    assert known_wallets.label_for(OTHER) is None


def test_the_file_format_round_trips() -> None:
    wallets = loads(
        f"""
[[wallet]]
name = "alice"
address = "{ALICE}"
venue = "hyperliquid"
source = "https://example.com/alice"
quote = "Alice - {ALICE}"
retrieved = 2026-12-02
aliases = ["AliceTrades"]
"""
    )
    [alice] = wallets.wallets
    assert alice.retrieved == date(2026, 12, 2)
    assert wallets.lookup("alicetrades") is alice
    assert wallets.label_for(ALICE) == "alice"
    assert wallets.names == ("alice",)


# --- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"source": None}, "source: Field required"),
        ({"source": ""}, "source"),
        ({"source": "example.com/alice"}, "is not an https:// URL"),
        ({"source": "http://example.com/alice"}, "is not an https:// URL"),
        ({"quote": None}, "quote: Field required"),
        ({"quote": "x" * (MAX_QUOTE + 1)}, "quote: String should have at most 200 characters"),
        ({"quote": "the trader alice"}, "the quote does not contain the full address"),
        ({"quote": f"a trader at {ALICE}"}, "the quote does not contain the name or an alias"),
        ({"retrieved": None}, "retrieved: Field required"),
        ({"retrieved": "yesterday"}, "retrieved"),
        ({"address": ALICE.upper().replace("0X", "0x")}, "is not 0x followed by 40 lowercase hex digits"),
        ({"address": ALICE[:-1]}, "is not 0x followed by 40 lowercase hex digits"),
        ({"address": None}, "address: Field required"),
        ({"venue": "binance"}, "venue"),
        ({"name": "0xalice"}, "is not a chat label"),
        ({"name": "alice smith"}, "is not a chat label"),
        ({"name": "a" * 33}, "is not a chat label"),
        ({"aliases": ["ok", "not ok"]}, "alias 'not ok' is not a chat label"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(overrides: dict[str, Any], expected: str) -> None:
    good = entry(name="bob", address=BOB, quote=f"bob {BOB}", source="https://example.com/bob")
    with pytest.raises(KnownWalletsError) as refused:
        parse([good, entry(**overrides)])
    message = str(refused.value)
    name = overrides.get("name", "alice")
    assert message.startswith(f"known wallet #2 ({name!r}): ") or (name is None and "#2" in message)
    assert expected in message


def test_an_entry_without_a_name_is_refused_by_its_position() -> None:
    with pytest.raises(KnownWalletsError, match=r"^known wallet #1: name: Field required"):
        parse([entry(name=None)])


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (
            entry(name="ALICE", address=BOB, quote=f"ALICE {BOB}"),
            "known wallet 'ALICE': name 'ALICE' is already used by 'alice'",
        ),
        (
            entry(name="bob", address=BOB, quote=f"bob {BOB}", aliases=["Alice"]),
            "known wallet 'bob': name 'Alice' is already used by 'alice'",
        ),
        (entry(name="bob", quote=f"bob {ALICE}"), f"known wallet 'bob': address {ALICE} is already 'alice'"),
    ],
)
def test_duplicates_are_refused(second: dict[str, Any], expected: str) -> None:
    with pytest.raises(KnownWalletsError) as refused:
        parse([entry(), second])
    assert str(refused.value) == expected


def test_a_malformed_file_is_refused() -> None:
    with pytest.raises(KnownWalletsError, match="is not TOML"):
        loads("[[wallet]\nname =")
    with pytest.raises(KnownWalletsError, match="unknown tables: wallets"):
        loads("[[wallets]]\nname = 'alice'\n")
    with pytest.raises(KnownWalletsError, match=r"array of tables"):
        loads("wallet = 'alice'\n")
    assert loads("").wallets == ()


def test_the_model_is_frozen() -> None:
    wallet = KnownWallet.model_validate(entry())
    with pytest.raises(ValueError, match="frozen"):
        wallet.name = "mallory"  # type: ignore[misc]


# --- the commands on both platforms ---------------------------------------------------------------------

KNOWN = bundled().wallets[0]


@pytest.mark.engines
async def test_watch_by_known_name_on_telegram(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        reply = (await command(telegram, f"/watch {KNOWN.name.upper()}")).body
        assert f"Watching {KNOWN.address} as {KNOWN.name}." in reply
        assert f"is the known wallet {KNOWN.name}" in reply and KNOWN.source in reply
        assert await watchlist(app) == [(KNOWN.address, KNOWN.name)]
        assert f"{KNOWN.address} — {KNOWN.name}" in (await command(telegram, "/watchlist")).body
        assert (
            f"Already watching {KNOWN.address} as {KNOWN.name}."
            in (await command(telegram, f"/watch {KNOWN.name}")).body
        )
        # A name the chat gives wins over the known one; the known one no longer overrides it.
        assert "as mine" in (await command(telegram, f"/watch {KNOWN.name} mine")).body
        assert f"Already watching {KNOWN.address} as mine." in (await command(telegram, f"/watch {KNOWN.name}")).body
        assert await watchlist(app) == [(KNOWN.address, "mine")]

        unknown = (await command(telegram, "/watch nobody-at-all")).body
        assert "or a known wallet's name" in unknown and f"known wallets: {KNOWN.name}" in unknown
        assert "Usage: /watch" in unknown
        assert "or a known wallet's name" in (await command(telegram, "/watch bad/name")).body
        assert "is not a wallet address" in (await command(telegram, f"/watch {OTHER[:-1]}")).body
        assert await watchlist(app) == [(KNOWN.address, "mine")]

        assert f"known wallets: {KNOWN.name}" in (await command(telegram, "/help")).body


@pytest.mark.engines
async def test_watchlist_names_a_known_address_the_chat_left_unlabelled_on_telegram(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance) as app:
        # /watch 0x… is unchanged: no label is stored for a known address typed as an address.
        assert f"Watching {KNOWN.address}." in (await command(telegram, f"/watch {KNOWN.address}")).body
        assert f"Watching {OTHER} as desk." in (await command(telegram, f"/watch {OTHER} desk")).body
        assert await watchlist(app) == [(KNOWN.address, None), (OTHER, "desk")]
        listed = (await command(telegram, "/watchlist")).body
        assert f"{KNOWN.address} — {KNOWN.name} (known wallet)" in listed
        assert f"{OTHER} — desk" in listed


@pytest.mark.engines
async def test_watch_by_known_name_on_discord(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with running_discord_bot(make_settings, fake, binance) as app:
        reply = text(await slash(fake, "watch", {"address": KNOWN.name}))
        assert reply.startswith(f"Watching {KNOWN.address} as {KNOWN.name}.")
        assert KNOWN.source in reply
        chat = await channel_chat(app, fake)
        assert [(e.address, e.label) for e in await app.store.chats.watchlist(chat.id)] == [(KNOWN.address, KNOWN.name)]
        assert text(await slash(fake, "watchlist", permissions=PLAIN_MEMBER)) == (
            f"**Watch list**\n{KNOWN.address} — {KNOWN.name}"
        )
        assert "or a known wallet's name" in text(await slash(fake, "watch", {"address": "nobody-at-all"}))
        assert text(await slash(fake, "unwatch", {"target": KNOWN.name})) == f"Stopped watching {KNOWN.name}."
        assert text(await slash(fake, "watch", {"address": KNOWN.address})) == f"Watching {KNOWN.address}."
        assert text(await slash(fake, "watchlist", permissions=PLAIN_MEMBER)) == (
            f"**Watch list**\n{KNOWN.address} — {KNOWN.name} (known wallet)"
        )
