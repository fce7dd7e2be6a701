"""What the venue parsers raise when a frame names an instrument their reference data does not hold.

A venue lists a new market before our reference data is refreshed, or a frame names something we never
subscribed to. Either way the parser cannot know the symbol, the contract value or the market's unit, and
must not guess them: it raises `UnknownInstrument`, and the stream refreshes its reference data or counts
the frame. A `LookupError`, not a `ValueError`, so it is never mistaken for a frame that could not be read.
"""

from __future__ import annotations


class UnknownInstrument(LookupError):
    """`name` (a symbol, an instId, a market id) is not in `venue`'s reference data."""

    def __init__(self, venue: str, name: str) -> None:
        super().__init__(f"{venue}: unknown instrument {name[:80]!r}; refresh the reference data")
        self.venue = venue
        self.name = name
