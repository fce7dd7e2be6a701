"""What users type never breaks a command: every parser answers a bad value with a CommandError (the runner
turns it into the reason and the usage line), and nothing else escapes, whatever the text.

The named cases come from the black-box run (issue 10, point 9). The fuzzing drives the parsers directly and
then whole handlers through `run_command` on a real store, as a chat's text would reach them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.commands import COMMANDS, CommandError, Context, by_name, parse_text_args, run_command, values
from bot.commands.settings_cmds import quiet_window
from bot.commands.subscriptions import threshold_amount, unsubscribe_target
from bot.commands.watchlist import unwatch_target
from bot.pipeline import Pipeline
from bot.render import Reply
from bot.settings import Settings
from bot.supervisor import Supervisor
from perpwatch.clock import SYSTEM_CLOCK, Clock
from perpwatch.events import Topic
from storage import Store
from storage.models import Chat

if TYPE_CHECKING:
    from bot.services import Services

ISSUE_CASES = [
    "/unsubscribe #99999999999999999999",
    "/unsubscribe ²",
    "/subscribe liquidation min=1e1000000",
    "/threshold liquidation 1e999999999",
]
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
OOPS = "Something went wrong"

# --- strategies: anything at all, and the shapes that get past a careless parser ----------------------------
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)  # surrogates and controls too
long_text = st.text(min_size=200, max_size=5000)
other_digits = st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=12)
numberish = st.from_regex(
    r"\A[#$+-]?[0-9_,]{0,30}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,12})?[kmbKMB]?\Z", fullmatch=True
) | st.sampled_from(["nan", "NaN", "inf", "-Infinity", "sNaN", "1e400", "1E-400", "0e999999999", "١٢٣", "٢٣:٠٠-٠٧:٠٠"])
hostile = any_text | long_text | other_digits | numberish


@dataclass
class _Services:
    """What handlers reach through `ctx.services`, built from the real parts (bot.services also pulls in the
    dispatcher, which is being rewritten)."""

    store: Store
    settings: Settings
    supervisor: Supervisor
    clock: Clock = SYSTEM_CLOCK


def _context(services: _Services, chat: Chat, args: dict[str, str]) -> Context:
    async def not_admin() -> bool:
        return False

    return Context(
        platform="telegram",
        chat=chat,
        user_id="42",
        args=args,
        is_chat_admin=not_admin,
        services=cast("Services", services),
    )


@pytest.fixture
def handlers() -> Iterator[Callable[[str, list[str]], Reply]]:
    """Run one command's words through `parse_text_args` and `run_command` on a real store, in a loop of its own so
    hypothesis can call it synchronously."""
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(Store(":memory:").open())
    services = _Services(store, Settings(_env_file=None), Supervisor([], Pipeline(store.outbox), store))
    chat = loop.run_until_complete(store.chats.upsert("telegram", "1", kind="private", title="t"))

    def run(name: str, tokens: list[str]) -> Reply:
        command = by_name(name)
        assert command is not None
        try:
            args = parse_text_args(command, tokens)
        except CommandError as exc:
            return Reply.of(str(exc), ok=False)
        return loop.run_until_complete(run_command(command, _context(services, chat, args)))

    try:
        yield run
    finally:
        loop.run_until_complete(store.close())
        loop.close()


# --- the cases the black-box run found ---------------------------------------------------------------------
@pytest.mark.parametrize("line", ISSUE_CASES)
def test_the_reported_inputs_get_a_usage_line(handlers: Callable[[str, list[str]], Reply], line: str) -> None:
    name, *tokens = line.removeprefix("/").split()
    reply = handlers(name, tokens)
    assert not reply.ok
    assert OOPS not in reply.plain()
    assert f"Usage: /{line.split()[0][1:]}" in reply.plain()


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (unsubscribe_target, "#99999999999999999999"),
        (unsubscribe_target, "²"),
        (unsubscribe_target, "#²"),
        (unsubscribe_target, "١٢"),
        (unsubscribe_target, f"#{2**63}"),
        (values.usd_amount, "1e1000000"),
        (values.usd_amount, "1E-400"),
        (values.usd_amount, "NaN"),
        (values.usd_amount, "١٢٣"),
        (values.usd_amount, "-5"),
        (threshold_amount, "1e999999999"),
        (quiet_window, "٢٣:٠٠-٠٧:٠٠"),
        (unwatch_target, "\ud800"),
        (unwatch_target, "a\x00b"),
    ],
)
def test_refused_with_a_command_error(parse: Callable[[str], object], text: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(text)
    assert caught.value.show_usage
    assert not _CONTROL.search(str(caught.value))


def test_the_largest_sqlite_id_is_still_an_id() -> None:
    assert unsubscribe_target(f"#{2**63 - 1}") == 2**63 - 1
    assert unsubscribe_target("12") == 12
    assert unsubscribe_target(" ALL ") == "all"
    assert unsubscribe_target("Liquidation") is Topic.LIQUIDATION


@pytest.mark.parametrize(
    ("text", "amount"),
    [("250000", "250000"), ("250k", "250000"), ("$1.5M", "1500000"), ("1,000,000", "1000000"), (".5", "0.5")],
)
def test_plain_amounts_still_parse(text: str, amount: str) -> None:
    assert values.usd_amount(text) == Decimal(amount)
    assert str(values.usd_amount(text)) == amount  # stored as typed, never in exponent form


def test_a_refusal_quotes_little_of_a_long_paste() -> None:
    with pytest.raises(CommandError) as caught:
        values.topic("<" * 4000)
    assert len(str(caught.value)) < 200


# --- fuzzing -----------------------------------------------------------------------------------------------
PARSERS: dict[str, Callable[[str], object]] = {
    "topic": values.topic,
    "venue": values.venue,
    "symbol": values.symbol,
    "usd_amount": values.usd_amount,
    "address": values.address,
    "label": values.label,
    "subscription_id": values.subscription_id,
    "unsubscribe_target": unsubscribe_target,
    "threshold_amount": threshold_amount,
    "unwatch_target": unwatch_target,
    "quiet_window": quiet_window,
    "quiet_zone": lambda zone: quiet_window("23:00-07:00", zone),
}


def _check(parsed: object) -> None:
    """What a parser lets through is something the store can hold."""
    if isinstance(parsed, Decimal):
        assert parsed.is_finite() and 0 <= parsed <= values.MAX_USD
        assert "E" not in str(parsed)
    if isinstance(parsed, int):
        assert 0 <= parsed <= values.MAX_ID
    if isinstance(parsed, str):
        parsed.encode("utf-8")  # a lone surrogate cannot be bound as SQL text
        assert not _CONTROL.search(parsed)


@pytest.mark.parametrize("name", PARSERS)
@settings(max_examples=300, deadline=None)
@given(text=hostile)
@example(text="#99999999999999999999")
@example(text="²")
@example(text="1e1000000")
@example(text="1e999999999")
@example(text="000\x1f\x08" + "\U00011d99" * 40)  # each shown escaped as ten characters
def test_no_text_escapes_a_parser(name: str, text: str) -> None:
    try:
        parsed = PARSERS[name](text)
    except CommandError as exc:
        assert not _CONTROL.search(str(exc)), str(exc)
        assert len(str(exc)) < 300
    else:
        _check(parsed)


_WITH_ARGS = [c.name for c in COMMANDS if c.params and c.name not in ("pause", "resume")]  # operators only
token = hostile | st.builds(
    lambda key, value: f"{key}={value}", st.sampled_from(["min", "venue", "symbol"]), numberish | any_text
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(_WITH_ARGS), tokens=st.lists(token, max_size=4))
@example(name="unsubscribe", tokens=["#99999999999999999999"])
@example(name="unwatch", tokens=["\ud800"])
@example(name="quiet", tokens=["23:00-07:00", "x" * 5000])
def test_no_chat_text_breaks_a_handler(
    handlers: Callable[[str, list[str]], Reply], name: str, tokens: list[str]
) -> None:
    reply = handlers(name, tokens)
    assert OOPS not in reply.plain(), reply.plain()


# --- Solana addresses (Pacifica) -----------------------------------------------------------------------------
SOLANA = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"


def test_a_solana_address_is_kept_as_typed_and_an_evm_one_lower_cased() -> None:
    assert values.address(f"  {SOLANA} ") == SOLANA  # base58 is case-sensitive
    assert values.address("0x" + "AB" * 20) == "0x" + "ab" * 20
    assert values.looks_like_address(SOLANA) and values.looks_like_address("0x12")
    assert unwatch_target(SOLANA) == SOLANA


@pytest.mark.parametrize(
    "text",
    [
        "ab" * 20,  # an EVM address without its 0x: base58 characters, but it decodes short of 32 bytes
        SOLANA[:-1] + "0",  # 0 is not base58
        SOLANA[:-1] + "l",  # nor is l
        "z" * 44,  # decodes past 32 bytes
        SOLANA[:31],
    ],
)
def test_what_is_not_a_solana_address_is_refused(text: str) -> None:
    with pytest.raises(CommandError, match="not a wallet address"):
        values.address(text)


def test_a_label_cannot_be_a_solana_address() -> None:
    one_and_32 = "1" * 32  # the system program's address, 32 characters: a label's length too
    with pytest.raises(CommandError, match="not a Solana address"):
        values.label(one_and_32)
    assert values.label("whale_2") == "whale_2"
