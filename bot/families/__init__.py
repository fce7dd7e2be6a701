"""The alert families: each brings its body (in `perpwatch.events`), its renderer and its summary line.

A family is one module here plus its body in the event model's union; importing this package registers
every family, so `family_of`, `render_event` and `render_summary` know them all.
"""

from bot.families import buybacks, calendar, cascade, liquidation, whales
from bot.families.registry import Family, family_of, register, registered, render_event, render_summary

__all__ = [
    "Family",
    "buybacks",
    "calendar",
    "cascade",
    "family_of",
    "liquidation",
    "register",
    "registered",
    "render_event",
    "render_summary",
    "whales",
]
