"""The calendar from chat, through the real python-telegram-bot against the loopback Bot API (and the same
commands registered for Discord): /upcoming with countdowns as precise as each date, /leads, operators'
/calendar add|edit|cancel with clear errors, a chat edit surviving the next start's merge, a reminder sent
end to end on a frozen clock, and a failing DefiLlama refresh shown in /status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.commands import by_name
from perpwatch.clock import FrozenClock
from tests.conftest import MakeSettings
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.calendar_sources import CalendarSources
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegramApi
from tests.test_e2e_discord import OPERATOR as DISCORD_OPERATOR
from tests.test_e2e_discord import PLAIN_MEMBER, discord_api, slash, text
from tests.test_e2e_discord import running_bot as discord_bot
from tests.test_e2e_telegram import USER, command, running_bot

__all__ = ["discord_api"]  # the Discord fake's fixture, used below

pytestmark = pytest.mark.engines

T0 = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
OPERATOR: dict[str, Any] = {"admin_ids": f"telegram:{USER}", "calendar_sources": "none"}


async def test_upcoming_counts_down_no_finer_than_each_date_is_known(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    clock = FrozenClock(T0)
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False, **OPERATOR):
        text = (await command(telegram, "/upcoming 10")).body
        lines = text.splitlines()
        hype = next(line for line in lines if "hype-team-distribution@2026-12-06" in line)
        assert hype.startswith("Sun 2026-12-06 (day; time not given), in 4 days — Hyperliquid (HYPE)")
        assert "coingecko:hyperliquid" in hype and "figure announced" in hype and "bitcoinblog.info" in hype
        pacifica = next(line for line in lines if "pacifica-points-snapshot@2026-12-03" in line)
        assert pacifica.startswith("2026-12-03 00:00 UTC, in 6h 0m — Pacifica")
        variational = next(line for line in lines if "variational-tge" in line)
        assert variational.startswith("sometime in Q4 2026, window open now — Variational (VAR)")
        assert "only rumoured" in variational
        assert "hype-core-contributors-model@2026-12-29" not in text  # beyond 10 days
        aster = (await command(telegram, "/upcoming 30 aster-2")).body.splitlines()[1:]
        assert aster and all("Aster (ASTER)" in line for line in aster)
        hype_only = (await command(telegram, "/upcoming HYPE")).body
        assert "hype-core-contributors-model@2026-12-29" in hype_only and "Aster" not in hype_only
        assert "is not a number of days" in (await command(telegram, "/upcoming soon HYPE")).body


async def test_leads_are_validated_and_stored_per_chat(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    async with running_bot(make_settings, telegram, binance, **OPERATOR) as app:
        assert "come 24h, 1h before each event" in (await command(telegram, "/leads 1h,24h")).body
        chat = await app.store.chats.get("telegram", str(USER))
        assert chat is not None and await app.store.chats.reminder_leads(chat.id) == ["24h", "1h"]
        refused = (await command(telegram, "/leads 2h")).body
        assert "is not a list of lead times; choose from 7d, 3d, 24h, 6h, 1h" in refused
        assert await app.store.chats.reminder_leads(chat.id) == ["24h", "1h"]
        assert "(the default)" in (await command(telegram, "/leads default")).body


async def test_operators_add_edit_and_cancel_and_a_chat_edit_survives_the_next_merge(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    clock = FrozenClock(T0)
    add = (
        "/calendar add lit-extra project=Lighter token=LIT coingecko=lighter type=unlock start=2026-12-20 "
        "amount=5m status=announced figure=announced source=https://example.org/lit title=extra_tranche"
    )
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False, **OPERATOR) as app:
        assert "operator command" in (await command(telegram, add, chat=777, user=777)).body
        assert await app.store.calendar.get("lit-extra") is None
        reply = (await command(telegram, add)).body
        assert "lit-extra: added; reminders scheduled" in reply and "5,000,000 LIT" in reply
        stored = await app.store.calendar.get("lit-extra")
        assert stored is not None and stored.locked and stored.edited_by == f"telegram:{USER}"
        assert stored.entry.title == "extra tranche"
        no_key = add.replace("lit-extra", "no-key").replace(" coingecko=lighter", "")
        assert "a ticker alone is no key" in (await command(telegram, no_key)).body
        assert await app.store.calendar.get("no-key") is None
        assert "is not a date" in (await command(telegram, "/calendar edit lit-extra start=2026-13-01")).body
        assert "no calendar entry 'nope'" in (await command(telegram, "/calendar edit nope amount=1")).body
        assert "unknown action 'delete'" in (await command(telegram, "/calendar delete lit-extra")).body
        moved = (await command(telegram, "/calendar edit hype-team-distribution@2026-12-06 start=2026-12-07")).body
        assert "moved; reminders rescheduled, 0 chat(s) already reminded were told" in moved
        assert "cancelled" in (await command(telegram, "/calendar cancel lit-extra")).body
        assert "No prediction-market hints" in (await command(telegram, "/calendar hints")).body
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False, **OPERATOR) as app:
        kept = await app.store.calendar.get("hype-team-distribution@2026-12-06")
        assert kept is not None and kept.entry.starts_at == datetime(2026, 12, 7, tzinfo=UTC) and kept.locked
        gone = await app.store.calendar.get("lit-extra")
        assert gone is not None and gone.entry.status.value == "cancelled"
        assert "lit-extra" not in (await command(telegram, "/upcoming 30")).body


async def test_a_reminder_reaches_a_subscribed_chat_at_its_lead_time(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    clock = FrozenClock(T0)
    async with running_bot(make_settings, telegram, binance, clock=clock, pacing=False, **OPERATOR):
        assert "Subscribed" in (await command(telegram, "/subscribe unlock")).body
        await command(
            telegram,
            "/calendar add soon project=Lighter token=LIT coingecko=lighter type=unlock start=2026-12-02T20:00 "
            "amount=1000000 status=confirmed figure=announced source=https://example.org/soon",
        )
        for _ in range(130):  # to 19:05: the 1 h reminder falls due at 19:00 and the job looks every 30 s
            await clock.advance(30)
        await telegram.wait_until(lambda: any("unlock in 1 hour" in m.body for m in telegram.sent))
        [reminder] = [m for m in telegram.sent if "unlock in 1 hour" in m.body]
        assert "Lighter (LIT)" in reminder.body and "1,000,000 LIT" in reminder.body
        assert "2026-12-02 20:00 UTC" in reminder.body and "example.org/soon" in reminder.body


async def test_a_failing_model_refresh_shows_in_status_and_the_bundled_calendar_stays(
    make_settings: MakeSettings, telegram: FakeTelegramApi, binance: FakeForceOrderServer
) -> None:
    clock = FrozenClock(T0)
    async with CalendarSources(clock) as datasets:
        datasets.status_next = [402]
        async with running_bot(
            make_settings,
            telegram,
            binance,
            clock=clock,
            pacing=False,
            calendar_sources="defillama_emissions",
            defillama_datasets_url=datasets.url("/"),
            defillama_slugs="hyperliquid",
        ) as app:
            await datasets.until(lambda: bool(datasets.requests()))
            status = (await command(telegram, "/status")).body
            line = next(x for x in status.splitlines() if x.startswith("defillama_emissions"))
            assert "down" in line and "HTTP 402" in line and "bundled calendar in force" in line
            assert await app.store.calendar.get("hype-team-distribution@2026-12-06") is not None


def test_the_calendar_commands_are_one_spec_for_both_platforms() -> None:
    calendar = by_name("calendar")
    assert calendar is not None and calendar.access.value == "operators"
    assert len(calendar.params) <= 25  # Discord's limit of options per slash command
    assert all(len(p.description) <= 100 for p in calendar.params)
    assert by_name("upcoming") is not None and by_name("leads") is not None


async def test_the_same_commands_on_discord(
    make_settings: MakeSettings, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    fake = discord_api
    async with discord_bot(
        make_settings, fake, binance, admin_ids=f"discord:{DISCORD_OPERATOR}", calendar_sources="none"
    ) as app:
        upcoming = text(await slash(fake, "upcoming", {"days": "40", "token": "hyperliquid"}))
        assert "Hyperliquid (HYPE)" in upcoming and "hype-team-distribution@" in upcoming
        assert "(day; time not given)" in upcoming and "Aster" not in upcoming
        refused = text(await slash(fake, "leads", {"leads": "24h"}, permissions=PLAIN_MEMBER))
        assert "Only admins of this server" in refused
        assert "come 24h before each event" in text(await slash(fake, "leads", {"leads": "24h"}))
        add = {
            "action": "add",
            "id": "disc-1",
            "project": "Lighter",
            "coingecko": "lighter",
            "type": "unlock",
            "start": "2030-01-20",
            "status": "announced",
            "figure": "model",
            "source": "https://example.org/d",
        }
        assert "operator command" in text(await slash(fake, "calendar", add))
        assert await app.store.calendar.get("disc-1") is None
        assert "disc-1: added" in text(await slash(fake, "calendar", add, user=DISCORD_OPERATOR))
        moved = text(
            await slash(fake, "calendar", {"action": "edit", "id": "disc-1", "start": "2030-02"}, user=DISCORD_OPERATOR)
        )
        assert "disc-1: moved" in moved and "sometime in February 2030" in moved
        bad = text(
            await slash(fake, "calendar", {"action": "edit", "id": "disc-1", "amount": "lots"}, user=DISCORD_OPERATOR)
        )
        assert "amount 'lots' is not a plain number" in bad
