"""`perpwatch doctor`: what is misconfigured, found before the chats notice, in one table with the fix.

A bot that starts can still be useless: a token revoked at @BotFather, a channel where the bot lost Embed
Links, a venue URL with a typo, a database a release behind. Each shows up only when an alert is due, as a
parked delivery or a silent watcher. The doctor asks every party once, cheaply (Telegram `getMe` and
`getChat`/`getChatMember`, Discord `/users/@me` and the channel's permission data, a TCP connect to each
source, the database's schema version) and reads nothing that changes state: it never sends a message,
never migrates, never creates the SQLite file.

Secrets never reach the output: every line is masked with the tokens and the database password before it
is written, since an HTTP error can echo a URL and a Telegram URL holds the token.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import ssl
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp

from bot.settings import Settings, env_name
from storage import StorageStartError, StorageUnavailable, open_engine, parse_database_url
from storage.engine import DatabaseUrl

TIMEOUT_S = 5.0
"""One request or connect: long enough for a slow host, short enough that a dead one costs little."""

CONCURRENCY = 4
"""Requests in flight at once, so checking many chats stays well inside the platforms' rate limits."""

# Discord permission bits (discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
ALL_PERMISSIONS = (1 << 53) - 1
DISCORD_NEEDED: tuple[tuple[int, str], ...] = (
    (VIEW_CHANNEL, "View Channel"),
    (SEND_MESSAGES, "Send Messages"),
    (EMBED_LINKS, "Embed Links"),
    (ATTACH_FILES, "Attach Files"),
)
"""What an alert channel needs: alerts are embeds, charts are attached PNGs."""


@dataclass(frozen=True)
class Finding:
    """One checked thing: what, whether it is fine, what was seen, and (when wrong) how to fix it."""

    check: str
    ok: bool
    detail: str
    fix: str = ""


def ok(check: str, detail: str) -> Finding:
    return Finding(check, True, detail)


def wrong(check: str, detail: str, fix: str) -> Finding:
    return Finding(check, False, detail, fix)


# --- the table -------------------------------------------------------------------------------------


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def render(findings: Sequence[Finding], secrets: Iterable[str] = ()) -> str:
    """One table, a row per check, the fix under what is wrong; then one line that counts the problems."""
    hidden = [s for s in secrets if s]
    width = min(max((len(f.check) for f in findings), default=5), 48)
    lines = [f"{'CHECK':<{width}}  {'STATE':<5}  DETAIL"]
    for f in findings:
        lines.append(f"{f.check:<{width}}  {'ok' if f.ok else 'WRONG':<5}  {f.detail}")
        if not f.ok and f.fix:
            lines.append(f"{'':<{width}}  {'':<5}  fix: {f.fix}")
    problems = sum(not f.ok for f in findings)
    lines.append(f"{problems} of {len(findings)} checks wrong" if problems else f"all {len(findings)} checks ok")
    return mask("\n".join(lines) + "\n", hidden)


# --- settings --------------------------------------------------------------------------------------


def settings_findings(settings: Settings) -> list[Finding]:
    """What the settings alone tell: which platforms will run, and paths that must exist."""
    platforms = [
        name
        for name, token in (("telegram", settings.telegram_bot_token), ("discord", settings.discord_bot_token))
        if token is not None
    ]
    shown = ", ".join(platforms) if platforms else "none (no token set: alerts print to the console)"
    found = [ok("settings", f"loaded; platforms: {shown}; watchers: {', '.join(settings.watchers) or 'none'}")]
    node_dir = settings.hyperliquid_node_fills_dir
    if "hyperliquid" in settings.watchers and node_dir is not None and not node_dir.is_dir():
        found.append(
            wrong(
                "setting PERPWATCH_HYPERLIQUID_NODE_FILLS_DIR",
                f"{node_dir} is not a directory",
                "point it at the node's node_fills_by_block directory, or unset it to use the public stream",
            )
        )
    return found


NOT_SETTINGS = frozenset(
    {
        "PERPWATCH_HEARTBEAT_FILE",  # bot/health.py
        "PERPWATCH_TEST_POSTGRES_URL",  # the test suite's own
        "PERPWATCH_REQUIRE_POSTGRES",
        "PERPWATCH_IMAGE_TEST",
        "PERPWATCH_REQUIRE_IMAGE",
        "PERPWATCH_IMAGE_BASE_TAR",
        "PERPWATCH_IMAGE_MIRROR",
    }
)
"""PERPWATCH_ names read outside the settings: known, though no setting has them."""


def unknown_names(environ: Mapping[str, str], env_file: Path | None) -> list[Finding]:
    """PERPWATCH_ names in the environment or .env that no setting has: the settings ignore unknown names,
    so a typo (PERPWATCH_WATCHER) silently leaves the default in force."""
    from dotenv import dotenv_values

    known = {env_name(name) for name in Settings.model_fields}
    sources = {name: "environment" for name in environ}
    if env_file is not None and env_file.is_file():
        sources.update({name: str(env_file) for name in dotenv_values(env_file)})
    found = []
    for name, where in sorted(sources.items()):
        upper = name.upper()
        if not upper.startswith("PERPWATCH_") or upper in known or upper in NOT_SETTINGS:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        found.append(wrong(f"setting {name}", f"no such setting (in {where}): ignored", f"{hint}see .env.example"))
    return found


def settings_error(message: str) -> list[Finding]:
    """The settings did not load: nothing else can be checked until they do."""
    return [wrong("settings", message, "correct that setting in the environment or .env, then run the doctor again")]


# --- the database ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscribedChat:
    platform: str
    platform_chat_id: str
    kind: str
    title: str | None

    @property
    def label(self) -> str:
        return f"{self.platform} chat {self.platform_chat_id}" + (f" ({self.title})" if self.title else "")


UPGRADE = "run `perpwatch db upgrade` (the bot also migrates at start)"


def _absent_file(parsed: DatabaseUrl) -> Finding | None:
    """A SQLite file that is not there yet: opening it would create it, and a doctor only looks."""
    from storage.admin import pending_migrations

    if parsed.kind != "sqlite" or parsed.path == ":memory:" or os.path.exists(parsed.path):
        return None
    parent = Path(parsed.path).resolve().parent
    if not os.access(parent if parent.exists() else parent.parent, os.W_OK):
        fix = f"create {parent} writable by the bot's user, or point {env_name('database_url')} elsewhere"
        return wrong("database", f"{parsed.masked} does not exist and {parent} is not writable", fix)
    names = ", ".join(name for _v, name in pending_migrations(parsed.kind, 0))
    return wrong("database", f"{parsed.masked} does not exist yet: every migration is pending ({names})", UPGRADE)


async def database_findings(url: str) -> tuple[list[Finding], list[SubscribedChat] | None]:
    """The schema against this release's, and the active chats with a subscription (None: not readable)."""
    from storage.admin import pending_migrations, release_version, schema_version
    from storage.chats import ChatRepo

    check = "database"
    parsed = parse_database_url(url)
    release = release_version(parsed.kind)
    absent = _absent_file(parsed)
    if absent is not None:
        return [absent], (None if absent.detail.endswith("not writable") else [])
    engine = open_engine(url)
    try:
        await engine.open(migrate=False)
    except (StorageStartError, StorageUnavailable, OSError) as exc:
        return [wrong(check, f"cannot open {parsed.masked}: {exc}", f"check {env_name('database_url')}")], None
    try:
        version = await schema_version(engine, engine.kind)
        if version > release:
            detail = f"{engine.display} is at schema version {version}, newer than this release's {release}"
            return [wrong(check, detail, "run the perpwatch release that migrated it, or a newer one")], None
        pending = pending_migrations(engine.kind, version)
        if pending:
            names = ", ".join(name for _v, name in pending)
            detail = f"{engine.display} is at schema version {version} of {release}: pending {names}"
            return [wrong(check, detail, UPGRADE)], None
        chats = await _subscribed_chats(ChatRepo(engine))
        return [ok(check, f"{engine.display}: schema version {version}, no pending migration")], chats
    except (StorageStartError, StorageUnavailable) as exc:
        return [wrong(check, f"cannot read {engine.display}: {exc}", "check the database server and try again")], None
    finally:
        await engine.close()


async def _subscribed_chats(repo: Any) -> list[SubscribedChat]:
    """Active chats with at least one subscription: the ones an alert can be owed to."""
    ids: dict[int, None] = {}
    after = 0
    while True:
        page = await repo.interests(after_chat=after, limit=500)
        if not page:
            break
        for interest in page:
            ids[interest.chat_id] = None
        last = max(i.chat_id for i in page)
        if last <= after:
            break
        after = last
    chats: list[SubscribedChat] = []
    for chat_id in ids:
        chat = await repo.by_id(chat_id)
        if chat is not None and chat.platform in ("telegram", "discord"):
            chats.append(SubscribedChat(chat.platform, chat.platform_chat_id, chat.kind, chat.title))
    return chats


# --- HTTP ------------------------------------------------------------------------------------------


class _Answer:
    """An HTTP answer read whole: status and JSON body (or None when it was not JSON)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body

    @property
    def description(self) -> str:
        """The platform's own words for an error: Telegram's `description`, Discord's `message`."""
        if isinstance(self.body, dict):
            for key in ("description", "message"):
                if isinstance(self.body.get(key), str):
                    return str(self.body[key])
        return f"HTTP {self.status}"


class Unreachable(Exception):
    """No answer at all: refused, timed out, DNS, TLS."""


async def _request(
    session: aiohttp.ClientSession, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kw: Any
) -> _Answer:
    try:
        async with session.request(method, url, headers=headers, **kw) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            return _Answer(response.status, body)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Unreachable(_one_line(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- Telegram --------------------------------------------------------------------------------------


async def telegram_findings(
    session: aiohttp.ClientSession, api_url: str, token: str, chats: Sequence[SubscribedChat]
) -> list[Finding]:
    base = f"{api_url.rstrip('/')}/bot{token}"
    check = "telegram token"
    try:
        me = await _request(session, "POST", f"{base}/getMe")
    except Unreachable as exc:
        return [wrong(check, f"cannot reach {api_url}: {exc}", "check PERPWATCH_TELEGRAM_API_URL and the network")]
    if me.status == 401 or me.status == 404:
        return [
            wrong(
                check,
                f"Telegram refused TELEGRAM_BOT_TOKEN ({me.description})",
                "copy the token from @BotFather (/mybots, API Token) into TELEGRAM_BOT_TOKEN",
            )
        ]
    result = me.body.get("result") if isinstance(me.body, dict) else None
    if me.status != 200 or not isinstance(result, dict):
        return [wrong(check, f"getMe answered {me.description}", "try again later; check PERPWATCH_TELEGRAM_API_URL")]
    bot_id = int(result["id"])
    found = [ok(check, f"@{result.get('username')} (id {bot_id})")]
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(chat: SubscribedChat) -> Finding:
        async with limit:
            return await _telegram_chat(session, base, bot_id, chat)

    found.extend(await asyncio.gather(*(one(c) for c in chats if c.platform == "telegram")))
    return found


async def _telegram_chat(session: aiohttp.ClientSession, base: str, bot_id: int, chat: SubscribedChat) -> Finding:
    """Can the bot post there, embed (link previews and photos: charts are photos), and edit its messages?"""
    readd = "add the bot to that chat again, or `/unsubscribe all` there; until then its alerts are parked"
    raw = chat.platform_chat_id
    chat_id: int | str = int(raw) if raw.lstrip("-").isdigit() else raw
    try:
        info = await _request(session, "POST", f"{base}/getChat", json={"chat_id": chat_id})
        if info.status != 200:
            return wrong(chat.label, f"the bot cannot see this chat ({info.description})", readd)
        full = info.body["result"]
        kind = str(full.get("type", chat.kind))
        if kind == "private":
            return ok(chat.label, "private chat: can post, embed, edit")
        member = await _request(session, "POST", f"{base}/getChatMember", json={"chat_id": chat_id, "user_id": bot_id})
    except Unreachable as exc:
        return wrong(chat.label, f"no answer: {exc}", "check the network and run the doctor again")
    if member.status != 200:
        return wrong(chat.label, f"getChatMember refused ({member.description})", readd)
    return telegram_rights(chat.label, kind, member.body["result"], full.get("permissions") or {})


def telegram_rights(label: str, kind: str, member: Mapping[str, Any], chat_permissions: Mapping[str, Any]) -> Finding:
    """The bot's rights from its ChatMember and the chat's default permissions (which bind a plain member).

    A right the answer leaves out is taken as granted: Telegram omits what does not apply."""
    status = str(member.get("status"))
    if status in ("left", "kicked") or (status == "restricted" and member.get("is_member") is False):
        return wrong(label, f"the bot is not in this chat (status {status})", "add the bot to the chat again")
    if status == "creator":
        return ok(label, "owner: can post, embed, edit")
    missing: list[str] = []
    fixes: list[str] = []
    if kind == "channel":
        if status != "administrator":
            return wrong(label, "the bot is not an administrator of this channel", "make the bot a channel admin")
        if member.get("can_post_messages") is False:
            missing.append("post")
            fixes.append("grant Post Messages")
        if member.get("can_edit_messages") is False:
            missing.append("edit")
            fixes.append("grant Edit Messages of others")
    elif status != "administrator":  # a member follows the chat's defaults; restricted, its own flags
        rights = member if status == "restricted" else chat_permissions
        if rights.get("can_send_messages") is False:
            missing.append("post")
            fixes.append("let the bot send messages")
        if rights.get("can_send_photos") is False or rights.get("can_add_web_page_previews") is False:
            missing.append("embed (photos, link previews)")
            fixes.append("let the bot send photos and link previews")
    if missing:
        return wrong(
            label,
            f"{status}: cannot {', cannot '.join(missing)}",
            "in the chat's settings, " + "; ".join(fixes) + " (or make the bot an admin)",
        )
    return ok(label, f"{status}: can post, embed, edit")


# --- Discord ---------------------------------------------------------------------------------------


async def discord_findings(
    session: aiohttp.ClientSession, api_url: str, token: str, chats: Sequence[SubscribedChat]
) -> list[Finding]:
    base = api_url.rstrip("/")
    headers = {"Authorization": f"Bot {token}"}
    check = "discord token"
    try:
        me = await _request(session, "GET", f"{base}/users/@me", headers=headers)
    except Unreachable as exc:
        return [wrong(check, f"cannot reach {api_url}: {exc}", "check PERPWATCH_DISCORD_API_URL and the network")]
    if me.status == 401:
        return [
            wrong(
                check,
                f"Discord refused DISCORD_BOT_TOKEN ({me.description})",
                "Developer Portal, your application, Bot, Reset Token: put the new one in DISCORD_BOT_TOKEN",
            )
        ]
    if me.status != 200 or not isinstance(me.body, dict):
        return [
            wrong(check, f"/users/@me answered {me.description}", "try again later; check PERPWATCH_DISCORD_API_URL")
        ]
    bot_id = str(me.body["id"])
    found = [ok(check, f"{me.body.get('username')} (id {bot_id})")]
    guilds: dict[str, Awaitable[tuple[_Answer, _Answer]]] = {}
    limit = asyncio.Semaphore(CONCURRENCY)

    def guild(guild_id: str) -> Awaitable[tuple[_Answer, _Answer]]:
        """The guild's roles and the bot's member: fetched once per guild however many channels it has."""
        if guild_id not in guilds:

            async def fetch() -> tuple[_Answer, _Answer]:
                async with limit:
                    roles = await _request(session, "GET", f"{base}/guilds/{guild_id}", headers=headers)
                    member = await _request(
                        session, "GET", f"{base}/guilds/{guild_id}/members/{bot_id}", headers=headers
                    )
                return roles, member

            guilds[guild_id] = asyncio.ensure_future(fetch())
        return guilds[guild_id]

    async def one(chat: SubscribedChat) -> Finding:
        try:
            async with limit:
                channel = await _request(session, "GET", f"{base}/channels/{chat.platform_chat_id}", headers=headers)
            if channel.status != 200:
                return wrong(
                    chat.label,
                    f"the bot cannot see this channel ({channel.description})",
                    "invite the bot to that server again and give it View Channel there, or `/unsubscribe all`",
                )
            body = channel.body
            if body.get("guild_id") is None:
                return ok(chat.label, "direct messages: can post, embed, attach, edit")
            roles, member = await guild(str(body["guild_id"]))
        except Unreachable as exc:
            return wrong(chat.label, f"no answer: {exc}", "check the network and run the doctor again")
        if roles.status != 200 or member.status != 200:
            return wrong(chat.label, f"cannot read the server's roles ({roles.description})", "invite the bot again")
        granted = channel_permissions(roles.body, member.body, body.get("permission_overwrites") or [])
        return discord_rights(chat.label, granted)

    found.extend(await asyncio.gather(*(one(c) for c in chats if c.platform == "discord")))
    return found


def channel_permissions(guild: Mapping[str, Any], member: Mapping[str, Any], overwrites: Sequence[Any]) -> int:
    """The member's permissions in a channel, as Discord computes them: the @everyone role and the member's
    roles, all of them for the owner or an administrator, then the channel's overwrites for @everyone, for
    the member's roles together and for the member, each denying before it allows."""
    user_id = str((member.get("user") or {}).get("id", ""))
    guild_id = str(guild.get("id"))
    if str(guild.get("owner_id")) == user_id:
        return ALL_PERMISSIONS
    roles = {str(r["id"]): int(r.get("permissions", 0)) for r in guild.get("roles", [])}
    member_roles = [str(r) for r in member.get("roles", [])]
    granted = roles.get(guild_id, 0)
    for role in member_roles:
        granted |= roles.get(role, 0)
    if granted & ADMINISTRATOR:
        return ALL_PERMISSIONS
    by_id = {str(o["id"]): (int(o.get("allow", 0)), int(o.get("deny", 0))) for o in overwrites}
    if guild_id in by_id:
        allow, deny = by_id[guild_id]
        granted = (granted & ~deny) | allow
    allow = deny = 0
    for role in member_roles:
        a, d = by_id.get(role, (0, 0))
        allow, deny = allow | a, deny | d
    granted = (granted & ~deny) | allow
    if user_id in by_id:
        allow, deny = by_id[user_id]
        granted = (granted & ~deny) | allow
    return granted


def discord_rights(label: str, granted: int) -> Finding:
    if not granted & VIEW_CHANNEL:  # without it Discord treats every other permission as denied
        missing = [name for _bit, name in DISCORD_NEEDED]
    else:
        missing = [name for bit, name in DISCORD_NEEDED if not granted & bit]
    if missing:
        return wrong(
            label,
            f"missing {', '.join(missing)}",
            f"in the channel's settings, Permissions: allow {', '.join(missing)} for the bot's role",
        )
    return ok(label, "can view, post, embed, attach, edit")


# --- sources ---------------------------------------------------------------------------------------


def source_urls(settings: Settings) -> list[tuple[str, str, str]]:
    """(watcher, setting, URL) of every endpoint an enabled watcher reads, each URL once."""
    from watchers.registry import REGISTRY

    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    for name in settings.watchers:
        for setting in REGISTRY[name].settings:
            if not setting.endswith("_url"):
                continue
            if setting == "hyperliquid_ws_url" and name == "hyperliquid" and settings.hyperliquid_node_fills_dir:
                continue  # the node's files take the public stream's place
            url = str(getattr(settings, setting))
            if url not in seen:
                seen.add(url)
                out.append((name, setting, url))
    return out


async def reach(url: str, timeout_s: float = TIMEOUT_S) -> str | None:
    """None when a TCP connect (and for https/wss the TLS handshake) to the URL's host succeeds, else why not.

    A connect, not a request: it tells a typo, a dead host or a blocked port apart from a working one
    without spending any of the venue's request weight."""
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if secure else None), timeout_s
        )
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout_s:g} s"
    except (OSError, ssl.SSLError) as exc:
        return f"{host}:{port}: {_one_line(exc)}"
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    except (OSError, TimeoutError, ssl.SSLError):
        pass
    return None


async def source_findings(settings: Settings, timeout_s: float = TIMEOUT_S) -> list[Finding]:
    urls = source_urls(settings)
    problems = await asyncio.gather(*(reach(url, timeout_s) for _w, _s, url in urls))
    found: list[Finding] = []
    for (watcher, setting, url), problem in zip(urls, problems, strict=True):
        check = f"source {watcher} ({env_name(setting)})"
        if problem is None:
            found.append(ok(check, f"{url} reachable"))
        else:
            fix = f"check {env_name(setting)} and this host's network, or drop {watcher} from PERPWATCH_WATCHERS"
            found.append(wrong(check, f"{url} unreachable: {problem}", fix))
    return found


# --- all of it -------------------------------------------------------------------------------------


async def diagnose(
    settings: Settings,
    *,
    timeout_s: float = TIMEOUT_S,
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> list[Finding]:
    """Every check, in the table's order: settings, database, tokens and chats, sources. With `environ`
    (and `env_file`), their PERPWATCH_ names are checked against the settings too."""
    found = settings_findings(settings)
    if environ is not None:
        found.extend(unknown_names(environ, env_file))
    db, chats = await database_findings(settings.database_url)
    found.extend(db)
    known = chats or []
    if chats is None and (settings.telegram_bot_token or settings.discord_bot_token):
        found.append(wrong("chats", "not checked: the database could not be read", "fix the database first"))
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        platform_checks: list[Awaitable[list[Finding]]] = []
        if settings.telegram_bot_token is not None:
            token = settings.telegram_bot_token.get_secret_value()
            platform_checks.append(telegram_findings(session, settings.telegram_api_url, token, known))
        if settings.discord_bot_token is not None:
            token = settings.discord_bot_token.get_secret_value()
            platform_checks.append(discord_findings(session, settings.discord_api_url, token, known))
        results = await asyncio.gather(*platform_checks, source_findings(settings, timeout_s))
    for part in results:
        found.extend(part)
    orphans = [c for c in known if _token_for(settings, c.platform) is None]
    found.extend(
        wrong(c.label, f"subscribed, but no {c.platform} token is set", f"set the {c.platform} token, or unsubscribe")
        for c in orphans
    )
    return found


def _token_for(settings: Settings, platform: str) -> object:
    return settings.telegram_bot_token if platform == "telegram" else settings.discord_bot_token


def run(settings: Settings, out: TextIO, secrets: Iterable[str], *, timeout_s: float = TIMEOUT_S) -> int:
    """Print the table; 1 when anything is wrong, so a deploy script can stop on it."""
    findings = asyncio.run(diagnose(settings, timeout_s=timeout_s, environ=os.environ, env_file=Path(".env")))
    out.write(render(findings, secrets))
    return 1 if any(not f.ok for f in findings) else 0
