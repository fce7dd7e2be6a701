"""The console platform: text or jsonl, images mentioned (and saved when asked), edits as marked updates."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

from bot.platforms.console import CONSOLE_CHAT_ID, ConsolePlatform
from bot.platforms.delivery import MessageRef
from bot.render import Alert, AlertField, Image, Reply
from storage.models import Chat

CHAT = Chat(
    id=1,
    platform="console",
    platform_chat_id=CONSOLE_CHAT_ID,
    kind="private",
    title=None,
    status="active",
    gone_reason=None,
    quiet_start=None,
    quiet_end=None,
    quiet_tz=None,
)
PNG = b"\x89PNG\r\n\x1a\n chart"


def alert(headline: str = "$1.25M", **kw: object) -> Alert:
    return Alert(title="BTC long", headline=headline, fields=(AlertField("Venue", "binance"),), **kw)  # type: ignore[arg-type]


async def test_text_send_counts_ids_and_edit_prints_an_update() -> None:
    out = io.StringIO()
    console = ConsolePlatform(stream=out)
    first = await console.send(CHAT, alert(), nonce="a")
    second = await console.send(CHAT, Reply.of("ok", title="Status"), nonce="b")
    assert (first, second) == (MessageRef(("1",)), MessageRef(("2",)))
    assert await console.edit(CHAT, first, alert("$2.50M")) == first
    text = out.getvalue()
    assert "BTC long — $1.25M" in text and "Status\nok" in text
    assert "(update of message 1) BTC long — $2.50M" in text


async def test_an_image_is_mentioned_and_saved_when_a_directory_is_given(tmp_path: Path) -> None:
    out = io.StringIO()
    console = ConsolePlatform(stream=out, image_dir=tmp_path / "images")
    await console.send(CHAT, alert(image=Image(PNG, filename="buyback.png")), nonce="a")
    assert f"[image buyback.png: {len(PNG)} bytes attached, saved to" in out.getvalue()
    assert (tmp_path / "images" / "1-buyback.png").read_bytes() == PNG
    plain = io.StringIO()
    await ConsolePlatform(stream=plain).send(CHAT, Reply(lines=("x",), image=Image(PNG)), nonce="b")
    assert f"[image chart.png: {len(PNG)} bytes attached]" in plain.getvalue()


async def test_jsonl_writes_plain_decimals_never_exponents() -> None:
    """Issue 10.8: jsonl writes plain decimals, never exponent form."""
    out = io.StringIO()
    console = ConsolePlatform(fmt="jsonl", stream=out)
    data: dict[str, object] = {"usd": Decimal("1E+3"), "size": Decimal("1E-7")}
    await console.send(CHAT, alert(data=data), nonce="a")
    line = out.getvalue().strip()
    assert "E+" not in line and "E-" not in line
    record = json.loads(line)
    assert (record["usd"], record["size"], record["message"]) == ("1000", "0.0000001", "1")
