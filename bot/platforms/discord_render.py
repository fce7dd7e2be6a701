"""Discord's drawing of the neutral alert and reply: an embed per alert, message content per reply part, and
the limits both must keep. No client, no I/O: the adapter (`discord.py` here) only posts what this draws.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Final

import discord
from discord.utils import escape_markdown

from bot.render import Alert, Image, Reply, Tone
from bot.text import clip, fit, split

# Embed and message limits; Discord answers 400/50035 past any of them.
# https://discord.com/developers/docs/resources/message#embed-object-embed-limits
MAX_CONTENT: Final = 2000
MAX_TITLE: Final = 256
MAX_DESCRIPTION: Final = 4096
MAX_FIELDS: Final = 25
MAX_FIELD_NAME: Final = 256
MAX_FIELD_VALUE: Final = 1024
MAX_FOOTER: Final = 2048
MAX_EMBED_TOTAL: Final = 6000
MIN_DESCRIPTION: Final = 64
"""The least of the description kept when the 6000 total forces it shorter: the headline must stay."""

TONE_COLOURS: Final[Mapping[Tone, discord.Colour]] = {
    "long": discord.Colour.brand_red(),  # longs liquidated: price fell
    "short": discord.Colour.brand_green(),  # shorts liquidated: price rose
    "neutral": discord.Colour.blurple(),
}


def _bold(text: str) -> str:
    return f"**{escape_markdown(text)}**"


def _item(text: str) -> str:
    return f"• {escape_markdown(text)}"


def _description(alert: Alert, limit: int) -> str:
    """The headline in bold, then the merged items: whole lines, cut with a marker when there are too many."""
    return fit(alert.items, limit, render=_item, head=alert.headline, render_head=_bold)


def alert_embed(alert: Alert) -> discord.Embed:
    """One embed: colour by side, the headline as the description, each field inline, within every limit.

    With an image, the embed shows the attached file (`attachment://<filename>`), so picture and text stay
    one message that a later revision can edit.
    """
    embed = discord.Embed(
        title=clip(alert.title, MAX_TITLE),
        description=_description(alert, MAX_DESCRIPTION),
        colour=TONE_COLOURS[alert.tone],
        url=alert.url,
    )
    fields = list(alert.fields)
    shown = fields if len(fields) <= MAX_FIELDS else fields[: MAX_FIELDS - 1]
    for field in shown:
        # Clip before bolding so the closing ** survives.
        value = clip(escape_markdown(field.value) or "-", MAX_FIELD_VALUE - 4)
        embed.add_field(
            name=clip(field.name or "-", MAX_FIELD_NAME),
            value=f"**{value}**" if field.emphasis else value,
            inline=True,
        )
    if len(shown) < len(fields):
        embed.add_field(name="More", value=f"{len(fields) - len(shown)} more fields not shown", inline=False)
    if alert.url and len(embed.fields) < MAX_FIELDS:
        label = escape_markdown(clip(alert.link_label, 200)).replace("]", "")
        embed.add_field(name="Link", value=clip(f"[{label}]({alert.url})", MAX_FIELD_VALUE), inline=False)
    if alert.footer:
        embed.set_footer(text=clip(alert.footer, MAX_FOOTER))
    if alert.image is not None:
        embed.set_image(url=f"attachment://{alert.image.filename}")
    _fit_total(embed, alert)
    return embed


def _fit_total(embed: discord.Embed, alert: Alert) -> None:
    """The 6000-character cap counts title, description, fields and footer together: shorten the description
    (it holds the merged items, the most elastic part) and then drop trailing fields."""
    overflow = len(embed) - MAX_EMBED_TOTAL
    if overflow > 0 and embed.description:
        embed.description = _description(alert, max(len(embed.description) - overflow, MIN_DESCRIPTION))
    while len(embed) > MAX_EMBED_TOTAL and embed.fields:
        embed.remove_field(-1)


def reply_parts(reply: Reply) -> list[str]:
    """A reply as message contents within Discord's limit: a bold title, then whole lines; split, never cut.

    An image's caption is the content only when the reply has no text of its own: on Discord the message
    text always shows beside the picture.
    """
    lines = reply.lines
    if not lines and reply.title is None and reply.image is not None and reply.image.caption:
        lines = (reply.image.caption,)
    return split(lines, MAX_CONTENT, render=escape_markdown, head=reply.title, render_head=_bold)


def attachment(image: Image) -> discord.File:
    """A fresh file for each request: discord.py reads and closes it while sending, and a retry needs it
    again."""
    return discord.File(io.BytesIO(image.png), filename=image.filename)
