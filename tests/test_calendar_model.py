"""The calendar model and its data file: precision never overstated, tokens never keyed by ticker, the
bundled file's seed lines, and bad lines rejected with the line that is wrong while the rest loads."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.calendar_file import bundled_path, load_file, load_text
from perpwatch.calendar import (
    CalendarEntry,
    EventType,
    Precision,
    Status,
    countdown,
    describe_when,
    leads_for,
    parse_when,
)

NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


def _entry(**over: object) -> CalendarEntry:
    values: dict[str, object] = {
        "id": "x",
        "project": "Hyperliquid",
        "token": "HYPE",
        "coingecko_id": "hyperliquid",
        "event_type": "unlock",
        "starts_at": datetime(2026, 12, 6, tzinfo=UTC),
        "precision": "day",
        "status": "announced",
        "figure": "announced",
        "source_url": "https://example.org/a",
        "retrieved_at": date(2026, 11, 24),
    }
    values.update(over)
    return CalendarEntry.model_validate(values)


def test_dates_parse_at_their_precision_and_a_coarser_one_may_be_asked_for() -> None:
    assert parse_when("2026-12-06T14:00") == (datetime(2026, 12, 6, 14, tzinfo=UTC), Precision.EXACT)
    assert parse_when("2026-12-06") == (datetime(2026, 12, 6, tzinfo=UTC), Precision.DAY)
    assert parse_when("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), Precision.MONTH)
    assert parse_when("2027-Q1") == (datetime(2027, 1, 1, tzinfo=UTC), Precision.QUARTER)
    assert parse_when("2026-11-20", "quarter") == (datetime(2026, 10, 1, tzinfo=UTC), Precision.QUARTER)
    with pytest.raises(ValueError, match="cannot be exact"):
        parse_when("2026-12", "exact")
    with pytest.raises(ValueError, match="is not a date"):
        parse_when("next tuesday")


def test_a_countdown_is_never_finer_than_the_date_is_known() -> None:
    assert countdown(datetime(2026, 12, 3, 19, 30, tzinfo=UTC), Precision.EXACT, NOW) == "in 1d 1h"
    assert countdown(datetime(2026, 12, 2, 18, 45, tzinfo=UTC), Precision.EXACT, NOW) == "in 45m"
    assert countdown(datetime(2026, 12, 6, tzinfo=UTC), Precision.DAY, NOW) == "in 4 days"
    quarter = describe_when(datetime(2027, 1, 1, tzinfo=UTC), Precision.QUARTER, NOW)
    assert quarter == "sometime in Q1 2027, window opens in 30 days"
    assert "h" not in quarter.split(",")[1] and "m " not in quarter
    assert describe_when(datetime(2026, 12, 1, tzinfo=UTC), Precision.MONTH, NOW) == (
        "sometime in December 2026, window open now"
    )


def test_reminders_shorter_than_the_precision_are_not_offered() -> None:
    assert leads_for(Precision.EXACT) == ("7d", "3d", "24h", "6h", "1h")
    assert leads_for(Precision.DAY) == ("7d", "3d", "24h")
    assert leads_for(Precision.QUARTER) == ("7d",)


def test_a_token_is_keyed_by_coingecko_id_or_contract_never_by_ticker_alone() -> None:
    assert _entry().token_key == "coingecko:hyperliquid"
    edge = _entry(coingecko_id=None, token="EDGE", contracts=("Ethereum:0xB0076DE78DC50581770BBA1D211DDC0AD4F2A241",))
    assert edge.token_key == "ethereum:0xb0076de78dc50581770bba1d211ddc0ad4f2a241"
    with pytest.raises(ValidationError, match="a ticker alone is no key"):
        _entry(coingecko_id=None, contracts=())
    rumoured = _entry(coingecko_id=None, event_type="tge", project="Variational", status="rumoured")
    assert rumoured.token_key == "project:variational"
    with pytest.raises(ValidationError, match="not the start of its day"):
        _entry(starts_at=datetime(2026, 12, 6, 5, tzinfo=UTC))


def test_the_bundled_calendar_loads_whole_with_its_seed_lines_and_sources() -> None:
    report = load_file(bundled_path())
    assert report.rejected == []
    by_id = {s.first.id: s for s in report.series}
    team, model = by_id["hype-team-distribution"], by_id["hype-core-contributors-model"]
    assert team.repeat == "monthly" and team.first.starts_at.day == 6 and team.first.figure.value == "announced"
    assert model.first.figure.value == "model" and model.first.amount_tokens == Decimal("9920000")
    assert team.first.amount_tokens is None  # no source gives later months' amounts
    assert by_id["lit-insider-vesting"].first.starts_at == datetime(2026, 12, 29, tzinfo=UTC)
    assert by_id["aster-team-vesting"].first.coingecko_id == "aster-2"
    assert by_id["aster-staking-epoch"].repeat == "weekly"
    assert by_id["edge-airdrop-claim"].first.token_key.startswith("ethereum:0xb0076de7")
    assert by_id["maru-tge"].first.status is Status.RUMOURED
    assert by_id["variational-tge"].first.status is Status.RUMOURED
    assert by_id["variational-tge"].first.precision is Precision.QUARTER
    snapshot = by_id["pacifica-points-snapshot"].first
    assert (
        snapshot.event_type is EventType.AIRDROP_SNAPSHOT
        and snapshot.starts_at.strftime("%A %H:%M") == "Thursday 00:00"
    )
    for series in report.series:
        assert series.first.source_url.startswith("https://") and series.first.retrieved_at == date(2026, 11, 24)
    ids = [e.id for e in report.entries(NOW)]
    assert "hype-team-distribution@2026-12-06" in ids and "hype-team-distribution@2027-01-06" in ids
    assert "pacifica-points-snapshot@2026-12-03" in ids


GOOD = """# a comment
[[event]]
id = "good-one"
project = "Lighter"
coingecko_id = "lighter"
type = "unlock"
start = "2026-12-29"
amount = "13900000"
status = "announced"
figure = "model"
source = "https://example.org/lit"
retrieved = 2026-11-24
"""


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("amount = 13.9\n", "a TOML float has lost digits"),
        ('type = "unlokc"\n', "type: Input should be"),
        ('oops = "x"\n', "unknown field 'oops'"),
        ('start = "2026-13-40"\n', "is not a date"),
        ('start = "2026-12-29\n', "not valid TOML"),
    ],
)
def test_a_bad_line_is_rejected_with_the_file_the_line_and_what_is_wrong_and_the_rest_loads(
    bad: str, reason: str
) -> None:
    text = GOOD + '\n[[event]]\nid = "bad-one"\nproject = "X"\ncoingecko_id = "x"\n'
    text += "" if bad.startswith("type") else 'type = "unlock"\n'
    text += "" if bad.startswith("start") else 'start = "2026-12-01"\n'
    text += bad + 'status = "announced"\nfigure = "model"\nsource = "https://example.org/x"\nretrieved = 2026-11-24\n'
    text += GOOD.replace("good-one", "good-two").split("\n", 1)[1]
    report = load_text(text, "calendar.toml")
    assert [s.first.id for s in report.series] == ["good-one", "good-two"]
    [rejected] = report.rejected
    assert rejected.file == "calendar.toml"
    bad_line = text.splitlines().index(bad.strip()) + 1
    assert rejected.line == bad_line, (rejected, bad_line)
    assert reason in rejected.reason


def test_a_line_without_a_source_or_keyed_by_ticker_alone_is_refused(tmp_path: Path) -> None:
    no_source = GOOD.replace('source = "https://example.org/lit"\n', "")
    [rejected] = load_text(no_source, "c.toml").rejected
    assert rejected.line == 2 and "missing source" in rejected.reason
    ticker = GOOD.replace('coingecko_id = "lighter"\n', 'token = "LIT"\n')
    [rejected] = load_text(ticker, "c.toml").rejected
    assert "a ticker alone is no key" in rejected.reason
    twice = GOOD + GOOD.split("\n", 1)[1]
    report = load_text(twice, "c.toml")
    assert len(report.series) == 1 and "already used on line 2" in report.rejected[0].reason
    path = tmp_path / "mine.toml"
    path.write_text(GOOD.replace('amount = "13900000"', "amount = 1.5"), encoding="utf-8")
    assert str(load_file(path).rejected[0]).startswith("mine.toml:8: amount must be")


def test_a_monthly_line_on_the_29th_falls_on_the_last_day_of_february() -> None:
    text = GOOD.replace('start = "2026-12-29"', 'start = "2026-12-29"\nrepeat = "monthly"')
    [series] = load_text(text).series
    starts = [e.starts_at.date() for e in series.occurrences(NOW)]
    assert starts[:3] == [date(2026, 12, 29), date(2027, 1, 29), date(2027, 2, 28)]
