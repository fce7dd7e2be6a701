"""Every buyback source kind by name: what the poller steps and what `/buyback add` checks parameters with.

A programme is data (a kind and its parameters), so the kind named in a chat or a bundled file is looked up
here; a kind missing from this table could be stored but never read, so `validate` refuses it up front.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from perpwatch.buybacks import KINDS, BuybackSource, ProgrammeKind
from watchers import buyback_aster, buyback_defillama, buyback_evm, buyback_hyperliquid, buyback_lighter

SOURCES: Mapping[ProgrammeKind, BuybackSource] = MappingProxyType(
    {
        source.kind: source
        for source in (
            buyback_hyperliquid.SOURCE,
            buyback_aster.SOURCE,
            buyback_evm.SOURCE,
            buyback_lighter.SOURCE,
            buyback_defillama.SOURCE,
        )
    }
)

DEFAULT_URLS: Mapping[str, str] = MappingProxyType(
    {
        **buyback_hyperliquid.DEFAULT_URLS,
        **buyback_aster.DEFAULT_URLS,
        **buyback_evm.DEFAULT_URLS,
        **buyback_lighter.DEFAULT_URLS,
        **buyback_defillama.DEFAULT_URLS,
    }
)
"""Every endpoint setting the sources read, with its default: one place for the settings to take them from."""


def validate(kind: object, params: Mapping[str, Any]) -> dict[str, Any]:
    """A programme's parameters normalised by its kind; ValueError naming the kinds when `kind` is none."""
    source = next((s for k, s in SOURCES.items() if k == kind), None)
    if source is None:
        raise ValueError(f"unknown kind {str(kind)[:60]!r}; the kinds are {', '.join(KINDS)}")
    return source.validate(params)
