"""A chat's live lookup on loopback: a rate limit pauses the host and says so, a venue away says so, another
status is left to the caller; nothing raises past the command as anything but its own wording."""

from __future__ import annotations

import pytest

from perpwatch.accounts import AccountUnavailable
from perpwatch.clock import SYSTEM_CLOCK, FrozenClock
from tests.fakes.rest import FakeRest
from watchers.lookup import fetch_now
from watchers.poller import HostBudget, HttpStatusError, Request


async def test_a_lookup_reads_the_body_or_words_every_failure_for_the_chat() -> None:
    async with FakeRest(SYSTEM_CLOCK) as rest:
        rest.serve("/account", {"equity": 1.5})
        budget = HostBudget("venue", 60, clock=FrozenClock())
        request = Request(rest.url("/account"))
        assert await fetch_now(None, budget, request, "Venue") == {"equity": 1.5}
        rest.limited.append("30")
        with pytest.raises(AccountUnavailable, match="Venue is limiting requests now"):
            await fetch_now(None, budget, request, "Venue")
        assert budget.paused_for_s == 30  # the venue's Retry-After: the pollers of this host wait as long
        budget = HostBudget("venue", 60)
        with pytest.raises(HttpStatusError) as missing:
            await fetch_now(None, budget, Request(rest.url("/nowhere")), "Venue")
        assert missing.value.status == 404
        url = rest.url("/account")
    with pytest.raises(AccountUnavailable, match="Venue could not be reached"):
        await fetch_now(None, HostBudget("venue", 60), Request(url), "Venue")
