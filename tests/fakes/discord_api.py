"""A loopback Discord: REST API v10 and gateway, faithful enough for the real discord.py `Client`.

Tests and `perpwatch demo` aim the unmodified library here (`discord.http.Route.BASE = fake.api_base`,
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)`), so discord.py's own
status-to-exception mapping, 429 retry loop, gateway handshake and interaction callbacks run over real
sockets; dpytest and mocks skip exactly those layers (shared/research/chat-platforms.md §2.9). The wire
details that discord.py trips over when a fake gets them wrong are that note's §0; each is cited where this
file honours it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal, Self

import discord
from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

_log = logging.getLogger(__name__)

JSON = dict[str, Any]
FaultKind = Literal[
    "rate_limited", "missing_permissions", "missing_access", "unknown_channel", "server_error", "accept_then_hang"
]
OptionValue = str | int | bool | float

API_PREFIX: Final = "/api/v10"
DISCORD_EPOCH_MS: Final = 1_420_070_400_000
ADMINISTRATOR: Final = 1 << 3
ALL_PERMISSIONS: Final = discord.Permissions.all().value
DEFAULT_BOT_PERMISSIONS: Final = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    use_application_commands=True,
).value
"""What the bot (and @everyone) may do in every channel unless a test says otherwise."""

INTENT_GUILD_MESSAGES: Final = 1 << 9
INTENT_DIRECT_MESSAGES: Final = 1 << 12
FLAG_EPHEMERAL: Final = 1 << 6
FLAG_LOADING: Final = 1 << 7
CHANNEL_GUILD_TEXT: Final = 0
CHANNEL_DM: Final = 1
CALLBACK_DEFERRED_MESSAGE: Final = 5
CALLBACK_DEFERRED_UPDATE: Final = 6
ATTACHMENT_SIZE_LIMIT: Final = 10 * 1024 * 1024
JOINED_AT: Final = "2025-01-01T00:00:00+00:00"

_OPTION_COERCE: Final[dict[int, Callable[[Any], OptionValue]]] = {3: str, 4: int, 5: bool, 10: float}
"""STRING, INTEGER, BOOLEAN, NUMBER: Discord sends the type the command declared, whatever the user typed."""

_MAX_CONTENT: Final = 2000
_MAX_EMBEDS: Final = 10
_MAX_EMBED_FIELDS: Final = 25
_MAX_EMBED_TOTAL: Final = 6000
_EMBED_TEXT_LIMITS: Final = {"title": 256, "description": 4096, "footer.text": 2048, "author.name": 256}
_FIELD_LIMITS: Final = {"name": 256, "value": 1024}
"""Discord answers 400/50035 past these (chat-platforms.md §2.5), so a formatter that overflows fails here."""

_FAULT_BODIES: Final[dict[str, tuple[int, JSON]]] = {
    "missing_permissions": (403, {"message": "Missing Permissions", "code": 50013}),
    "missing_access": (403, {"message": "Missing Access", "code": 50001}),
    "unknown_channel": (404, {"message": "Unknown Channel", "code": 10003}),
}
_TOKEN_IN_PATH: Final = (f"{API_PREFIX}/interactions/", f"{API_PREFIX}/webhooks/")


# --- records tests read ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """One `files[n]` part of a multipart message, as the bot uploaded it."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class SentMessage:
    """A channel message the bot created (or, in `FakeDiscord.edits`, its state after one edit)."""

    id: int
    channel_id: int
    content: str
    embeds: list[JSON]
    received_at: float
    """`time.monotonic()` when the fake accepted it."""
    files: tuple[UploadedFile, ...] = ()


@dataclass(frozen=True)
class InteractionReply:
    """What the invoking user finally sees: the callback's message, or for a defer the followup/edit after it."""

    interaction_id: str
    callback_type: int
    """4 = message, 5 = deferred message, 6 = deferred update."""
    content: str
    embeds: list[JSON]
    flags: int
    bodies: tuple[JSON, ...]
    """Every request body for this interaction in order: the callback, then followups and edits."""
    attachments: tuple[JSON, ...] = ()
    """The attachment objects of the message shown (an uploaded chart, say)."""

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)


@dataclass(frozen=True)
class GatewayLogin:
    """One IDENTIFY as the fake saw it, with the query of the WebSocket it came on."""

    token: str
    intents: int
    query: dict[str, str]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    status: int


# --- internal state --------------------------------------------------------------------------------


@dataclass
class _Channel:
    id: int
    name: str
    type: int
    position: int = 0
    recipient_id: int | None = None


@dataclass(frozen=True)
class _Fault:
    kind: FaultKind
    retry_after: float


@dataclass
class _Session:
    session_id: str
    intents: int
    shard: list[int] | None
    seq: int = 0


@dataclass
class _Interaction:
    id: str
    token: str
    channel_id: int
    created_at: float
    callback: JSON | None = None
    bodies: list[JSON] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    """The original response first, then followups; each lives in `FakeDiscord._objects`."""
    shown: JSON | None = None
    """The message object the user sees now: the latest one created or edited."""

    @property
    def answered(self) -> bool:
        if self.callback is None:
            return False
        deferred = self.callback.get("type") in (CALLBACK_DEFERRED_MESSAGE, CALLBACK_DEFERRED_UPDATE)
        return not deferred or len(self.bodies) > 1


class _Connection:
    """One gateway WebSocket. The lock keeps `s` in wire order when the handler and a test send at once."""

    def __init__(self, ws: web.WebSocketResponse, query: Mapping[str, str]) -> None:
        self.ws = ws
        self.query = dict(query)
        self.session: _Session | None = None
        self._lock = asyncio.Lock()

    @property
    def live(self) -> bool:
        return self.session is not None and not self.ws.closed

    async def send(self, op: int, d: object, *, event: str | None = None) -> None:
        """Plain text JSON frames: discord.py only decompresses binary frames, even under zlib-stream (§2.3)."""
        async with self._lock:
            seq: int | None = None
            if op == 0:
                if self.session is None:
                    raise RuntimeError("dispatch before IDENTIFY")
                self.session.seq += 1
                seq = self.session.seq
            frame = json.dumps({"op": op, "d": d, "s": seq, "t": event})
            try:
                await self.ws.send_str(frame)
            except ConnectionResetError:
                _log.debug("gateway frame dropped, socket closing op=%s t=%s", op, event)


# --- wire helpers ----------------------------------------------------------------------------------


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """Exactly `application/json`: aiohttp's `json_response` appends `; charset=utf-8`, and discord.py then
    hands the body on as a str (`TypeError: string indices must be integers`, §0 #4)."""
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, message: str, code: int, errors: JSON | None = None) -> web.Response:
    body: JSON = {"message": message, "code": code}
    if errors:
        body["errors"] = errors
    return _json(body, status)


def _ratelimit_headers(*, remaining: int, reset_after: float, bucket: str) -> dict[str, str]:
    """All of them or none: discord.py reads Reset-After (or Reset) whenever Remaining is present (§2.6)."""
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": bucket,
    }


def _fault_response(fault: _Fault, bucket: str) -> web.Response:
    if fault.kind == "rate_limited":
        # Without `Via` (or with a non-JSON body) discord.py takes a 429 for a Cloudflare ban and raises
        # at once instead of retrying (§0 #5).
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(math.ceil(fault.retry_after)),
            "X-RateLimit-Scope": "user",
            **_ratelimit_headers(remaining=0, reset_after=fault.retry_after, bucket=bucket),
        }
        body = {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}
        return _json(body, 429, headers)
    if fault.kind == "server_error":
        # 503, not 502: discord.py retries 500/502/504 itself after 1 + 2n seconds, too slow for a test.
        return web.Response(status=503, text="upstream connect error or disconnect/reset before headers")
    status, body = _FAULT_BODIES[fault.kind]
    return _json(body, status)


def _snowflake_now(counter: int) -> int:
    """Real-shaped ids, so `discord.utils.snowflake_time` (e.g. `Interaction.created_at`) gives now."""
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (counter & 0x3FFFFF)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _user_object(user_id: int, username: str | None = None, *, bot: bool = False) -> JSON:
    """discord.py's `User` reads `id, username, discriminator, avatar` with `[]` (§2.4)."""
    return {
        "id": str(user_id),
        "username": username or f"user{user_id % 10_000}",
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def _option_type(value: OptionValue) -> int:
    if isinstance(value, bool):  # before int: bool is an int
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def _find_named(options: Sequence[JSON], name: str) -> JSON | None:
    return next((o for o in options if o.get("name") == name), None)


def _option_payload(name: str, value: OptionValue, declared: Sequence[JSON]) -> JSON:
    spec = _find_named(declared, name)
    kind = int(spec["type"]) if spec and spec.get("type") in _OPTION_COERCE else _option_type(value)
    return {"type": kind, "name": name, "value": _OPTION_COERCE[kind](value)}


def _interaction_options(
    path: Sequence[str], values: Mapping[str, OptionValue], declared: Sequence[JSON]
) -> list[JSON]:
    """Nests `values` under SUB_COMMAND_GROUP (2) / SUB_COMMAND (1) options for a name like "alerts add"."""
    if not path:
        return [_option_payload(name, value, declared) for name, value in values.items()]
    head, *rest = path
    spec = _find_named(declared, head)
    kind = int(spec["type"]) if spec else (2 if rest else 1)
    inner: list[JSON] = spec.get("options", []) if spec else []
    return [{"type": kind, "name": head, "options": _interaction_options(rest, values, inner)}]


def _nest_errors(problems: Mapping[str, str]) -> JSON:
    """Discord's 50035 `errors` tree (`{"embeds": {"0": {"title": {"_errors": [...]}}}}`), which discord.py
    flattens into `HTTPException.text`."""
    tree: JSON = {}
    for dotted, message in problems.items():
        node = tree
        for part in dotted.split("."):
            node = node.setdefault(part, {})
        node["_errors"] = [{"code": "BASE_TYPE_MAX_LENGTH", "message": message}]
    return tree


def _embed_problems(index: int, embed: JSON) -> tuple[dict[str, str], int]:
    problems: dict[str, str] = {}
    fields: list[JSON] = embed.get("fields") or []
    texts = {
        "title": embed.get("title") or "",
        "description": embed.get("description") or "",
        "footer.text": (embed.get("footer") or {}).get("text") or "",
        "author.name": (embed.get("author") or {}).get("name") or "",
    }
    for key, text in texts.items():
        if len(text) > _EMBED_TEXT_LIMITS[key]:
            problems[f"embeds.{index}.{key}"] = f"Must be {_EMBED_TEXT_LIMITS[key]} or fewer in length."
    if len(fields) > _MAX_EMBED_FIELDS:
        problems[f"embeds.{index}.fields"] = "Must be 25 or fewer in length."
    size = sum(len(t) for t in texts.values())
    for j, fld in enumerate(fields):
        for key, limit in _FIELD_LIMITS.items():
            text = str(fld.get(key) or "")
            size += len(text)
            if len(text) > limit:
                problems[f"embeds.{index}.fields.{j}.{key}"] = f"Must be {limit} or fewer in length."
    return problems, size


def _message_error(payload: JSON, files: Sequence[UploadedFile], *, creating: bool) -> web.Response | None:
    """The 400s Discord gives a bad message body; `None` when it would accept it."""
    content: str = payload.get("content") or ""
    embeds: list[JSON] = payload.get("embeds") or []
    if creating and not (content or embeds or files or payload.get("components") or payload.get("poll")):
        return _error(400, "Cannot send an empty message", 50006)
    problems: dict[str, str] = {}
    if len(content) > _MAX_CONTENT:
        problems["content"] = "Must be 2000 or fewer in length."
    if len(embeds) > _MAX_EMBEDS:
        problems["embeds"] = "Must be 10 or fewer in length."
    total = 0
    for index, embed in enumerate(embeds):
        found, size = _embed_problems(index, embed)
        problems.update(found)
        total += size
    if total > _MAX_EMBED_TOTAL:
        problems["embeds"] = "Embed size exceeds maximum size of 6000"
    if problems:
        return _error(400, "Invalid Form Body", 50035, _nest_errors(problems))
    return None


async def _read_body(request: web.Request) -> tuple[JSON, tuple[UploadedFile, ...]]:
    """JSON, or multipart with `payload_json` plus `files[n]` as discord.py sends attachments."""
    if request.content_type != "multipart/form-data":
        raw = await request.read()
        return (json.loads(raw) if raw else {}), ()
    payload: JSON = {}
    files: list[UploadedFile] = []
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "payload_json":
            payload = json.loads(await part.text())
        elif part.filename:
            data = bytes(await part.read(decode=False))
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            files.append(UploadedFile(part.filename, content_type, data))
    return payload, tuple(files)


# --- the fake --------------------------------------------------------------------------------------


class FakeDiscord:
    """Discord's REST API and gateway on 127.0.0.1, with one guild, scripted faults, and records to assert on.

    Ids default to those in chat-platforms.md §2.4. `messages`, `edits`, `logins`, `requests` and
    `command_puts` are the test-side records; `fail_next` scripts channel faults; `dispatch` and
    `send_interaction` push gateway events to every identified client.
    """

    def __init__(
        self,
        token: str = "FAKE.DISCORD.TOKEN",  # noqa: S107 - a fake token, never a real one
        *,
        application_id: int = 1100000000000000001,
        bot_user_id: int = 1100000000000000002,
        bot_username: str = "perpwatch",
        guild_id: int = 1200000000000000001,
        guild_name: str = "perpwatch test",
        owner_id: int = 1400000000000000001,
        channels: Mapping[int, str] | None = None,
        heartbeat_interval_ms: int = 41250,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        interaction_deadline_s: float = 3.0,
        nonce_window_s: float = 300.0,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.bot_username = bot_username
        self.guild_id = guild_id
        self.guild_name = guild_name
        self.owner_id = owner_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.bot_permissions = bot_permissions
        self.interaction_deadline_s = interaction_deadline_s
        """Discord drops an interaction not answered within 3 s; a later callback gets 404/10062."""
        self.nonce_window_s = nonce_window_s
        """How long `enforce_nonce` remembers a nonce: Discord documents only "the past few minutes"."""

        self.messages: list[SentMessage] = []
        self.edits: list[SentMessage] = []
        self.logins: list[GatewayLogin] = []
        self.requests: list[RecordedRequest] = []
        self.command_puts = 0
        self.resumes = 0

        self._channels: dict[int, _Channel] = {}
        for channel_id, name in (channels or {1300000000000000001: "alerts"}).items():
            self.add_text_channel(name, channel_id=channel_id)
        self._dm_by_user: dict[int, _Channel] = {}
        self._faults: dict[int, deque[_Fault]] = {}
        self._commands: dict[int | None, list[JSON]] = {}
        self._objects: dict[int, JSON] = {}
        self._interactions: dict[str, _Interaction] = {}
        self._connections: set[_Connection] = set()
        self._sessions: dict[str, _Session] = {}
        self._changed = asyncio.Condition()
        self._nonces: dict[tuple[int, str], tuple[int, float]] = {}
        self._released = asyncio.Event()
        self._id_counter = 0
        self._server: TestServer | None = None
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FakeDiscord already started")
        self._server = TestServer(self._build_app(), host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        """Idempotent. Close clients first: a client still connected would try to reconnect."""
        if self._server is None or self._closed:
            return
        self._closed = True
        self._released.set()
        for conn in list(self._connections):
            await conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"fake discord shutting down")
        await self._server.close()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._server is None or self._server.port is None:
            raise RuntimeError("FakeDiscord is not running; await start() first")
        return self._server.port

    @property
    def api_base(self) -> str:
        """For `discord.http.Route.BASE`; webhooks and interaction callbacks use it too."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """For `DiscordWebSocket.DEFAULT_GATEWAY`: `discord.Client` dials it without asking `GET /gateway` (§0 #6)."""
        return f"ws://127.0.0.1:{self.port}/"

    # --- guild setup -------------------------------------------------------------------------------

    @property
    def channel_ids(self) -> list[int]:
        """The guild's text channels, in creation order; the first is the default for interactions."""
        return [c.id for c in self._channels.values() if c.type == CHANNEL_GUILD_TEXT]

    def add_text_channel(self, name: str, *, channel_id: int | None = None) -> int:
        """Adds a guild text channel. Clients that identify later see it in GUILD_CREATE; one already
        connected can still post to it by id (`client.get_partial_messageable`)."""
        cid = channel_id if channel_id is not None else self._next_id()
        self._channels[cid] = _Channel(id=cid, name=name, type=CHANNEL_GUILD_TEXT, position=len(self._channels))
        return cid

    def fail_next(self, channel_id: int, *, kind: FaultKind, times: int = 1, retry_after: float = 0.05) -> None:
        """The next `times` requests on `/channels/{channel_id}/...` get `kind` instead of an answer.

        `accept_then_hang` does the request (a message is created) and then never answers, as when the
        process or the network dies between Discord's commit and its answer; `close()` releases it.
        """
        if kind not in ("rate_limited", "server_error", "accept_then_hang", *_FAULT_BODIES):
            raise ValueError(f"unknown fault kind {kind!r}")
        queue = self._faults.setdefault(channel_id, deque())
        queue.extend(_Fault(kind, retry_after) for _ in range(times))

    def delete_message(self, message_id: int) -> None:
        """What an admin deleting the bot's message does: later GETs and PATCHes answer 404/10008."""
        self._objects.pop(message_id, None)

    def stored_message(self, message_id: int) -> JSON | None:
        """The message as it stands now, after any edits; None once deleted."""
        return self._objects.get(message_id)

    def synced_commands(self, guild_id: int | None = None) -> list[JSON]:
        """The commands last PUT for the global scope (`None`) or for a guild, as the fake stored them."""
        return list(self._commands.get(guild_id, []))

    # --- waiting -----------------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 5) -> None:  # noqa: ASYNC109
        """Returns once a client has identified and been sent READY and GUILD_CREATE."""
        await self._wait_until(lambda: any(c.live for c in self._connections), timeout, "a gateway IDENTIFY")

    async def wait_for_messages(self, n: int, timeout: float = 5) -> list[SentMessage]:  # noqa: ASYNC109
        await self._wait_until(lambda: len(self.messages) >= n, timeout, f"{n} channel message(s)")
        return list(self.messages)

    async def wait_for_edits(self, n: int, timeout: float = 5) -> list[SentMessage]:  # noqa: ASYNC109
        await self._wait_until(lambda: len(self.edits) >= n, timeout, f"{n} message edit(s)")
        return list(self.edits)

    async def wait_interaction_response(self, interaction_id: str, timeout: float = 5) -> InteractionReply:  # noqa: ASYNC109
        """Waits for the answer the user would see; after a defer that is the first followup or edit."""
        inter = self._interactions[interaction_id]
        await self._wait_until(lambda: inter.answered, timeout, f"an answer to interaction {interaction_id}")
        return self._reply(inter)

    async def wait_interaction_bodies(self, interaction_id: str, n: int, timeout: float = 5) -> InteractionReply:  # noqa: ASYNC109
        """Waits until the interaction got `n` requests in all (the callback, then followups and edits)."""
        inter = self._interactions[interaction_id]
        await self._wait_until(lambda: len(inter.bodies) >= n, timeout, f"{n} bodies for interaction {interaction_id}")
        return self._reply(inter)

    async def _wait_until(self, ready: Callable[[], bool], limit_s: float, what: str) -> None:
        """Sleeps on one Condition that every recorded change notifies; the message names what never came."""
        try:
            async with asyncio.timeout(limit_s):
                async with self._changed:
                    await self._changed.wait_for(ready)
        except TimeoutError:
            raise TimeoutError(f"FakeDiscord: no {what} within {limit_s} s") from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- gateway, test side ------------------------------------------------------------------------

    async def dispatch(self, event: str, data: JSON) -> None:
        """Pushes one op 0 event to every identified client."""
        live = [c for c in self._connections if c.live]
        if not live:
            raise RuntimeError("no identified gateway client; await wait_ready() first")
        for conn in live:
            await conn.send(0, data, event=event)

    async def send_reconnect(self) -> None:
        """Op 7, as Discord sends before a rolling restart: clients reconnect to `resume_gateway_url`
        and RESUME."""
        for conn in [c for c in self._connections if c.live]:
            await conn.send(7, None)

    async def send_interaction(
        self,
        name: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        user_id: int,
        channel_id: int | None = None,
        permissions: int = 0,
        guild: bool = True,
    ) -> str:
        """Sends INTERACTION_CREATE for slash command `name` ("alerts" or "alerts add") and returns its id.

        Option types follow the synced command when there is one, else the Python type (str 3, int 4,
        bool 5, float 10). `permissions` are the member's channel permissions; the owner and
        ADMINISTRATOR get every bit, as Discord resolves them (§0 #9). `guild=False` sends it from the
        user's DM with the bot (`user` instead of `member`, no `guild_id`); `channel_id` is then ignored.
        """
        iid = str(self._next_id())
        root, *path = name.split()
        schema, guild_scoped = self._registered_command(root, guild=guild)
        data: JSON = {"id": str(schema["id"]) if schema else str(self._next_id()), "name": root, "type": 1}
        opts = _interaction_options(path, options or {}, schema.get("options", []) if schema else [])
        if opts:
            data["options"] = opts
        if guild_scoped:
            data["guild_id"] = str(self.guild_id)
        channel = self._interaction_channel(channel_id, user_id, guild=guild)
        inter = _Interaction(
            id=iid,
            token=f"fake-interaction-token-{iid}",
            channel_id=channel.id,
            created_at=asyncio.get_running_loop().time(),
        )
        payload = self._interaction_payload(inter, data, user_id=user_id, channel=channel, permissions=permissions)
        self._interactions[iid] = inter
        await self.dispatch("INTERACTION_CREATE", payload)
        return iid

    def _registered_command(self, root: str, *, guild: bool) -> tuple[JSON | None, bool]:
        """(schema, is_guild_command); a guild command shadows a global one of the same name."""
        scopes: list[int | None] = [self.guild_id, None] if guild else [None]
        for scope in scopes:
            for command in self._commands.get(scope, []):
                if command["name"] == root and command.get("type", 1) == 1:
                    return command, scope is not None
        return None, False

    def _interaction_channel(self, channel_id: int | None, user_id: int, *, guild: bool) -> _Channel:
        if not guild:
            return self._dm_channel(user_id)
        cid = channel_id if channel_id is not None else self.channel_ids[0]
        return self._channels[cid]

    def _resolved_permissions(self, user_id: int, permissions: int) -> int:
        """Discord sends the member's resolved set: owner and ADMINISTRATOR mean every permission, so
        `has_permissions(manage_guild=True)` passes for an admin here as it does live (§0 #9)."""
        if user_id == self.owner_id or permissions & ADMINISTRATOR:
            return ALL_PERMISSIONS
        return permissions

    def _interaction_payload(
        self, inter: _Interaction, data: JSON, *, user_id: int, channel: _Channel, permissions: int
    ) -> JSON:
        """Every field discord.py's `Interaction` reads with `[]` is here (§0 #7)."""
        payload: JSON = {
            "id": inter.id,
            "application_id": str(self.application_id),
            "type": 2,
            "token": inter.token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": self._channel_object(channel),
            "app_permissions": str(self.bot_permissions),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "data": data,
        }
        user = _user_object(user_id)
        if channel.type == CHANNEL_DM:
            payload |= {"user": user, "context": 1, "authorizing_integration_owners": {"0": "0"}}
            return payload
        member = {
            "user": user,
            "roles": [],
            "permissions": str(self._resolved_permissions(user_id, permissions)),
            "joined_at": JOINED_AT,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "pending": False,
            "deaf": False,
            "mute": False,
        }
        payload |= {
            "guild_id": str(self.guild_id),
            "guild_locale": "en-US",
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "member": member,
            "context": 0,
            "authorizing_integration_owners": {"0": str(self.guild_id)},
        }
        return payload

    # --- gateway, wire side ------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = _Connection(ws, request.query)
        self._connections.add(conn)
        try:
            await conn.send(10, {"heartbeat_interval": self.heartbeat_interval_ms})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_frame(conn, json.loads(msg.data))
        finally:
            self._connections.discard(conn)
        return ws

    async def _on_frame(self, conn: _Connection, frame: JSON) -> None:
        op = frame.get("op")
        d: JSON = frame.get("d") or {}
        if op == 1:
            await conn.send(11, None)
        elif op == 2:
            await self._identify(conn, d)
        elif op == 6:
            await self._resume(conn, d)
        else:
            _log.debug("gateway op ignored op=%s", op)

    async def _identify(self, conn: _Connection, d: JSON) -> None:
        token = str(d.get("token"))
        self.logins.append(GatewayLogin(token=token, intents=int(d.get("intents", 0)), query=conn.query))
        if token != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = _Session(session_id=uuid.uuid4().hex, intents=int(d.get("intents", 0)), shard=d.get("shard"))
        self._sessions[session.session_id] = session
        conn.session = session
        await conn.send(0, self._ready_payload(session), event="READY")
        await conn.send(0, self._guild_payload(), event="GUILD_CREATE")
        await self._notify()

    async def _resume(self, conn: _Connection, d: JSON) -> None:
        """Minimal RESUME: no replay of missed events; an unknown session gets op 9 (not resumable)."""
        session = self._sessions.get(str(d.get("session_id")))
        if session is None or d.get("token") != self.token:
            await conn.send(9, False)
            return
        for other in self._connections:
            if other.session is session:
                other.session = None
        conn.session = session
        self.resumes += 1
        await conn.send(0, {}, event="RESUMED")
        await self._notify()

    def _bot_user(self) -> JSON:
        return _user_object(self.bot_user_id, self.bot_username, bot=True)

    def _me(self) -> JSON:
        """The bot as `GET /users/@me` and READY describe it: a `ClientUser`, which has a few more fields."""
        return {**self._bot_user(), "verified": True, "mfa_enabled": False, "flags": 0}

    def _ready_payload(self, session: _Session) -> JSON:
        payload: JSON = {
            "v": 10,
            "user": self._me(),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "application": {"id": str(self.application_id), "flags": 0},
            "_trace": ["fake-discord"],
        }
        if session.shard is not None:
            payload["shard"] = session.shard
        return payload

    def _guild_payload(self) -> JSON:
        everyone = {
            "id": str(self.guild_id),
            "name": "@everyone",
            "permissions": str(self.bot_permissions),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        me = {"user": self._bot_user(), "roles": [], "joined_at": JOINED_AT, "flags": 0, "deaf": False, "mute": False}
        channels = [self._channel_object(c) for c in self._channels.values() if c.type == CHANNEL_GUILD_TEXT]
        return {
            "id": str(self.guild_id),
            "name": self.guild_name,
            "owner_id": str(self.owner_id),
            "icon": None,
            "description": None,
            "features": [],
            "preferred_locale": "en-US",
            "member_count": 2,
            "large": False,
            "unavailable": False,
            "joined_at": JOINED_AT,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "roles": [everyone],
            "channels": channels,
            "members": [me],
            "threads": [],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _channel_object(self, channel: _Channel) -> JSON:
        if channel.type == CHANNEL_DM:
            recipient = _user_object(channel.recipient_id or 0)
            return {"id": str(channel.id), "type": CHANNEL_DM, "recipients": [recipient], "last_message_id": None}
        return {
            "id": str(channel.id),
            "type": CHANNEL_GUILD_TEXT,
            "guild_id": str(self.guild_id),
            "name": channel.name,
            "position": channel.position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def _dm_channel(self, user_id: int) -> _Channel:
        channel = self._dm_by_user.get(user_id)
        if channel is None:
            channel = _Channel(id=self._next_id(), name="", type=CHANNEL_DM, recipient_id=user_id)
            self._dm_by_user[user_id] = self._channels[channel.id] = channel
        return channel

    async def _echo_message_create(self, channel: _Channel, message: JSON) -> None:
        """Discord echoes the bot's own messages as MESSAGE_CREATE to clients holding the intent."""
        needed = INTENT_DIRECT_MESSAGES if channel.type == CHANNEL_DM else INTENT_GUILD_MESSAGES
        for conn in [c for c in self._connections if c.live]:
            if conn.session is not None and conn.session.intents & needed:
                await conn.send(0, message, event="MESSAGE_CREATE")

    # --- REST --------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record_and_shape, self._check_auth, self._channel_faults])
        app.router.add_get("/", self._gateway)
        api = API_PREFIX
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", r"/applications/{app_id:\d+}/commands", self._get_commands),
            ("PUT", r"/applications/{app_id:\d+}/commands", self._put_commands),
            ("GET", r"/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands", self._get_commands),
            ("PUT", r"/applications/{app_id:\d+}/guilds/{guild_id:\d+}/commands", self._put_commands),
            ("POST", r"/interactions/{interaction_id:\d+}/{token}/callback", self._interaction_callback),
            ("POST", r"/webhooks/{app_id:\d+}/{token}", self._webhook_execute),
            ("GET", r"/webhooks/{app_id:\d+}/{token}/messages/{message_id}", self._webhook_message),
            ("PATCH", r"/webhooks/{app_id:\d+}/{token}/messages/{message_id}", self._webhook_message),
            ("DELETE", r"/webhooks/{app_id:\d+}/{token}/messages/{message_id}", self._webhook_message),
            ("GET", r"/guilds/{guild_id:\d+}", self._get_guild),
            ("GET", r"/guilds/{guild_id:\d+}/members/{user_id:\d+}", self._get_member),
            ("GET", r"/channels/{channel_id:\d+}", self._get_channel),
            ("POST", r"/channels/{channel_id:\d+}/messages", self._create_message),
            ("GET", r"/channels/{channel_id:\d+}/messages/{message_id:\d+}", self._channel_message),
            ("PATCH", r"/channels/{channel_id:\d+}/messages/{message_id:\d+}", self._channel_message),
            ("DELETE", r"/channels/{channel_id:\d+}/messages/{message_id:\d+}", self._channel_message),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, api + path, handler)
        return app

    @web.middleware
    async def _record_and_shape(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Logs every request for tests; router 404/405s become Discord-shaped JSON like the real API's.

        A crash in a handler answers 400, never aiohttp's 500: discord.py retries 5xx for about 25 s
        before failing, which would turn a bug in this fake into a slow, puzzling test.
        """
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = _error(exc.status, f"{exc.status}: {exc.reason}", 0)
        except Exception as exc:
            _log.exception("fake discord handler failed method=%s path=%s", request.method, request.path)
            response = _error(400, f"FakeDiscord could not handle this request: {exc!r}", 0)
        self.requests.append(RecordedRequest(request.method, request.path, response.status))
        return response

    @web.middleware
    async def _check_auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bot routes need `Bot <token>`; interaction callbacks and webhooks carry their token in the path
        and discord.py sends them no Authorization header (§2.2)."""
        path = request.path
        needs_auth = path.startswith(API_PREFIX) and not path.startswith(_TOKEN_IN_PATH)
        if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, "401: Unauthorized", 0)
        return await handler(request)

    @web.middleware
    async def _channel_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Scripted faults take the place of any `/channels/{id}/...` answer; real answers get rate-limit
        headers as Discord's do."""
        raw_id = request.match_info.get("channel_id")
        if raw_id is None:
            return await handler(request)
        canonical = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
        bucket = f"{zlib.crc32(f'{request.method} {canonical}'.encode()):08x}"
        queue = self._faults.get(int(raw_id))
        fault = queue.popleft() if queue else None
        if fault is not None and fault.kind != "accept_then_hang":
            return _fault_response(fault, bucket)
        response = await handler(request)
        if fault is not None:
            await self._released.wait()
        if response.status < 300:
            response.headers.update(_ratelimit_headers(remaining=4, reset_after=1.0, bucket=bucket))
        return response

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        return _json(self._me())

    async def _get_application(self, request: web.Request) -> web.StreamResponse:
        """discord.py's `AppInfo` reads all of these but `flags` with `[]` (discord/appinfo.py)."""
        owner = _user_object(self.owner_id, "owner")
        return _json(
            {
                "id": str(self.application_id),
                "name": self.bot_username,
                "description": "",
                "icon": None,
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": owner,
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "summary": "",
                "bot": self._bot_user(),
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": 1,
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        """Only `AutoShardedClient` asks (§2.1)."""
        limit = {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _create_dm(self, request: web.Request) -> web.StreamResponse:
        payload, _ = await _read_body(request)
        return _json(self._channel_object(self._dm_channel(int(payload["recipient_id"]))))

    def _command_scope(self, request: web.Request) -> tuple[int | None, web.Response | None]:
        if int(request.match_info["app_id"]) != self.application_id:
            return None, _error(403, "Missing Access", 50001)
        raw_guild = request.match_info.get("guild_id")
        if raw_guild is None:
            return None, None
        if int(raw_guild) != self.guild_id:
            return None, _error(404, "Unknown Guild", 10004)
        return int(raw_guild), None

    async def _get_commands(self, request: web.Request) -> web.StreamResponse:
        scope, problem = self._command_scope(request)
        return problem or _json(self._commands.get(scope, []))

    async def _put_commands(self, request: web.Request) -> web.StreamResponse:
        """Bulk overwrite. Ids survive for commands kept by name, as on Discord; `command_puts` counts calls
        so a test can prove the bot syncs only when its commands changed."""
        scope, problem = self._command_scope(request)
        if problem:
            return problem
        body = json.loads(await request.read() or b"[]")
        previous = {(c["name"], c.get("type", 1)): c["id"] for c in self._commands.get(scope, [])}
        stored = [self._stored_command(c, previous, scope) for c in body]
        self._commands[scope] = stored
        self.command_puts += 1
        await self._notify()
        return _json(stored)

    def _stored_command(self, command: JSON, previous: Mapping[tuple[str, int], str], scope: int | None) -> JSON:
        kind = command.get("type") or 1
        permissions = command.get("default_member_permissions")
        stored = {
            **command,
            "id": previous.get((command["name"], kind)) or str(self._next_id()),
            "application_id": str(self.application_id),
            "version": str(self._next_id()),
            "type": kind,
            "description": command.get("description", ""),
            # discord.py sends the bitfield as an int; Discord answers with a string.
            "default_member_permissions": None if permissions is None else str(permissions),
        }
        if scope is not None:
            stored["guild_id"] = str(scope)
        return stored

    async def _get_guild(self, request: web.Request) -> web.StreamResponse:
        """The guild with its roles (the @everyone role carries `bot_permissions`): what `perpwatch doctor`
        computes the bot's channel permissions from."""
        if int(request.match_info["guild_id"]) != self.guild_id:
            return _error(404, "Unknown Guild", 10004)
        payload = self._guild_payload()
        return _json({k: v for k, v in payload.items() if k not in ("channels", "members", "threads")})

    async def _get_member(self, request: web.Request) -> web.StreamResponse:
        """The bot is the guild's one member here; it holds no role beyond @everyone."""
        if int(request.match_info["guild_id"]) != self.guild_id:
            return _error(404, "Unknown Guild", 10004)
        if int(request.match_info["user_id"]) != self.bot_user_id:
            return _error(404, "Unknown Member", 10007)
        return _json(
            {"user": self._bot_user(), "roles": [], "joined_at": JOINED_AT, "flags": 0, "deaf": False, "mute": False}
        )

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        channel = self._channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        return _json(self._channel_object(channel))

    async def _create_message(self, request: web.Request) -> web.StreamResponse:
        channel = self._channels.get(int(request.match_info["channel_id"]))
        if channel is None:
            return _error(404, "Unknown Channel", 10003)
        payload, files = await _read_body(request)
        problem = _message_error(payload, files, creating=True)
        if problem:
            return problem
        nonce = payload.get("nonce")
        if nonce is not None and len(str(nonce)) > 25:
            return _error(400, "Invalid Form Body", 50035, _nest_errors({"nonce": "Must be 25 or fewer in length."}))
        if payload.get("enforce_nonce") and nonce is not None:
            earlier = self._nonce_hit(str(nonce))
            if earlier is not None:
                return earlier
        message = self._new_message(channel.id, payload, files)
        if nonce is not None:
            self._nonces[(self.bot_user_id, str(nonce))] = (int(message["id"]), time.monotonic())
        self.messages.append(self._record(message, files))
        await self._notify()
        await self._echo_message_create(channel, message)
        return _json(message)

    def _nonce_hit(self, nonce: str) -> web.Response | None:
        """`enforce_nonce`: a nonce the same author used within the window returns that message and creates
        none (https://discord.com/developers/docs/resources/message#create-message); discord.py documents a
        NotFound when that message was deleted meanwhile."""
        seen = self._nonces.get((self.bot_user_id, nonce))
        if seen is None or time.monotonic() - seen[1] > self.nonce_window_s:
            return None
        message = self._objects.get(seen[0])
        if message is None:
            return _error(404, "Unknown Message", 10008)
        return _json(message)

    async def _channel_message(self, request: web.Request) -> web.StreamResponse:
        channel_id = int(request.match_info["channel_id"])
        message = self._objects.get(int(request.match_info["message_id"]))
        if message is None or message["channel_id"] != str(channel_id) or "webhook_id" in message:
            return _error(404, "Unknown Message", 10008)
        return await self._message_verb(request, message, lambda _, edited: self.edits.append(edited))

    async def _message_verb(
        self, request: web.Request, message: JSON, on_edit: Callable[[JSON, SentMessage], None]
    ) -> web.StreamResponse:
        """GET, PATCH or DELETE on a stored message, shared by channel and webhook routes."""
        if request.method == "GET":
            return _json(message)
        if request.method == "DELETE":
            self._objects.pop(int(message["id"]), None)
            return web.Response(status=204)
        payload, files = await _read_body(request)
        problem = _message_error(payload, files, creating=False)
        if problem:
            return problem
        self._apply_edit(message, payload, files)
        on_edit(payload, self._record(message, files))
        await self._notify()
        return _json(message)

    # --- interactions and webhooks -----------------------------------------------------------------

    async def _interaction_callback(self, request: web.Request) -> web.StreamResponse:
        inter = self._interactions.get(request.match_info["interaction_id"])
        loop_time = asyncio.get_running_loop().time()
        if inter is None or inter.token != request.match_info["token"]:
            return _error(404, "Unknown interaction", 10062)
        if inter.callback is not None:
            return _error(400, "Interaction has already been acknowledged.", 40060)
        if loop_time - inter.created_at > self.interaction_deadline_s:
            return _error(404, "Unknown interaction", 10062)
        payload, files = await _read_body(request)
        kind = int(payload.get("type", 0))
        data: JSON = payload.get("data") or {}
        if kind == 4:
            problem = _message_error(data, files, creating=True)
            if problem:
                return problem
        inter.callback = payload
        inter.bodies.append(payload)
        message = self._callback_message(inter, kind, data, files)
        await self._notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        return _json(self._callback_result(inter, kind, message))

    def _callback_message(
        self, inter: _Interaction, kind: int, data: JSON, files: Sequence[UploadedFile]
    ) -> JSON | None:
        """The original response message: the reply itself (type 4) or a "thinking…" placeholder (type 5)."""
        if kind == 4:
            message = self._new_message(inter.channel_id, data, files, webhook=True, message_type=20)
        elif kind == CALLBACK_DEFERRED_MESSAGE:
            placeholder = {"content": "", "flags": int(data.get("flags") or 0) | FLAG_LOADING}
            message = self._new_message(inter.channel_id, placeholder, (), webhook=True, message_type=20)
        else:
            return None
        inter.message_ids.append(int(message["id"]))
        if kind == 4:
            inter.shown = message
        return message

    def _callback_result(self, inter: _Interaction, kind: int, message: JSON | None) -> JSON:
        """`?with_response=1` (always sent by discord.py) needs 200 and this shape; 204 → TypeError (§0 #7)."""
        flags = int(message.get("flags") or 0) if message else 0
        resource: JSON = {"type": kind}
        if message is not None:
            resource["message"] = message
        return {
            "interaction": {
                "id": inter.id,
                "type": 2,
                "response_message_id": message["id"] if message else None,
                "response_message_loading": kind == CALLBACK_DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(flags & FLAG_EPHEMERAL),
            },
            "resource": resource,
        }

    def _webhook_interaction(self, request: web.Request) -> _Interaction | None:
        """Interaction followups are webhook calls on (application id, interaction token); a followup
        before the interaction was acknowledged is an unknown webhook on Discord too."""
        if int(request.match_info["app_id"]) != self.application_id:
            return None
        token = request.match_info["token"]
        inter = next((i for i in self._interactions.values() if i.token == token), None)
        return inter if inter is not None and inter.callback is not None else None

    async def _webhook_execute(self, request: web.Request) -> web.StreamResponse:
        inter = self._webhook_interaction(request)
        if inter is None:
            return _error(404, "Unknown Webhook", 10015)
        payload, files = await _read_body(request)
        problem = _message_error(payload, files, creating=True)
        if problem:
            return problem
        message = self._new_message(inter.channel_id, payload, files, webhook=True)
        inter.bodies.append(payload)
        inter.message_ids.append(int(message["id"]))
        inter.shown = message
        await self._notify()
        if request.query.get("wait") not in ("1", "true", "True"):
            return web.Response(status=204)
        return _json(message)

    async def _webhook_message(self, request: web.Request) -> web.StreamResponse:
        inter = self._webhook_interaction(request)
        if inter is None:
            return _error(404, "Unknown Webhook", 10015)
        raw_id = request.match_info["message_id"]
        if raw_id == "@original":
            message_id = inter.message_ids[0] if inter.message_ids else None
        else:
            message_id = int(raw_id) if raw_id.isdigit() and int(raw_id) in inter.message_ids else None
        message = self._objects.get(message_id) if message_id is not None else None
        if message is None:
            return _error(404, "Unknown Message", 10008)

        def on_edit(payload: JSON, _: SentMessage) -> None:
            inter.bodies.append(payload)
            inter.shown = message

        return await self._message_verb(request, message, on_edit)

    def _reply(self, inter: _Interaction) -> InteractionReply:
        callback = inter.callback or {}
        shown = inter.shown or callback.get("data") or {}
        return InteractionReply(
            interaction_id=inter.id,
            callback_type=int(callback.get("type", 0)),
            content=str(shown.get("content") or ""),
            embeds=list(shown.get("embeds") or []),
            flags=int(shown.get("flags") or 0),
            bodies=tuple(inter.bodies),
            attachments=tuple(shown.get("attachments") or ()),
        )

    # --- messages ----------------------------------------------------------------------------------

    def _new_message(
        self,
        channel_id: int,
        payload: JSON,
        files: Sequence[UploadedFile],
        *,
        webhook: bool = False,
        message_type: int = 0,
    ) -> JSON:
        """A full message object, stored so later GET/PATCH/DELETE find it."""
        channel = self._channels.get(channel_id)
        message: JSON = {
            "id": str(self._next_id()),
            "type": message_type,
            "content": payload.get("content") or "",
            "channel_id": str(channel_id),
            "author": self._bot_user(),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": self._attachment_objects(files),
            "embeds": list(payload.get("embeds") or []),
            "components": list(payload.get("components") or []),
            "pinned": False,
            "flags": int(payload.get("flags") or 0),
        }
        if channel is not None and channel.type == CHANNEL_GUILD_TEXT:
            message["guild_id"] = str(self.guild_id)
        if payload.get("nonce") is not None:
            message["nonce"] = payload["nonce"]
        if webhook:
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
        self._objects[int(message["id"])] = message
        return message

    def _attachment_objects(self, files: Sequence[UploadedFile]) -> list[JSON]:
        attachments = []
        for upload in files:
            aid = self._next_id()
            url = f"http://127.0.0.1:{self.port}/attachments/{aid}/{upload.filename}"
            attachments.append(
                {
                    "id": str(aid),
                    "filename": upload.filename,
                    "size": len(upload.data),
                    "url": url,
                    "proxy_url": url,
                    "content_type": upload.content_type,
                }
            )
        return attachments

    def _apply_edit(self, message: JSON, payload: JSON, files: Sequence[UploadedFile]) -> None:
        """PATCH semantics: only keys present change; `attachments` lists the ones to keep."""
        if "content" in payload:
            message["content"] = payload["content"] or ""
        for key in ("embeds", "components"):
            if key in payload:
                message[key] = list(payload[key] or [])
        if "flags" in payload:
            message["flags"] = int(payload["flags"] or 0)
        message["flags"] = int(message.get("flags") or 0) & ~FLAG_LOADING
        if "attachments" in payload or files:
            keep = {str(a.get("id")) for a in payload.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in keep]
            message["attachments"] = kept + self._attachment_objects(files)
        message["edited_timestamp"] = _now_iso()

    def _record(self, message: JSON, files: Sequence[UploadedFile]) -> SentMessage:
        return SentMessage(
            id=int(message["id"]),
            channel_id=int(message["channel_id"]),
            content=str(message["content"]),
            embeds=list(message["embeds"]),
            received_at=time.monotonic(),
            files=tuple(files),
        )

    def _next_id(self) -> int:
        self._id_counter += 1
        return _snowflake_now(self._id_counter)
