"""Loopback fake of the Telegram Bot API, faithful enough for the real python-telegram-bot client.

Tests and `perpwatch demo` point PTB at this server instead of api.telegram.org, so every request
crosses a real socket and goes through PTB's own encoding and error mapping. The wire rules it
follows (and the ones a naive fake gets wrong) are in shared/research/chat-platforms.md §0-§1:

- PTB judges success by HTTP status, so every error uses a non-2xx status plus the JSON envelope.
- A 429 becomes `RetryAfter` only when `parameters.retry_after` is present.
- `getMe` carries `username`, or `CommandHandler` crashes on `None.lower()`.
- Bodies are form-encoded (multipart for uploads); every value is a string and PTB json-dumps
  anything that is not a `str`, so JSON-typed fields are decoded here by name.

Usage::

    async with FakeTelegramApi(TEST_TOKEN) as api:
        bot = telegram.Bot(TEST_TOKEN, base_url=api.api_base_url, base_file_url=api.file_base_url)
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self, get_args

from aiohttp import web

__all__ = [
    "TEST_TOKEN",
    "FakeTelegramApi",
    "FaultKind",
    "MemberStatus",
    "RecordedRequest",
    "SentMessage",
    "SentTimeoutError",
]

# Obviously fake; the numeric prefix becomes the bot's user id, as with real tokens.
TEST_TOKEN: Final = "123456:TEST-TOKEN"

FaultKind = Literal[
    "retry_after", "blocked", "kicked", "chat_not_found", "migrated", "server_error", "disconnect", "accept_then_hang"
]
MemberStatus = Literal["creator", "administrator", "member", "left", "kicked"]
ChatType = Literal["private", "group", "supergroup", "channel"]

# Canonical camelCase names; the Bot API matches method names case-insensitively.
_METHODS: Final = (
    "getMe",
    "deleteWebhook",
    "getWebhookInfo",
    "getUpdates",
    "sendMessage",
    "editMessageText",
    "editMessageCaption",
    "sendPhoto",
    "getChatMember",
    "getChatAdministrators",
    "getChat",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "answerCallbackQuery",
)
_CANONICAL: Final = {name.lower(): name for name in _METHODS}
_FAULTABLE: Final = frozenset({"sendmessage", "editmessagetext", "editmessagecaption", "sendphoto", "getchatmember"})

# Fields PTB sends json-dumped (anything not a `str`). Decoding by name, not by trying json.loads on
# every value, keeps a user's text "123" or "[BTC] long" a string.
_JSON_FIELDS: Final = frozenset(
    {
        "chat_id",
        "from_chat_id",
        "message_id",
        "message_ids",
        "user_id",
        "offset",
        "limit",
        "timeout",
        "allowed_updates",
        "drop_pending_updates",
        "reply_parameters",
        "reply_to_message_id",
        "allow_sending_without_reply",
        "reply_markup",
        "entities",
        "caption_entities",
        "link_preview_options",
        "disable_web_page_preview",
        "disable_notification",
        "protect_content",
        "allow_paid_broadcast",
        "message_thread_id",
        "show_caption_above_media",
        "has_spoiler",
        "commands",
        "scope",
        "show_alert",
        "cache_time",
    }
)

_MAX_TEXT_CHARS: Final = 4096
_MAX_CAPTION_CHARS: Final = 1024
_MAX_UPLOAD_BYTES: Final = 50 * 1024 * 1024
_COMMAND_RE: Final = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?=\s|$)")
_TAG_RE: Final = re.compile(r"<[^>]*>")
_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
# The 12 booleans PTB's ChatMemberAdministrator requires; omitting one is a TypeError in PTB.
_ADMIN_RIGHTS: Final[Mapping[str, bool]] = {
    "can_be_edited": False,
    "is_anonymous": False,
    "can_manage_chat": True,
    "can_delete_messages": True,
    "can_manage_video_chats": True,
    "can_restrict_members": True,
    "can_promote_members": False,
    "can_change_info": True,
    "can_invite_users": True,
    "can_post_stories": False,
    "can_edit_stories": False,
    "can_delete_stories": False,
}

JsonDict = dict[str, Any]
_HANG: Final = web.RequestKey("hang", bool)
_Handler = Callable[[web.Request, JsonDict, dict[str, bytes]], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SentMessage:
    """A message the bot got accepted: sendMessage, editMessageText or sendPhoto (text = caption)."""

    method: str
    chat_id: int
    text: str | None
    parse_mode: str | None
    message_id: int
    received_at: float  # time.monotonic() when the request arrived
    params: JsonDict = field(compare=False)  # decoded request parameters
    photo_size_bytes: int | None = None

    @property
    def body(self) -> str:
        """The text (or caption), empty when there was none: what assertions read."""
        return self.text or ""


@dataclass(frozen=True)
class RecordedRequest:
    """Any call that reached the fake with a valid token, including ones answered with an error."""

    method: str
    params: JsonDict
    received_at: float


class SentTimeoutError(AssertionError, TimeoutError):
    """Raised by the `wait_for_*` helpers: a failed expectation in a test, a timeout elsewhere."""


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int
    retry_after: int
    migrate_to: int | None


class _ApiError(Exception):
    """An error answer; raised inside handlers so validation reads top to bottom."""

    def __init__(self, status: int, description: str, parameters: JsonDict | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def response(self) -> web.Response:
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return web.json_response(body, status=self.status)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _utf16_len(text: str) -> int:
    """Entity offsets and lengths count UTF-16 code units, so an emoji counts 2."""
    return len(text.encode("utf-16-le")) // 2


def _maybe_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value  # e.g. chat_id="@channelname"


def _visible_len(text: str, parse_mode: str | None) -> int:
    """Approximate length after markup parsing: HTML tags dropped, entities unescaped.

    Telegram applies its 4096 limit to the parsed text; its exact counting rule is unverified.
    """
    if parse_mode is not None and parse_mode.upper() == "HTML":
        text = html.unescape(_TAG_RE.sub("", text))
    return len(text)


def _infer_chat_type(chat_id: int) -> ChatType:
    """Bot API ids: users > 0, basic groups < 0, supergroups and channels -100xxxxxxxxxx."""
    if chat_id > 0:
        return "private"
    return "supergroup" if chat_id <= -1_000_000_000_000 else "group"


class FakeTelegramApi:
    """A Bot API server on 127.0.0.1 that records calls and replays scripted faults.

    Real Telegram semantics it keeps: long-poll getUpdates with offset confirmation, message ids
    increasing per chat (shared with incoming messages), edits of unknown or unchanged messages
    rejected, text over 4096 chars rejected. It does not parse markup into entities: returned
    messages echo the text as sent.
    """

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        bot_username: str = "perpwatch_bot",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._token = token
        self.bot_username = bot_username
        self._host = host
        self._port = port
        prefix = token.split(":", 1)[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 1
        # Server-side delay before answering send methods, so a benchmark can model a slow API.
        self.latency_s = 0.0
        # While set, every method answers 502 Bad Gateway, as Telegram's front ends do in an outage.
        self.outage = False
        self._released = asyncio.Event()  # set by close(): ends handlers parked by `accept_then_hang`
        self._allowed_updates: list[str] = []

        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closed = False

        self._requests: list[RecordedRequest] = []
        self._sent: list[SentMessage] = []
        self._recorded = asyncio.Condition()  # notified on every request and send
        self._updates: deque[JsonDict] = deque()
        self._updates_changed = asyncio.Event()
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._chats: dict[int, JsonDict] = {}
        self._bot_messages: dict[tuple[int, int], tuple[str, str | None, Any]] = {}
        self._members: dict[tuple[int, int], MemberStatus] = {}
        self._faults: dict[tuple[str, int | None], deque[_Fault]] = {}
        self._commands: dict[tuple[str, str], list[JsonDict]] = {}
        self._photo_ids = itertools.count(1)

        self._handlers: dict[str, _Handler] = {
            "getme": self._get_me,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "getupdates": self._get_updates,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagecaption": self._edit_message_caption,
            "sendphoto": self._send_photo,
            "getchatmember": self._get_chat_member,
            "getchatadministrators": self._get_chat_administrators,
            "getchat": self._get_chat,
            "setmycommands": self._set_my_commands,
            "getmycommands": self._get_my_commands,
            "deletemycommands": self._delete_my_commands,
            "answercallbackquery": self._answer_callback_query,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and serve. The port is ephemeral unless one was given."""
        if self._runner is not None or self._closed:
            raise RuntimeError("FakeTelegramApi can be started once")
        app = web.Application(client_max_size=_MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._dispatch)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._file)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # access_log=None: aiohttp would log each URL, and the URL holds the bot token.
        # handler_cancellation: a long poll whose client went away must not linger until timeout.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self._base_url = f"http://{self._host}:{port}"

    async def close(self) -> None:
        """Stop serving; pending long polls return [] first. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._released.set()
        self._wake_pollers()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`; clients call `{base_url}/bot{token}/{method}`."""
        if self._base_url is None:
            raise RuntimeError("FakeTelegramApi is not started")
        return self._base_url

    @property
    def api_base_url(self) -> str:
        """What PTB's `base_url` wants: it appends the token itself."""
        return f"{self.base_url}/bot"

    @property
    def file_base_url(self) -> str:
        """What PTB's `base_file_url` wants."""
        return f"{self.base_url}/file/bot"

    # ------------------------------------------------------------------ test-side API

    @property
    def sent(self) -> list[SentMessage]:
        """Snapshot of accepted outgoing messages, oldest first. Failed sends are not here."""
        return list(self._sent)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every call that passed the token check, errors included."""
        return list(self._requests)

    def requests_for(self, method: str) -> list[RecordedRequest]:
        """Calls of one method, matched case-insensitively."""
        wanted = method.lower()
        return [r for r in self._requests if r.method.lower() == wanted]

    @property
    def commands(self) -> list[JsonDict]:
        """The command list last set for the default scope and language."""
        return self.commands_for()

    def commands_for(self, scope: JsonDict | None = None, language_code: str = "") -> list[JsonDict]:
        """The command list last set for a scope (e.g. {"type": "all_chat_administrators"})."""
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    # ASYNC109: `timeout` here is a hang guard for tests, not a cancellation scope callers compose.
    async def wait_for_sent(self, n: int, timeout: float = 5.0) -> list[SentMessage]:  # noqa: ASYNC109
        """Wait until at least `n` messages were accepted; returns the snapshot.

        Wakes on each recorded call (a Condition, no polling). The timeout is only a hang guard.
        """
        await self._wait_until(lambda: len(self._sent) >= n, timeout, f"{n} sent message(s)")
        return list(self._sent)

    async def wait_for_request(
        self,
        method: str,
        n: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[RecordedRequest]:
        """Wait until `method` was called at least `n` times, e.g. until a poller is parked."""
        await self._wait_until(lambda: len(self.requests_for(method)) >= n, timeout, f"{n} {method} call(s)")
        return self.requests_for(method)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until `predicate` holds, re-checked on every recorded call (for conditions on `sent`)."""
        await self._wait_until(predicate, timeout, "the expected messages")

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
        async with self._recorded:
            try:
                async with asyncio.timeout(timeout):
                    await self._recorded.wait_for(predicate)
            except TimeoutError:
                got = [(m.method, m.chat_id, m.text) for m in self._sent]
                calls = [r.method for r in self._requests]
                raise SentTimeoutError(
                    f"expected at least {what} within {timeout}s; sent={got} calls={calls}"
                ) from None

    def enqueue_message(
        self,
        chat_id: int,
        chat_type: ChatType,
        user_id: int,
        text: str,
        *,
        title: str | None = None,
        as_group: bool = False,
    ) -> int:
        """Queue an incoming message as an Update and wake long pollers; returns its update_id.

        A leading `/command` or `/command@bot` gets the `bot_command` entity Telegram would add,
        since PTB's CommandHandler only fires on that entity. `as_group` sends it the way an anonymous
        group admin's message arrives: from GroupAnonymousBot (1087968824) with `sender_chat` = the group.
        """
        if chat_type not in get_args(ChatType):
            raise ValueError(f"chat_type must be one of {get_args(ChatType)}, got {chat_type!r}")
        chat = self._remember_chat(chat_id, chat_type, title)
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}"}
        message: JsonDict = {
            "message_id": self._next_message_id(chat_id),
            "date": int(time.time()),
            "chat": chat,
            "text": text,
        }
        if match := _COMMAND_RE.match(text):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16_len(match.group())}]
        if chat_type == "channel":
            message["sender_chat"] = chat
            kind = "channel_post"
        elif as_group:
            message["from"] = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
            message["sender_chat"] = chat
            kind = "message"
        else:
            message["from"] = user
            kind = "message"
            # Someone who just posted in the chat is in it.
            self._members.setdefault((chat_id, user_id), "member")
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, kind: message})
        self._wake_pollers()
        return update_id

    def enqueue_edit(self, chat_id: int, chat_type: ChatType, user_id: int, message_id: int, text: str) -> int:
        """Queue an `edited_message` update: a user changed the text of message `message_id`."""
        chat = self._remember_chat(chat_id, chat_type, None)
        message: JsonDict = {
            "message_id": message_id,
            "date": int(time.time()),
            "edit_date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}"},
            "text": text,
        }
        if match := _COMMAND_RE.match(text):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16_len(match.group())}]
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, "edited_message": message})
        self._wake_pollers()
        return update_id

    def revoke_token(self) -> None:
        """What @BotFather's /revoke does: every later call with the old token answers 401 Unauthorized."""
        self._token = f"{self._token}-revoked"

    def delete_message(self, chat_id: int, message_id: int) -> None:
        """What an admin deleting the bot's message does: later edits answer "message to edit not found"."""
        self._bot_messages.pop((chat_id, message_id), None)

    def stored_text(self, chat_id: int, message_id: int) -> str | None:
        """The text (or caption) of a bot message as it stands now, after any edits."""
        stored = self._bot_messages.get((chat_id, message_id))
        return None if stored is None else stored[1]

    def set_member_status(self, chat_id: int, user_id: int, status: MemberStatus) -> None:
        """What getChatMember answers for this pair. Unset pairs answer "left"."""
        if status not in get_args(MemberStatus):
            raise ValueError(f"status must be one of {get_args(MemberStatus)}, got {status!r}")
        self._members[(chat_id, user_id)] = status

    def fail_next(
        self,
        method: str,
        chat_id: int | None = None,
        *,
        kind: FaultKind,
        times: int = 1,
        retry_after: int | None = None,
        migrate_to: int | None = None,
    ) -> None:
        """Answer the next `times` calls of a send method (or getChatMember) with a scripted failure.

        Scripts for a chat win over global ones (`chat_id=None`); scripts queue in call order.
        `retry_after` defaults to 1 s; `migrated` needs `migrate_to`. `accept_then_hang` takes the message
        (it is in `sent`) and never answers, as when Telegram's answer is lost; `close()` ends the wait.
        """
        key = method.lower()
        if key not in _FAULTABLE:
            raise ValueError(f"faults apply to {sorted(_CANONICAL[m] for m in _FAULTABLE)}; got {method!r}")
        if kind not in get_args(FaultKind):
            raise ValueError(f"kind must be one of {get_args(FaultKind)}, got {kind!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "migrated" and migrate_to is None:
            raise ValueError("kind='migrated' needs migrate_to")
        fault = _Fault(kind, times, 1 if retry_after is None else retry_after, migrate_to)
        self._faults.setdefault((key, chat_id), deque()).append(fault)

    # ------------------------------------------------------------------ plumbing

    def _wake_pollers(self) -> None:
        # Swap in a fresh Event so a woken poller never has to clear a shared one.
        event, self._updates_changed = self._updates_changed, asyncio.Event()
        event.set()

    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _remember_chat(self, chat_id: int, chat_type: ChatType, title: str | None) -> JsonDict:
        chat: JsonDict = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = f"User{chat_id}"
        else:
            chat["title"] = title or self._chats.get(chat_id, {}).get("title") or f"Chat {chat_id}"
        self._chats[chat_id] = chat
        return chat

    def _chat(self, chat_id: int) -> JsonDict:
        return self._chats.get(chat_id) or self._remember_chat(chat_id, _infer_chat_type(chat_id), None)

    def _bot_user(self) -> JsonDict:
        return {"id": self.bot_id, "is_bot": True, "first_name": "PerpWatch", "username": self.bot_username}

    def _user(self, user_id: int) -> JsonDict:
        if user_id == self.bot_id:
            return self._bot_user()
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}

    def _take_fault(self, method: str, chat_id: int) -> _Fault | None:
        for key in ((method, chat_id), (method, None)):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining == 0:
                    queue.popleft()
                return fault
        return None

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope if isinstance(scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(language_code or "")

    async def _record_sent(self, message: SentMessage) -> None:
        async with self._recorded:
            self._sent.append(message)
            self._recorded.notify_all()

    async def _record_request(self, request: RecordedRequest) -> None:
        async with self._recorded:
            self._requests.append(request)
            self._recorded.notify_all()

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[JsonDict, dict[str, bytes]]:
        """Query string plus form, multipart or JSON body; JSON-typed fields decoded by name."""
        raw: JsonDict = dict(request.query)
        files: dict[str, bytes] = {}
        if request.body_exists:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _ApiError(400, "Bad Request: can't parse JSON body") from None
                if not isinstance(body, dict):
                    raise _ApiError(400, "Bad Request: JSON body must be an object")
                raw.update(body)
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = value.file.read()
                        raw[key] = value.filename
                    elif isinstance(value, (bytes, bytearray)):
                        raw[key] = bytes(value).decode()
                    else:
                        raw[key] = value
        return {k: _maybe_json(v) if k in _JSON_FIELDS else v for k, v in raw.items()}, files

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self._token:
            return _ApiError(401, "Unauthorized").response()
        name = request.match_info["method"]
        try:
            params, files = await self._read_params(request)
            await self._record_request(RecordedRequest(_CANONICAL.get(name.lower(), name), params, time.monotonic()))
            if self.outage:
                raise _ApiError(502, "Bad Gateway")
            handler = self._handlers.get(name.lower())
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            response = await handler(request, params, files)
        except _ApiError as error:
            return error.response()
        if request.get(_HANG):
            await self._released.wait()
        return response

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self._token:
            return _ApiError(401, "Unauthorized").response()
        return _ApiError(404, "Not Found").response()

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _ApiError(404, "Not Found").response()

    @staticmethod
    def _int_param(params: JsonDict, name: str, *, missing: str) -> int:
        value = params.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _ApiError(400, missing)
        return value

    async def _before_send(self, request: web.Request, method: str, params: JsonDict) -> int:
        """Shared prologue of send methods: chat id, scripted fault, simulated latency."""
        chat_id = self._int_param(params, "chat_id", missing="Bad Request: chat not found")
        fault = self._take_fault(method.lower(), chat_id)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if fault is not None and fault.kind == "accept_then_hang":
            request[_HANG] = True  # the handler does its work; `_dispatch` then never answers
        elif fault is not None:
            await self._raise_fault(request, fault)
        return chat_id

    @staticmethod
    async def _raise_fault(request: web.Request, fault: _Fault) -> None:
        match fault.kind:
            case "retry_after":
                raise _ApiError(
                    429,
                    f"Too Many Requests: retry after {fault.retry_after}",
                    {"retry_after": fault.retry_after},
                )
            case "blocked":
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
            case "kicked":
                raise _ApiError(403, "Forbidden: bot was kicked from the group chat")
            case "chat_not_found":
                raise _ApiError(400, "Bad Request: chat not found")
            case "migrated":
                raise _ApiError(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": fault.migrate_to},
                )
            case "server_error":
                raise _ApiError(502, "Bad Gateway")
            case "accept_then_hang":  # pragma: no cover - handled in _before_send
                pass
            case "disconnect":
                # Drop the socket with no response: the client sees "Server disconnected".
                # With handler_cancellation on, the lost connection cancels this handler.
                if request.transport is not None:
                    request.transport.close()
                await asyncio.Event().wait()

    def _bot_message(self, chat_id: int, message_id: int, **content: Any) -> JsonDict:
        message: JsonDict = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self._chat(chat_id),
            "from": self._bot_user(),
        }
        message.update({k: v for k, v in content.items() if v is not None})
        return message

    # ------------------------------------------------------------------ methods

    async def _get_me(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        return _ok(
            self._bot_user()
            | {
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _delete_webhook(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        if params.get("drop_pending_updates") is True:
            self._updates.clear()
        return _ok(True)

    async def _get_webhook_info(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        return _ok({"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)})

    async def _get_updates(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        """Long poll: `offset` confirms (drops) earlier updates; waits up to `timeout` s for one.

        `allowed_updates` is remembered until changed, as Telegram does; an empty list means every kind.
        """
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(kind) for kind in allowed]
        offset = int(params.get("offset") or 0)
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        if offset < 0:  # -N: keep only the last N, forget the rest
            while len(self._updates) > -offset:
                self._updates.popleft()
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()
        if self._allowed_updates:
            kept = [u for u in self._updates if any(kind in u for kind in self._allowed_updates)]
            self._updates = deque(kept)
        if not self._updates and timeout > 0 and not self._closed:
            wake = self._updates_changed
            try:
                async with asyncio.timeout(timeout):
                    await wake.wait()
            except TimeoutError:
                pass
        return _ok(list(itertools.islice(self._updates, limit)))

    async def _send_message(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        received_at = time.monotonic()
        chat_id = await self._before_send(request, "sendMessage", params)
        text = params.get("text")
        parse_mode = params.get("parse_mode")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if _visible_len(text, parse_mode) > _MAX_TEXT_CHARS:
            raise _ApiError(400, "Bad Request: message is too long")
        message_id = self._next_message_id(chat_id)
        markup = params.get("reply_markup")
        self._bot_messages[(chat_id, message_id)] = ("text", text, markup)
        await self._record_sent(SentMessage("sendMessage", chat_id, text, parse_mode, message_id, received_at, params))
        inline = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        return _ok(self._bot_message(chat_id, message_id, text=text, reply_markup=inline))

    async def _edit_message_text(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        received_at = time.monotonic()
        chat_id = await self._before_send(request, "editMessageText", params)
        message_id = self._int_param(params, "message_id", missing="Bad Request: message to edit not found")
        text = params.get("text")
        parse_mode = params.get("parse_mode")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if _visible_len(text, parse_mode) > _MAX_TEXT_CHARS:
            # Edits answer in TDLib's spelling (seen as BadRequest "Message_too_long", kfstorm/carnivore#3).
            raise _ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        current = self._bot_messages.get((chat_id, message_id))
        if current is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if current[0] != "text":
            raise _ApiError(400, "Bad Request: there is no text in the message to edit")
        markup = params.get("reply_markup")
        if current[1:] == (text, markup):
            raise _ApiError(400, _NOT_MODIFIED)
        self._bot_messages[(chat_id, message_id)] = ("text", text, markup)
        await self._record_sent(
            SentMessage("editMessageText", chat_id, text, parse_mode, message_id, received_at, params)
        )
        inline = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        return _ok(self._bot_message(chat_id, message_id, text=text, edit_date=int(time.time()), reply_markup=inline))

    async def _send_photo(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        received_at = time.monotonic()
        chat_id = await self._before_send(request, "sendPhoto", params)
        photo = params.get("photo")
        data = files.get("photo")
        if isinstance(photo, str) and photo.startswith("attach://"):
            data = files.get(photo.removeprefix("attach://"))
        if data is None and not (isinstance(photo, str) and photo):
            raise _ApiError(400, "Bad Request: there is no photo in the request")
        caption = params.get("caption")
        parse_mode = params.get("parse_mode")
        if isinstance(caption, str) and _visible_len(caption, parse_mode) > _MAX_CAPTION_CHARS:
            raise _ApiError(400, "Bad Request: message caption is too long")
        message_id = self._next_message_id(chat_id)
        self._bot_messages[(chat_id, message_id)] = ("photo", caption, params.get("reply_markup"))
        size = None if data is None else len(data)
        await self._record_sent(
            SentMessage("sendPhoto", chat_id, caption, parse_mode, message_id, received_at, params, size)
        )
        n = next(self._photo_ids)
        photo_size = {
            "file_id": f"fake-photo-{n}",
            "file_unique_id": f"fake-u-{n}",
            "width": 800,
            "height": 600,
        }
        if size is not None:
            photo_size["file_size"] = size
        return _ok(self._bot_message(chat_id, message_id, photo=[photo_size], caption=caption))

    async def _edit_message_caption(
        self, request: web.Request, params: JsonDict, files: dict[str, bytes]
    ) -> web.Response:
        received_at = time.monotonic()
        chat_id = await self._before_send(request, "editMessageCaption", params)
        message_id = self._int_param(params, "message_id", missing="Bad Request: message to edit not found")
        caption = params.get("caption")
        parse_mode = params.get("parse_mode")
        if isinstance(caption, str) and _visible_len(caption, parse_mode) > _MAX_CAPTION_CHARS:
            raise _ApiError(400, "Bad Request: message caption is too long")
        current = self._bot_messages.get((chat_id, message_id))
        if current is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        markup = params.get("reply_markup")
        if current[1:] == (caption, markup):
            raise _ApiError(400, _NOT_MODIFIED)
        self._bot_messages[(chat_id, message_id)] = (current[0], caption, markup)
        await self._record_sent(
            SentMessage("editMessageCaption", chat_id, caption, parse_mode, message_id, received_at, params)
        )
        return _ok(self._bot_message(chat_id, message_id, caption=caption, edit_date=int(time.time())))

    def _member(self, chat_id: int, user_id: int) -> JsonDict:
        """ChatMember in the exact shapes PTB requires (chat-platforms.md §1.5)."""
        status = self._members.get((chat_id, user_id), "left")
        user = self._user(user_id)
        match status:
            case "creator":
                return {"status": "creator", "user": user, "is_anonymous": False}
            case "administrator":
                return {"status": "administrator", "user": user, **_ADMIN_RIGHTS}
            case "kicked":
                return {"status": "kicked", "user": user, "until_date": 0}  # 0 = forever
            case _:
                return {"status": status, "user": user}

    async def _get_chat_member(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        chat_id = await self._before_send(request, "getChatMember", params)
        user_id = self._int_param(params, "user_id", missing="Bad Request: user not found")
        return _ok(self._member(chat_id, user_id))

    async def _get_chat_administrators(
        self, request: web.Request, params: JsonDict, files: dict[str, bytes]
    ) -> web.Response:
        chat_id = self._int_param(params, "chat_id", missing="Bad Request: chat not found")
        admins = [
            self._member(chat_id, user_id)
            for (chat, user_id), status in self._members.items()
            if chat == chat_id and status in ("creator", "administrator")
        ]
        return _ok(admins)

    async def _get_chat(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        chat_id = self._int_param(params, "chat_id", missing="Bad Request: chat not found")
        # ChatFullInfo: PTB 22 requires these three beyond id/type.
        gifts = dict.fromkeys(
            (
                "unlimited_gifts",
                "limited_gifts",
                "unique_gifts",
                "premium_subscription",
                "gifts_from_channels",
            ),
            False,
        )
        return _ok(self._chat(chat_id) | {"accent_color_id": 0, "max_reaction_count": 11, "accepted_gift_types": gifts})

    async def _set_my_commands(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _ApiError(400, 'Bad Request: parameter "commands" is required')
        self._commands[self._commands_key(params.get("scope"), params.get("language_code"))] = commands
        return _ok(True)

    async def _get_my_commands(self, request: web.Request, params: JsonDict, files: dict[str, bytes]) -> web.Response:
        return _ok(self._commands.get(self._commands_key(params.get("scope"), params.get("language_code")), []))

    async def _delete_my_commands(
        self, request: web.Request, params: JsonDict, files: dict[str, bytes]
    ) -> web.Response:
        self._commands.pop(self._commands_key(params.get("scope"), params.get("language_code")), None)
        return _ok(True)

    async def _answer_callback_query(
        self, request: web.Request, params: JsonDict, files: dict[str, bytes]
    ) -> web.Response:
        return _ok(True)
