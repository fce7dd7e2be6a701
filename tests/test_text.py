"""Overflow, written once: a long reply splits into parts within the limit with nothing lost and no markup
broken; a value that must stay one piece is clipped."""

from __future__ import annotations

import html
import re

import pytest

from bot.text import ELLIPSIS, TRUNCATED, clip, fit, split

_TAG = re.compile(r"<[^>]*>")


def esc(text: str) -> str:
    return html.escape(text, quote=False)


def visible(markup: str) -> int:
    return len(html.unescape(_TAG.sub("", markup)))


def bold(text: str) -> str:
    return f"<b>{esc(text)}</b>"


def test_short_text_is_one_part_unchanged() -> None:
    assert split(["one", "two"], 100, head="Title") == ["Title\none\ntwo"]


def test_empty_reply_is_one_empty_part() -> None:
    assert split([], 10) == [""]


def test_whole_lines_are_packed_and_none_is_lost() -> None:
    lines = [f"line {i:04d}" for i in range(5000)]
    parts = split(lines, 4096)
    assert len(parts) > 1
    assert all(len(p) <= 4096 for p in parts)
    assert "\n".join(parts).splitlines() == lines  # every line, in order, none cut


def test_html_is_measured_as_visible_text_and_never_cut_inside_an_entity() -> None:
    """Issue 10.9: 4,000 `<` after /subscribe ended in `&lt` when the rendered HTML was cut."""
    line = "/subscribe " + "<" * 4000 + " & more " + "&" * 3000
    parts = split([line], 4096, render=esc, measure=visible, head="Usage", render_head=bold)
    assert len(parts) == 2
    for part in parts:
        assert visible(part) <= 4096
        assert html.escape(html.unescape(part), quote=False) == part or part.startswith("<b>")
        assert not re.search(r"&[a-z]*$", part)  # no dangling entity
    text = html.unescape(_TAG.sub("", "\n".join(parts)))
    assert text.replace("\n", " ") == "Usage " + line


def test_a_long_line_is_cut_at_a_space_where_possible() -> None:
    words = " ".join(f"w{i:03d}" for i in range(100))  # 499 characters
    parts = split([words], 50)
    assert all(len(p) <= 50 for p in parts)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)
    assert " ".join(parts).split() == words.split()  # whole words only


def test_a_line_without_spaces_is_cut_on_characters() -> None:
    parts = split(["x" * 25], 10)
    assert parts == ["x" * 10, "x" * 10, "x" * 5]


def test_a_limit_too_small_for_any_rendering_is_an_error() -> None:
    with pytest.raises(ValueError, match="not even one character"):
        split(["abc"], 3, render=bold, measure=len)


def test_fit_keeps_leading_lines_and_says_the_rest_was_left_out() -> None:
    lines = [f"item {i}" for i in range(1000)]
    out = fit(lines, 200, render=esc, measure=visible, head="Title", render_head=bold)
    assert visible(out) <= 200
    assert out.startswith("<b>Title</b>\nitem 0\n")
    assert out.endswith("\n" + TRUNCATED)
    assert fit(["short"], 200) == "short"


def test_clip_cuts_plain_text_with_an_ellipsis() -> None:
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefg", 6) == "abcde" + ELLIPSIS
    assert len(clip("x" * 5000, 1024)) == 1024
