"""Known wallets: publicly identified traders' addresses, bundled with their sources (bot/data/known_wallets.toml).

`/watch JamesWynn` watches the address a public page names, and `/watchlist` shows the name beside an unlabelled
address. Every entry carries the page that names it, a short verbatim quote from that page showing the name
with the address, and the day it was read; an entry without them is refused at load, with its position and
name in the message, and tests/test_known_wallets.py loads the bundled file, so an unsourced attribution
cannot ship.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ADDRESS_PATTERN = re.compile(r"^0x[0-9a-f]{40}$")
NAME_PATTERN = re.compile(r"^[\w.\-]{1,32}$", re.ASCII)
"""What /watch and /label accept as a label (bot/commands/values.py), in ASCII, never starting with 0x."""
MAX_QUOTE = 200
RESOURCE = "data/known_wallets.toml"


class KnownWalletsError(ValueError):
    """The bundled (or given) list is malformed; the message names the entry."""


def _name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value) or value.lower().startswith("0x"):
        raise ValueError(
            f"{what} {value!r} is not a chat label: 1-32 letters, digits, '_', '-' or '.', not starting with 0x"
        )
    return value


class KnownWallet(BaseModel):
    """One publicly identified wallet and the public page that names it."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    name: str
    address: str
    venue: Literal["hyperliquid"]
    source: str = Field(min_length=1)
    quote: str = Field(min_length=1, max_length=MAX_QUOTE)
    retrieved: date
    aliases: tuple[str, ...] = ()
    note: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _name(value, "name")

    @field_validator("aliases")
    @classmethod
    def _check_aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_name(alias.strip(), "alias") for alias in value)

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        if not ADDRESS_PATTERN.fullmatch(value):
            raise ValueError(f"address {value!r} is not 0x followed by 40 lowercase hex digits")
        return value

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if not re.fullmatch(r"https://[^\s/]+\.[^\s/]+(/\S*)?", value):
            raise ValueError(f"source {value!r} is not an https:// URL of the page that names the wallet")
        return value

    @model_validator(mode="after")
    def _quote_shows_the_name_with_the_address(self) -> KnownWallet:
        quote = self.quote.lower()
        if self.address not in quote:
            raise ValueError("the quote does not contain the full address")
        if not any(n.lower() in quote for n in self.names):
            raise ValueError("the quote does not contain the name or an alias")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class KnownWallets:
    """The validated list, looked up by name or alias (any case) and by address."""

    wallets: tuple[KnownWallet, ...]
    _by_name: dict[str, KnownWallet] = field(init=False, repr=False, compare=False)
    _by_address: dict[str, KnownWallet] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, KnownWallet] = {}
        by_address: dict[str, KnownWallet] = {}
        for wallet in self.wallets:
            for name in wallet.names:
                other = by_name.get(name.lower())
                if other is not None:
                    raise KnownWalletsError(
                        f"known wallet {wallet.name!r}: name {name!r} is already used by {other.name!r}"
                    )
                by_name[name.lower()] = wallet
            other = by_address.get(wallet.address)
            if other is not None:
                raise KnownWalletsError(
                    f"known wallet {wallet.name!r}: address {wallet.address} is already {other.name!r}"
                )
            by_address[wallet.address] = wallet
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_address", by_address)

    def lookup(self, name_or_alias: str) -> KnownWallet | None:
        return self._by_name.get(name_or_alias.strip().lower())

    def label_for(self, address: str) -> str | None:
        wallet = self._by_address.get(address.strip().lower())
        return wallet.name if wallet is not None else None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.wallets)


def _entry_name(raw: object, index: int) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"#{index} ({name!r})" if isinstance(name, str) else f"#{index}"


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse(entries: Sequence[Any]) -> KnownWallets:
    """Validate raw entries (the TOML's `[[wallet]]` tables): every field, then duplicates across entries."""
    wallets = []
    for index, raw in enumerate(entries, start=1):
        try:
            wallets.append(KnownWallet.model_validate(raw))
        except ValidationError as exc:
            raise KnownWalletsError(f"known wallet {_entry_name(raw, index)}: {_problems(exc)}") from None
    return KnownWallets(tuple(wallets))


def loads(text: str) -> KnownWallets:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnownWalletsError(f"known wallets file is not TOML: {exc}") from None
    unknown = set(document) - {"wallet"}
    if unknown:
        raise KnownWalletsError(f"known wallets file has unknown tables: {', '.join(sorted(unknown))}")
    entries = document.get("wallet", [])
    if not isinstance(entries, list):
        raise KnownWalletsError("known wallets file: `wallet` must be an array of tables ([[wallet]])")
    return parse(entries)


@cache
def bundled() -> KnownWallets:
    """The list shipped in the package (read once)."""
    return loads(resources.files("bot").joinpath(RESOURCE).read_text(encoding="utf-8"))


def lookup(name_or_alias: str) -> KnownWallet | None:
    return bundled().lookup(name_or_alias)


def label_for(address: str) -> str | None:
    return bundled().label_for(address)


def names() -> Iterable[str]:
    return bundled().names
