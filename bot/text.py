"""Text that does not fit, handled once for every platform: a long reply is split, a long value is clipped.

The splitter works on neutral lines and a platform's renderer, never on rendered markup: it packs whole
rendered lines into parts, and a line too long for one part is cut on its raw text (at a space where it can)
with each piece rendered on its own. So a part never ends inside an HTML entity or tag, or between a
Markdown escape and the character it escapes, whatever the markup.

A platform's `measure` counts what its limit counts (Telegram: visible characters once the HTML is parsed;
Discord: characters of the content). Each rendered line must be self-contained markup (tags opened and closed
on it), so the length of lines joined by newlines is the sum of their lengths plus one per newline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

Render = Callable[[str], str]
Measure = Callable[[str], int]

ELLIPSIS: Final = "…"
TRUNCATED: Final = "… (truncated)"


def _same(text: str) -> str:
    return text


def clip(text: str, limit: int) -> str:
    """Cut plain text to `limit` characters, ending in an ellipsis: one over-long value (an embed field, a
    title) must not cost the whole message. For markup, split lines instead (`split`, `fit`)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def split(
    lines: Sequence[str],
    limit: int,
    *,
    render: Render = _same,
    measure: Measure = len,
    head: str | None = None,
    render_head: Render | None = None,
) -> list[str]:
    """Rendered parts, each measuring at most `limit`, that together hold every line in order.

    `head` (a reply's title) goes first with its own renderer. An empty reply is one empty part, so a
    caller always has something to send or to attach an image to.
    """
    units: list[tuple[str, Render]] = []
    if head is not None:
        units.append((head, render_head or render))
    units += [(line, render) for line in lines]
    pieces = [piece for raw, draw in units for piece in _pieces(raw, draw, measure, limit)]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for text, length in pieces:
        if current and size + 1 + length > limit:
            parts.append("\n".join(current))
            current, size = [], 0
        size += length + (1 if current else 0)
        current.append(text)
    if current or not parts:
        parts.append("\n".join(current))
    return parts


def fit(
    lines: Sequence[str],
    limit: int,
    *,
    render: Render = _same,
    measure: Measure = len,
    head: str | None = None,
    render_head: Render | None = None,
) -> str:
    """One part that fits: the leading whole lines and a marker saying the rest was left out.

    For what must stay one message (an alert, which a later revision edits in place); a reply is split.
    The marker is drawn as it is: it holds no markup character in HTML or Markdown.
    """
    whole = split(lines, limit, render=render, measure=measure, head=head, render_head=render_head)
    if len(whole) == 1:
        return whole[0]
    marker = TRUNCATED
    room = limit - measure(marker) - 1
    first = split(lines, room, render=render, measure=measure, head=head, render_head=render_head)[0]
    return f"{first}\n{marker}" if first else marker


def _pieces(raw: str, render: Render, measure: Measure, limit: int) -> list[tuple[str, int]]:
    """One line as (rendered, length) pieces that each fit: itself when it fits, else cuts of its raw text."""
    rendered = render(raw)
    length = measure(rendered)
    if length <= limit:
        return [(rendered, length)]
    out: list[tuple[str, int]] = []
    rest = raw
    while rest:
        cut = _longest_prefix(rest, render, measure, limit)
        space = rest.rfind(" ", 0, cut + 1)
        if cut < len(rest) and space > 0:
            cut = space  # end at a word; the space itself starts nothing and is dropped
        piece = render(rest[:cut])
        out.append((piece, measure(piece)))
        rest = rest[cut:].lstrip(" ") if cut < len(rest) else ""
    return out


def _longest_prefix(raw: str, render: Render, measure: Measure, limit: int) -> int:
    """The most leading characters of `raw` whose rendering fits: a binary search, since rendering more
    text never measures less."""
    low, high = 0, len(raw)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(render(raw[:middle])) <= limit:
            low = middle
        else:
            high = middle - 1
    if low == 0:
        raise ValueError(f"not even one character fits in {limit} once rendered")
    return low
