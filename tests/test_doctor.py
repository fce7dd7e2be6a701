"""`perpwatch doctor` against the loopback fakes: a healthy set-up passes every check, and each way it can be
wrong (a refused token, a right the bot lacks, a source that does not answer, a pending migration, a bad
setting) is one WRONG row with its fix, a non-zero exit, and no secret in the output."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot import doctor
from bot.cli import main
from bot.doctor import Finding, channel_permissions, diagnose, render, telegram_rights
from bot.settings import Settings
from storage import Store, open_engine
from storage.admin import release_version
from tests.conftest import TG_TOKEN
from tests.fakes.binance_ws import FakeForceOrderServer
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_api import FakeTelegramApi

DC_TOKEN = "FAKE.DISCORD.DOCTOR-TOKEN"
GROUP = -1001234567890
CHANNEL = 1300000000000000001


@pytest.fixture
async def discord_api() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(DC_TOKEN) as fake:
        yield fake


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'perpwatch.db'}"


async def _forget_last_migration(url: str) -> None:
    """The database as the previous release left it, as far as the schema version tells."""
    engine = open_engine(url)
    await engine.open(migrate=False)
    try:
        await engine.execute("DELETE FROM schema_version WHERE version = ?", (release_version(engine.kind),))
    finally:
        await engine.close()


async def _subscribed(url: str) -> None:
    """A database as a running bot leaves it: a Telegram group and a Discord channel, each subscribed."""
    async with Store(url) as store:
        group = await store.chats.upsert("telegram", str(GROUP), kind="group", title="traders")
        channel = await store.chats.upsert("discord", str(CHANNEL), kind="group", title="alerts")
        for chat in (group, channel):
            await store.chats.subscribe(chat.id, "liquidation", venue=None, symbol=None, min_usd=None, limit=50)


def _settings(
    db_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, venue: FakeForceOrderServer, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "watchers": "binance",
        "telegram_bot_token": TG_TOKEN,
        "telegram_api_url": telegram.base_url,
        "discord_bot_token": DC_TOKEN,
        "discord_api_url": discord_api.api_base,
        "binance_ws_url": venue.url,
    }
    values.update(extra)
    return Settings(_env_file=None, **values)


def _wrong(found: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in found if not f.ok}


def _closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.engines
async def test_healthy_setup_passes_every_check(
    database_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    db_url = database_url
    await _subscribed(db_url)
    telegram.set_member_status(GROUP, telegram.bot_id, "member")
    found = await diagnose(_settings(db_url, telegram, discord_api, binance))
    assert _wrong(found) == {}
    checks = [f.check for f in found]
    assert "database" in checks and "telegram token" in checks and "discord token" in checks
    assert f"telegram chat {GROUP} (traders)" in checks
    assert f"discord chat {CHANNEL} (alerts)" in checks
    assert "source binance (PERPWATCH_BINANCE_WS_URL)" in checks
    # it looked at the chat's rights, and sent nothing
    assert telegram.requests_for("getChatMember") and not telegram.sent and not discord_api.messages
    assert render(found).splitlines()[-1] == f"all {len(found)} checks ok"


async def test_refused_tokens_are_wrong_and_never_printed(
    db_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    await _subscribed(db_url)
    telegram.revoke_token()
    settings = _settings(db_url, telegram, discord_api, binance, discord_bot_token="WRONG.DISCORD.TOKEN")
    found = await diagnose(settings)
    wrong = _wrong(found)
    assert "TELEGRAM_BOT_TOKEN" in wrong["telegram token"].detail and "@BotFather" in wrong["telegram token"].fix
    assert "DISCORD_BOT_TOKEN" in wrong["discord token"].detail
    table = render(found, [TG_TOKEN, "WRONG.DISCORD.TOKEN"])
    assert TG_TOKEN not in table and "WRONG.DISCORD.TOKEN" not in table
    assert "2 of" in table.splitlines()[-1]


async def test_missing_rights_name_the_right_and_the_fix(
    db_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    await _subscribed(db_url)
    telegram.set_member_status(GROUP, telegram.bot_id, "left")  # removed from the group
    discord_api.bot_permissions = discord.Permissions(view_channel=True, send_messages=True).value
    wrong = _wrong(await diagnose(_settings(db_url, telegram, discord_api, binance)))
    assert "not in this chat" in wrong[f"telegram chat {GROUP} (traders)"].detail
    channel = wrong[f"discord chat {CHANNEL} (alerts)"]
    assert channel.detail == "missing Embed Links, Attach Files"
    assert "Embed Links" in channel.fix


async def test_a_channel_the_bot_cannot_see(
    db_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    await _subscribed(db_url)
    telegram.set_member_status(GROUP, telegram.bot_id, "member")
    discord_api.fail_next(CHANNEL, kind="missing_access")
    wrong = _wrong(await diagnose(_settings(db_url, telegram, discord_api, binance)))
    assert list(wrong) == [f"discord chat {CHANNEL} (alerts)"]
    assert "Missing Access" in wrong[f"discord chat {CHANNEL} (alerts)"].detail


async def test_unreachable_source(
    db_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    await _subscribed(db_url)
    telegram.set_member_status(GROUP, telegram.bot_id, "member")
    dead = f"ws://127.0.0.1:{_closed_port()}/ws"
    settings = _settings(db_url, telegram, discord_api, binance, watchers="binance,aster", aster_ws_url=dead)
    wrong = _wrong(await diagnose(settings, timeout_s=2.0))
    assert list(wrong) == ["source aster (PERPWATCH_ASTER_WS_URL)"]
    assert dead in wrong["source aster (PERPWATCH_ASTER_WS_URL)"].detail


async def test_unreachable_platform_api(
    db_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    await _subscribed(db_url)
    dead = f"http://127.0.0.1:{_closed_port()}"
    wrong = _wrong(await diagnose(_settings(db_url, telegram, discord_api, binance, telegram_api_url=dead)))
    assert f"cannot reach {dead}" in wrong["telegram token"].detail
    assert "PERPWATCH_TELEGRAM_API_URL" in wrong["telegram token"].fix
    assert f"telegram chat {GROUP} (traders)" not in {f.check for f in wrong.values()}  # not guessed at


@pytest.mark.engines
async def test_pending_migration_is_wrong(
    database_url: str, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    db_url = database_url
    await _subscribed(db_url)
    await _forget_last_migration(db_url)
    wrong = _wrong(await diagnose(_settings(db_url, telegram, discord_api, binance)))
    assert "pending" in wrong["database"].detail and "perpwatch db upgrade" in wrong["database"].fix
    assert "chats" in wrong  # the chats of a schema it cannot vouch for are not read


async def test_missing_database_file_is_not_created(
    tmp_path: Path, telegram: FakeTelegramApi, discord_api: FakeDiscord, binance: FakeForceOrderServer
) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    wrong = _wrong(await diagnose(_settings(url, telegram, discord_api, binance)))
    assert "does not exist yet" in wrong["database"].detail
    assert not (tmp_path / "absent.db").exists()


async def test_cli_exit_codes_and_table(
    db_url: str,
    telegram: FakeTelegramApi,
    discord_api: FakeDiscord,
    binance: FakeForceOrderServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _subscribed(db_url)
    telegram.set_member_status(GROUP, telegram.bot_id, "administrator")
    for name, value in {
        "PERPWATCH_DATABASE_URL": db_url,
        "PERPWATCH_WATCHERS": "binance",
        "TELEGRAM_BOT_TOKEN": TG_TOKEN,
        "PERPWATCH_TELEGRAM_API_URL": telegram.base_url,
        "DISCORD_BOT_TOKEN": DC_TOKEN,
        "PERPWATCH_DISCORD_API_URL": discord_api.api_base,
        "PERPWATCH_BINANCE_WS_URL": binance.url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(Path(db_url.removeprefix("sqlite:///")).parent)  # no developer's .env
    assert await asyncio.to_thread(main, ["doctor"]) == 0
    healthy = capsys.readouterr().out
    assert healthy.splitlines()[0].split() == ["CHECK", "STATE", "DETAIL"]
    assert "WRONG" not in healthy and TG_TOKEN not in healthy and DC_TOKEN not in healthy

    telegram.revoke_token()
    assert await asyncio.to_thread(main, ["doctor"]) == 1
    broken = capsys.readouterr().out
    assert "WRONG" in broken and TG_TOKEN not in broken

    (Path.cwd() / ".env").write_text("PERPWATCH_RETENTION_DAY=7\n")  # a typo the settings would ignore
    assert await asyncio.to_thread(main, ["doctor"]) == 1
    typo = capsys.readouterr().out
    assert "setting PERPWATCH_RETENTION_DAY" in typo and "did you mean PERPWATCH_RETENTION_DAYS?" in typo

    monkeypatch.setenv("PERPWATCH_RETENTION_DAYS", "none")
    assert await asyncio.to_thread(main, ["doctor"]) == 1
    assert "PERPWATCH_RETENTION_DAYS" in capsys.readouterr().out


def test_unknown_names_in_the_environment_and_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PERPWATCH_WATCHER=binance\nPERPWATCH_RETENTION_DAYS=7\n")
    environ = {"PERPWATCH_LOG_LEVL": "DEBUG", "PERPWATCH_HEARTBEAT_FILE": "heartbeat", "HOME": "/root"}
    found = {f.check: f for f in doctor.unknown_names(environ, env_file)}
    assert sorted(found) == ["setting PERPWATCH_LOG_LEVL", "setting PERPWATCH_WATCHER"]
    assert "did you mean PERPWATCH_WATCHERS?" in found["setting PERPWATCH_WATCHER"].fix
    assert str(env_file) in found["setting PERPWATCH_WATCHER"].detail
    assert "environment" in found["setting PERPWATCH_LOG_LEVL"].detail


def test_telegram_rights_by_member_kind() -> None:
    member = {"status": "member"}
    assert telegram_rights("g", "supergroup", member, {}).ok
    no_photos = telegram_rights("g", "supergroup", member, {"can_send_messages": True, "can_send_photos": False})
    assert not no_photos.ok and "embed" in no_photos.detail
    restricted = {"status": "restricted", "is_member": True, "can_send_messages": False}
    muted = telegram_rights("g", "supergroup", restricted, {})
    assert not muted.ok and "cannot post" in muted.detail
    assert not telegram_rights("c", "channel", member, {}).ok  # only admins post in a channel
    no_edit = {"status": "administrator", "can_post_messages": True, "can_edit_messages": False}
    assert telegram_rights("c", "channel", no_edit, {}).detail == "administrator: cannot edit"
    assert telegram_rights("g", "group", {"status": "creator"}, {}).ok


def test_discord_overwrites_deny_then_allow() -> None:
    guild_id, role, bot = "1", "2", "3"
    everyone = discord.Permissions(view_channel=True, send_messages=True, embed_links=True, attach_files=True)
    guild = {"id": guild_id, "owner_id": "9", "roles": [{"id": guild_id, "permissions": str(everyone.value)}]}
    member = {"user": {"id": bot}, "roles": [role]}
    embed = discord.Permissions(embed_links=True).value
    denied = [{"id": guild_id, "type": 0, "allow": "0", "deny": str(embed)}]
    assert not channel_permissions(guild, member, denied) & embed
    allowed_back = [*denied, {"id": role, "type": 0, "allow": str(embed), "deny": "0"}]
    assert channel_permissions(guild, member, allowed_back) & embed
    member_denied = [*allowed_back, {"id": bot, "type": 1, "allow": "0", "deny": str(embed)}]
    assert not channel_permissions(guild, member, member_denied) & embed
    admin = {**guild, "roles": [{"id": guild_id, "permissions": str(discord.Permissions(administrator=True).value)}]}
    assert channel_permissions(admin, member, member_denied) == doctor.ALL_PERMISSIONS
