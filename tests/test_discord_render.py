"""Pure parts of the Discord adapter: embeds within Discord's limits and coloured by side, reply text, the
slash-command schema built from the shared Param specs, option values as handler text, the sync
fingerprint, and error classification. No sockets; the e2e file drives the same code through discord.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import discord
import pytest
from discord import app_commands

from bot.commands import COMMANDS, Command, Param, by_name
from bot.commands.values import TOPICS
from bot.families import render_event, render_summary
from bot.platforms.delivery import MessageGone, PermanentFailure, RetryLater, TransientFailure, Unauthorized
from bot.platforms.discord import classify, part_nonce
from bot.platforms.discord_commands import command_fingerprint, option_text, slash_command
from bot.platforms.discord_render import (
    MAX_CONTENT,
    MAX_DESCRIPTION,
    MAX_EMBED_TOTAL,
    MAX_FIELD_NAME,
    MAX_FIELD_VALUE,
    MAX_FIELDS,
    MAX_FOOTER,
    MAX_TITLE,
    alert_embed,
    reply_parts,
)
from bot.render import Alert, AlertField, Image, Reply
from bot.text import TRUNCATED
from tests.factories import liquidation

# --- embeds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alert", "colour"),
    [
        (render_event(liquidation(side="long")), 0xED4245),
        (render_event(liquidation(side="short")), 0x57F287),
        (render_summary([liquidation(key="a"), liquidation(key="b", side="short")]), 0x5865F2),
    ],
    ids=["long-red", "short-green", "summary-blurple"],
)
def test_colour_follows_the_liquidated_side(alert: Alert, colour: int) -> None:
    embed = alert_embed(alert)
    assert embed.colour is not None and embed.colour.value == colour


def test_liquidation_embed_reads_like_the_alert() -> None:
    alert = render_event(liquidation(side="short", usd="1250000"))
    embed = alert_embed(alert)
    assert embed.title == alert.title
    assert embed.description == f"**{alert.headline}**"
    assert [(f.name, f.inline) for f in embed.fields] == [(f.name, True) for f in alert.fields]
    usd = next(f for f in embed.fields if f.name == "USD")
    assert usd.value == "**$1.25M**"  # emphasised fields are bold
    side = next(f for f in embed.fields if f.name == "Side")
    assert side.value == "SHORT liquidated"


def test_summary_items_are_listed_under_the_headline() -> None:
    events = [liquidation(key=str(i), usd=str(1000 * (i + 1))) for i in range(3)]
    embed = alert_embed(render_summary(events))
    assert embed.description is not None
    lines = embed.description.splitlines()
    assert lines[0] == "**$6.00K**"
    assert [line.split()[:2] for line in lines[1:]] == [["•", "$3.00K"], ["•", "$2.00K"], ["•", "$1.00K"]]
    assert embed.footer.text is not None and embed.footer.text.startswith("Merged because")


def test_oversized_alert_is_cut_to_every_embed_limit() -> None:
    alert = Alert(
        title="T" * 400,
        headline="H" * 300,
        fields=tuple(AlertField("N" * 300, "V" * 2000, emphasis=i % 2 == 0) for i in range(40)),
        items=tuple(f"item {i} " + "x" * 200 for i in range(100)),
        footer="F" * 3000,
        url="https://example.com/tx/1",
    )
    embed = alert_embed(alert)
    assert embed.title is not None and len(embed.title) == MAX_TITLE and embed.title.endswith("…")
    assert embed.description is not None and len(embed.description) <= MAX_DESCRIPTION
    assert embed.description.endswith(TRUNCATED)
    assert len(embed.fields) <= MAX_FIELDS
    for fld in embed.fields:
        assert fld.name is not None and fld.value is not None
        assert len(fld.name) <= MAX_FIELD_NAME and len(fld.value) <= MAX_FIELD_VALUE
    bold = [f.value for f in embed.fields if f.value and f.value.startswith("**")]
    assert bold and all(v.endswith("**") for v in bold)  # clipped before bolding, so markup stays closed
    assert embed.footer.text is not None and len(embed.footer.text) <= MAX_FOOTER
    assert len(embed) <= MAX_EMBED_TOTAL
    assert embed.url == "https://example.com/tx/1"


def test_more_than_25_fields_says_how_many_were_left_out() -> None:
    alert = Alert(title="t", headline="h", fields=tuple(AlertField(f"f{i}", "v") for i in range(30)))
    embed = alert_embed(alert)
    assert len(embed.fields) == MAX_FIELDS
    assert (embed.fields[-1].name, embed.fields[-1].value) == ("More", "6 more fields not shown")


def test_markdown_in_values_is_escaped_and_empty_values_are_filled() -> None:
    alert = Alert(title="t", headline="h", fields=(AlertField("Account", "**x** __y__"), AlertField("Note", "")))
    embed = alert_embed(alert)
    assert embed.fields[0].value == r"\*\*x\*\* \_\_y\_\_"
    assert embed.fields[1].value == "-"  # Discord refuses an empty field value


# --- replies ---------------------------------------------------------------------------------------------


def test_reply_is_a_bold_title_then_lines() -> None:
    assert reply_parts(Reply.of("one", "two", title="Status")) == ["**Status**\none\ntwo"]
    assert reply_parts(Reply.of("no title")) == ["no title"]


def test_long_reply_is_split_at_lines_and_loses_none() -> None:
    reply = Reply(lines=tuple(f"line {i:04d} " + "y" * 40 for i in range(200)), title="Many")
    parts = reply_parts(reply)
    assert len(parts) > 1
    assert all(len(p) <= MAX_CONTENT for p in parts)
    assert "\n".join(parts).splitlines() == ["**Many**", *reply.lines]


def test_markdown_escapes_are_never_split_from_their_character() -> None:
    parts = reply_parts(Reply.of("*" * 3000))
    assert all(len(p) <= MAX_CONTENT for p in parts)
    assert all(not p.endswith("\\") for p in parts)
    assert "".join(parts) == "\\*" * 3000


def test_image_embed_points_at_its_attachment() -> None:
    alert = Alert(title="t", headline="h", fields=(), image=Image(b"png", filename="buyback.png"))
    assert alert_embed(alert).image.url == "attachment://buyback.png"


def test_nonce_per_part_is_stable_distinct_and_short() -> None:
    nonce = "delivery-123456789012345678901234567890"
    assert part_nonce(nonce, 0) == part_nonce(nonce, 0)
    assert part_nonce(nonce, 0) != part_nonce(nonce, 1)
    assert len(part_nonce(nonce, 0)) <= 25


# --- slash commands -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (250000.0, "250000"),
        (1.5, "1.5"),
        (1e-7, "0.0000001"),
        (1e20, "100000000000000000000"),
        (42, "42"),
        ("BTC", "BTC"),
        (-5.0, "-5"),
    ],
)
def test_option_values_reach_handlers_as_telegram_text(value: object, expected: str) -> None:
    assert option_text(value) == expected


def _payload(command: Command) -> dict[str, Any]:
    async def run(*_: object) -> None:
        raise AssertionError("not invoked in a schema test")

    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(
        discord.Client(intents=discord.Intents(guilds=True))
    )
    return slash_command(command, run).to_dict(tree)


def test_every_registry_command_builds_a_valid_slash_command() -> None:
    for command in COMMANDS:
        payload = _payload(command)
        assert payload["name"] == command.name
        assert 1 <= len(payload["description"]) <= 100
        assert [o["name"] for o in payload["options"]] == [
            p.name for p in sorted(command.params, key=lambda p: not p.required)
        ]


def test_params_map_onto_option_types_choices_and_descriptions() -> None:
    subscribe = by_name("subscribe")
    assert subscribe is not None
    options = {o["name"]: o for o in _payload(subscribe)["options"]}
    assert options["topic"] == {
        "type": 3,
        "name": "topic",
        "description": "what to receive",
        "required": True,
        "choices": [{"name": topic, "value": topic} for topic in TOPICS],
    }
    assert (options["min"]["type"], options["min"]["required"]) == (10, False)
    assert "choices" not in options["symbol"]


def test_required_options_come_first_whatever_the_spec_order() -> None:
    async def handler(_: Any) -> Reply:
        return Reply.of("")

    command = Command("x", "y", handler, params=(Param("b", "optional"), Param("a", "needed", required=True)))
    assert [(o["name"], o["required"]) for o in _payload(command)["options"]] == [("a", True), ("b", False)]


def test_too_many_choices_fall_back_to_free_text() -> None:
    async def handler(_: Any) -> Reply:
        return Reply.of("")

    command = Command("x", "y", handler, params=(Param("p", "d", choices=tuple(f"c{i}" for i in range(30))),))
    assert "choices" not in _payload(command)["options"][0]


def test_fingerprint_ignores_what_discord_adds_and_sees_what_we_change() -> None:
    ours = [_payload(c) for c in COMMANDS]
    theirs = []
    for i, payload in enumerate(reversed(ours)):  # Discord answers in its own order
        answered = {
            **payload,
            "id": str(i),
            "application_id": "1",
            "version": "7",
            "contexts": [0, 1, 2],
            "integration_types": [0],
            "default_member_permissions": None,
            "options": [{k: v for k, v in o.items() if (k, v) != ("required", False)} for o in payload["options"]],
        }
        theirs.append(answered)
    assert command_fingerprint(theirs) == command_fingerprint(ours)
    changed = [dict(c) for c in theirs]
    changed[0]["description"] = "new wording"
    assert command_fingerprint(changed) != command_fingerprint(ours)
    assert command_fingerprint(theirs[1:]) != command_fingerprint(ours)


# --- error classification ---------------------------------------------------------------------------


@dataclass
class _Response:
    """The two attributes discord.HTTPException reads from an aiohttp response, plus headers."""

    status: int
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def _http_error(cls: type[discord.HTTPException], status: int, code: int, message: str, **headers: str) -> Any:
    return cls(_Response(status, headers=headers), {"code": code, "message": message})


@pytest.mark.parametrize(
    ("error", "outcome", "detail"),
    [
        (discord.RateLimited(45.5), RetryLater, 45.5),
        (
            _http_error(discord.HTTPException, 429, 0, "You are being rate limited.", **{"Retry-After": "7"}),
            RetryLater,
            7.0,
        ),
        (_http_error(discord.Forbidden, 403, 50013, "Missing Permissions"), PermanentFailure, True),
        (_http_error(discord.Forbidden, 403, 50001, "Missing Access"), PermanentFailure, True),
        (_http_error(discord.NotFound, 404, 10003, "Unknown Channel"), PermanentFailure, True),
        (_http_error(discord.NotFound, 404, 10008, "Unknown Message"), MessageGone, None),
        (_http_error(discord.HTTPException, 400, 50035, "Invalid Form Body"), PermanentFailure, False),
        (_http_error(discord.DiscordServerError, 503, 0, "upstream"), TransientFailure, None),
        (_http_error(discord.HTTPException, 401, 0, "401: Unauthorized"), Unauthorized, None),
        (TimeoutError(), TransientFailure, None),
    ],
)
def test_send_errors_map_onto_the_dispatcher_outcomes(
    error: Exception, outcome: type[Exception], detail: object
) -> None:
    result = classify(error)
    assert type(result) is outcome
    if isinstance(result, RetryLater):
        assert result.after_s == detail
    if isinstance(result, PermanentFailure):
        assert result.chat_gone is detail
        assert str(result) == f"Discord {error.status}/{error.code}: {error.text}"  # type: ignore[attr-defined]


def test_token_problem_names_the_setting() -> None:
    result = classify(_http_error(discord.HTTPException, 401, 0, "401: Unauthorized"))
    assert isinstance(result, Unauthorized) and result.setting == "DISCORD_BOT_TOKEN"
    assert "DISCORD_BOT_TOKEN" in str(result)


def test_a_timeout_may_have_delivered() -> None:
    result = classify(TimeoutError())
    assert isinstance(result, TransientFailure) and result.maybe_delivered
