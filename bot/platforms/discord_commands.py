"""Discord slash commands built from the shared command specs, their one error path, and their sync.

One slash command per entry of the shared COMMANDS registry; every command runs through the shared
`run_command`, which is the one access gate on every platform, so there is no cog `interaction_check` and no
`default_member_permissions` on the synced commands: every member sees every command, and one who may not
use it is told why instead of finding it missing, and a server's own per-command overrides can never
disagree with the rule the bot enforces.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import discord
from discord import app_commands

from bot.commands import Command, Param
from bot.text import clip

log = logging.getLogger(__name__)

# https://discord.com/developers/docs/interactions/application-commands#application-command-object
MAX_COMMAND_DESCRIPTION: Final = 100
MAX_CHOICES: Final = 25

INTERNAL_ERROR: Final = "Something went wrong on our side; nothing was changed. The operator log has details."
STALE_COMMAND: Final = (
    "Discord sent a command in a shape this bot no longer has; its command list is being updated. "
    "Try again in a minute."
)


def option_text(value: object) -> str:
    """What the Telegram parser would hand the handler: text as typed, numbers without `.0` or exponents."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    return str(value)


class ParamOption(app_commands.Transformer):
    """One `Param` as a slash-command option, through discord.py's public Transformer API.

    The option's type, choices and description come from the spec; `transform` turns whatever Discord sent
    back into the text the shared handlers parse, so validation and its messages stay in `bot.commands`.
    """

    def __init__(self, param: Param) -> None:
        self.param = param

    @property
    def type(self) -> discord.AppCommandOptionType:
        if self.param.kind == "number":
            return discord.AppCommandOptionType.number
        return discord.AppCommandOptionType.string

    @property
    def choices(self) -> list[app_commands.Choice[int | float | str]] | None:
        if not self.param.choices or len(self.param.choices) > MAX_CHOICES:
            return None  # the handler still checks the value and names the allowed ones
        return [app_commands.Choice(name=c, value=c) for c in self.param.choices]

    async def transform(self, interaction: discord.Interaction, value: Any, /) -> str:
        return option_text(value)


CommandRunner = Callable[[Command, discord.Interaction, dict[str, str]], Awaitable[None]]


def slash_command(command: Command, run: CommandRunner) -> app_commands.Command[Any, ..., None]:
    """Build the app command for one registry entry.

    discord.py reads options from the callback's signature, so the callback takes `**options` and carries a
    generated `__signature__` whose parameters are annotated with `ParamOption` transformers; `describe`
    attaches the descriptions. No private discord.py attribute is touched.
    """

    async def callback(interaction: discord.Interaction, **options: str | None) -> None:
        await run(command, interaction, {name: value for name, value in options.items() if value is not None})

    parameters = [
        inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)
    ]
    for param in sorted(command.params, key=lambda p: not p.required):  # Discord lists required ones first
        parameters.append(
            inspect.Parameter(
                param.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=ParamOption(param),
                default=inspect.Parameter.empty if param.required else None,
            )
        )
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__qualname__ = callback.__name__ = f"slash_{command.name}"
    descriptions = {p.name: clip(p.description or p.name, MAX_COMMAND_DESCRIPTION) for p in command.params}
    described = app_commands.describe(**descriptions)(callback)
    return app_commands.Command(
        name=command.name,
        description=clip(command.summary, MAX_COMMAND_DESCRIPTION),
        callback=described,
    )


def _canonical_option(option: Mapping[str, Any]) -> dict[str, Any]:
    canon: dict[str, Any] = {
        "type": option.get("type"),
        "name": option.get("name"),
        "description": option.get("description") or "",
        "required": bool(option.get("required", False)),
        "autocomplete": bool(option.get("autocomplete", False)),
        "choices": [{"name": c["name"], "value": c["value"]} for c in option.get("choices") or []],
        "channel_types": sorted(option.get("channel_types") or []),
        "options": [_canonical_option(o) for o in option.get("options") or []],
    }
    for key in ("min_value", "max_value", "min_length", "max_length"):
        if option.get(key) is not None:
            canon[key] = float(option[key])
    return canon


def command_fingerprint(commands: Sequence[Mapping[str, Any]]) -> list[str]:
    """The parts of each command that we set, normalised so our payload and Discord's answer compare equal.

    Discord adds ids and versions, sends the permission bitfield as a string, omits `required: false`, and
    fills `contexts`/`integration_types` with its defaults; none of those is a change we made.
    """
    out = []
    for command in commands:
        permissions = command.get("default_member_permissions")
        canon = {
            "name": command.get("name"),
            "type": command.get("type") or 1,
            "description": command.get("description") or "",
            "nsfw": bool(command.get("nsfw", False)),
            "default_member_permissions": None if permissions is None else str(permissions),
            "options": [_canonical_option(o) for o in command.get("options") or []],
        }
        out.append(json.dumps(canon, sort_keys=True))
    return sorted(out)


async def sync_commands(client: discord.Client, tree: app_commands.CommandTree[Any]) -> None:
    """PUT the command list only when it differs from what Discord has: a bulk overwrite on every start
    counts against a daily create limit and makes clients reload the bot's commands."""
    app_id = client.application_id
    if app_id is None:  # pragma: no cover - login() always sets it
        return
    wanted = [c.to_dict(tree) for c in tree.get_commands()]
    try:
        current = await client.http.get_global_commands(app_id)
        if command_fingerprint(current) == command_fingerprint(wanted):
            log.info("discord commands unchanged count=%d", len(wanted))
            return
        await tree.sync()
    except discord.HTTPException as exc:
        # Alerts do not depend on the command list; keep delivering and say what failed.
        log.error("discord command sync failed status=%s code=%s error=%s", exc.status, exc.code, exc.text)
        return
    log.info("discord commands synced count=%d", len(wanted))


class CommandErrors(app_commands.CommandTree[Any]):
    """The one app-command error path: whatever escaped the handler becomes an ephemeral reply and a log."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError, /) -> None:
        if isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch):
            log.warning("stale discord command name=%s error=%s", getattr(interaction.command, "name", "?"), error)
            text = STALE_COMMAND
        else:
            name = interaction.command.name if interaction.command else "?"
            log.error("discord command failed command=%s", name, exc_info=error)
            text = INTERNAL_ERROR
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not report a command error error=%s", exc)
