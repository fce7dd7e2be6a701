"""Settings from the environment and `.env`.

Setting names are a contract: operators script against them, so a rename is a breaking change. Every
external endpoint is a setting whose default is the real URL, which is also how tests aim the real
clients at loopback fakes.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storage.engine import mask_url, parse_database_url
from watchers import (
    bybit,
    defillama_emissions,
    hyperliquid,
    lighter,
    lighter_accounts,
    okx,
    pacifica,
    pacifica_accounts,
    polymarket,
    prices,
)
from watchers.buyback_sources import DEFAULT_URLS as BUYBACK_URLS
from watchers.registry import URL_SETTINGS, WATCHER_NAMES

KNOWN_WATCHERS: tuple[str, ...] = WATCHER_NAMES
"""Watcher names `PERPWATCH_WATCHERS` accepts: one per entry of `watchers.registry`."""

CALENDAR_SOURCES: tuple[str, ...] = (defillama_emissions.NAME, polymarket.NAME)
"""Calendar sources `PERPWATCH_CALENDAR_SOURCES` accepts (run beside the watchers; see bot/app.py)."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` (an IPv6 host in brackets) as the HTTP listener binds it; refused here, at start, rather
    than as a bind error after the bot has half started."""
    expected = "expected host:port like 127.0.0.1:9108 ([::1]:9108 for IPv6)"
    host, sep, port = value.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536 or any(c in host for c in "/ []"):
        raise ValueError(expected)
    return host, int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PERPWATCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
        env_ignore_empty=True,  # `TELEGRAM_BOT_TOKEN=` in .env means "not set", not an empty token
    )

    # --- chat platforms ---------------------------------------------------------------------------
    telegram_bot_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("TELEGRAM_BOT_TOKEN"))
    telegram_api_url: str = "https://api.telegram.org"
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("DISCORD_BOT_TOKEN"))
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg/"

    # --- storage ----------------------------------------------------------------------------------
    database_url: str = "sqlite:///data/perpwatch.db"
    retention_days: int = Field(default=30, ge=1)

    # --- watchers ---------------------------------------------------------------------------------
    # Each entry of `watchers.registry` names the fields below it reads; its URL fields are validated here.
    watchers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(KNOWN_WATCHERS))
    binance_ws_url: str = "wss://fstream.binance.com/market/ws/!forceOrder@arr"
    aster_ws_url: str = "wss://fstream.asterdex.com/ws/!forceOrder@arr"
    bybit_ws_url: str = bybit.WS_URL
    bybit_rest_url: str = bybit.REST_URL
    okx_ws_url: str = okx.WS_URL
    okx_rest_url: str = okx.REST_URL
    lighter_ws_url: str = lighter.WS_URL
    lighter_rest_url: str = lighter.REST_URL
    pacifica_ws_url: str = pacifica.WS_URL
    pacifica_rest_url: str = pacifica.REST_URL
    hyperliquid_ws_url: str = hyperliquid.WS_URL
    hyperliquid_info_url: str = hyperliquid.REST_URL
    hyperliquid_node_fills_dir: Path | None = None
    hyperliquid_node_poll_s: float = Field(default=1.0, gt=0, le=60)
    # --- whales (watchers/hyperliquid_whales.py) --------------------------------------------------------
    # Trades by any address at or above this are `whale` alerts; the watcher's share of Hyperliquid's 1,200
    # weight a minute per IP; how often a wallet is reconciled at most, and one near liquidation.
    whale_trade_min_usd: Decimal = Field(default=Decimal(1_000_000), gt=0)
    whale_weight_per_min: int = Field(default=600, ge=20, le=1000)
    whale_poll_s: float = Field(default=60.0, ge=5, le=3600)
    whale_near_poll_s: float = Field(default=10.0, ge=2, le=600)
    # --- watched wallets on Lighter and Pacifica (watchers/account_poller.py) ---------------------------
    # The account endpoints; each watcher's share of its host's requests a minute (Lighter allows 60 per IP,
    # Pacifica's budget here is 20); how often an account is polled at most, one near liquidation, and how
    # often a 0x address Lighter listed no account for is asked again.
    lighter_account_url: str = lighter_accounts.ACCOUNT_URL
    pacifica_positions_url: str = pacifica_accounts.POSITIONS_URL
    lighter_accounts_per_min: int = Field(default=20, ge=1, le=lighter_accounts.REQUESTS_PER_MIN)
    pacifica_accounts_per_min: int = Field(default=10, ge=1, le=pacifica_accounts.REQUESTS_PER_MIN)
    venue_accounts_poll_s: float = Field(default=60.0, ge=5, le=3600)
    venue_accounts_near_poll_s: float = Field(default=15.0, ge=2, le=600)
    venue_accounts_absent_recheck_s: float = Field(default=21600.0, ge=60, le=7 * 86400)
    # --- buybacks (watchers/buybacks.py, watchers/buyback_*.py) -------------------------------------------
    # Each programme's source is polled this often (DefiLlama's daily figure at most hourly); the programme
    # list is read again this often, so an operator's /buybacks add is followed without a restart. The
    # endpoints of the sources, each the real public one by default (EVM programmes name their chain's).
    buyback_poll_s: float = Field(default=300.0, ge=30, le=86400)
    buyback_refresh_s: float = Field(default=60.0, ge=5, le=3600)
    # Further Aster Chain wallets whose ASTER buys count as buybacks (each followed as its own programme,
    # aster-<first 8 hex digits>, read like the bundled one): comma-separated 0x addresses.
    aster_buyback_wallets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # BSC's documented public endpoint refuses eth_getLogs: a BSC programme needs a provider that serves logs.
    aster_chain_rpc_url: str = BUYBACK_URLS["aster_chain_rpc_url"]
    defillama_api_url: str = BUYBACK_URLS["defillama_api_url"]
    lighter_explorer_url: str = BUYBACK_URLS["lighter_explorer_url"]
    ethereum_rpc_url: str = BUYBACK_URLS["ethereum_rpc_url"]
    bsc_rpc_url: str = BUYBACK_URLS["bsc_rpc_url"]
    arbitrum_rpc_url: str = BUYBACK_URLS["arbitrum_rpc_url"]
    ws_probe_after_s: float = Field(default=60.0, gt=0)
    ws_probe_timeout_s: float = Field(default=10.0, gt=0)
    ws_max_lifetime_s: float = Field(default=23 * 3600.0, gt=0)
    ws_backoff_initial_s: float = Field(default=1.0, gt=0)
    ws_backoff_max_s: float = Field(default=60.0, gt=0)

    # --- cascades (bot/cascades.py) -----------------------------------------------------------------
    # A cascade opens when one venue's symbol, or the whole market, sees at least the count OR the USD
    # within the window, and ends once its window falls below half of both.
    cascade_window_s: int = Field(default=60, ge=5, le=3600)
    cascade_min_count: int = Field(default=10, ge=2)
    cascade_min_usd: Decimal = Field(default=Decimal(1_000_000), gt=0)
    cascade_market_min_count: int = Field(default=50, ge=2)
    cascade_market_min_usd: Decimal = Field(default=Decimal(5_000_000), gt=0)

    # --- unlock/TGE calendar (bot/calendar.py) -----------------------------------------------------------
    # Which calendar sources run besides the bundled file (defillama_emissions: model cliffs; polymarket: TGE
    # hints for operators; none: the bundled file and chat edits alone), their endpoints and intervals, the
    # DefiLlama slugs to refresh, the projects whose launch markets are hints, and the USD price source.
    calendar_sources: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["defillama_emissions"])
    defillama_datasets_url: str = defillama_emissions.DATASETS_URL
    defillama_slugs: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["hyperliquid", "lighter"])
    defillama_poll_s: float = Field(default=21600.0, ge=300, le=7 * 86400)
    polymarket_url: str = polymarket.GAMMA_URL
    polymarket_projects: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["edgeX", "Variational", "Pacifica", "MARU"]
    )
    polymarket_poll_s: float = Field(default=3600.0, ge=300, le=7 * 86400)
    coingecko_url: str = prices.COINGECKO_URL

    # --- operators and chats ----------------------------------------------------------------------
    admin_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_subscriptions_per_chat: int = Field(default=50, ge=1)
    max_watchlist_per_chat: int = Field(default=100, ge=1)

    # --- console sink -----------------------------------------------------------------------------
    console_format: Literal["text", "jsonl"] = "text"
    console_min_usd: Decimal = Field(default=Decimal(0), ge=0)

    # --- liveness (bot/health.py) ---------------------------------------------------------------------
    # `perpwatch run` rewrites this file from its event loop and `perpwatch healthcheck` fails once it is
    # stale (the container image's HEALTHCHECK); unset, no file is written.
    heartbeat_file: Path | None = None

    # --- logging ----------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # --- metrics and status page (bot/http) ---------------------------------------------------------
    # Off unless set: an operator opts in to a listening socket. The token guards the page and /metrics.
    http_listen: str | None = None
    http_token: SecretStr | None = None

    @field_validator("watchers", mode="before")
    @classmethod
    def _parse_watchers(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            names = [str(v).lower() for v in value]
            if names in ([], ["all"]):
                return list(KNOWN_WATCHERS)
            unknown = sorted(set(names) - set(KNOWN_WATCHERS))
            if unknown:
                raise ValueError(
                    f"unknown watcher(s) {', '.join(unknown)}; expected a comma list of "
                    f"{', '.join(KNOWN_WATCHERS)} or 'all'"
                )
            return list(dict.fromkeys(names))
        return value

    @field_validator("aster_buyback_wallets", mode="before")
    @classmethod
    def _parse_wallets(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            wallets = [str(item).strip().lower() for item in value]
            bad = [w for w in wallets if not re.fullmatch(r"0x[0-9a-f]{40}", w)]
            if bad:
                raise ValueError(f"{bad[0][:60]!r} is not a 0x wallet address; expected comma-separated 0x addresses")
            return list(dict.fromkeys(wallets))
        return value

    @field_validator("calendar_sources", mode="before")
    @classmethod
    def _parse_calendar_sources(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            names = [str(v).lower() for v in value]
            if names == ["none"]:
                return []
            unknown = sorted(set(names) - set(CALENDAR_SOURCES))
            if unknown:
                raise ValueError(
                    f"unknown calendar source(s) {', '.join(unknown)}; expected a comma list of "
                    f"{', '.join(CALENDAR_SOURCES)} or none"
                )
            return list(dict.fromkeys(names))
        return value

    @field_validator("defillama_slugs", "polymarket_projects", mode="before")
    @classmethod
    def _parse_names(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            for item in value:
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,59}", str(item)):
                    raise ValueError(f"{str(item)[:40]!r} is not a plain name or slug")
        return value

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _parse_admin_ids(cls, value: object) -> object:
        value = _split_csv(value)
        if isinstance(value, list):
            out: list[str] = []
            for item in value:
                text = str(item)
                platform, _, ident = text.rpartition(":")
                if platform not in ("", "telegram", "discord") or not ident.lstrip("-").isdigit():
                    raise ValueError(
                        f"bad admin id {text!r}; expected numeric user ids, optionally prefixed telegram: or discord:"
                    )
                out.append(text)
            return out
        return value

    @field_validator("http_listen")
    @classmethod
    def _check_http_listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_listen(value)
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("expected sqlite:///path/to/file.db or postgresql://user:password@host:port/dbname")
        try:
            parse_database_url(value)
        except ValueError as exc:  # its message masks the password; the setting is named by the caller
            raise ValueError(str(exc).removeprefix("PERPWATCH_DATABASE_URL ")) from None
        return value

    @field_validator(
        "telegram_api_url",
        "discord_api_url",
        "discord_gateway_url",
        "defillama_datasets_url",
        "polymarket_url",
        "coingecko_url",
        *URL_SETTINGS,
    )
    @classmethod
    def _check_url(cls, value: str) -> str:
        expected = "expected an http(s):// or ws(s):// URL with a host, like https://api.telegram.org"
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
        except ValueError:
            raise ValueError(expected) from None
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError(expected)
        return value.rstrip("/") if value.startswith("http") else value

    @property
    def database_path(self) -> Path:
        """The SQLite file (meaningless for PostgreSQL, whose URL has no path on this machine)."""
        return Path(parse_database_url(self.database_url).path)

    @property
    def database_password(self) -> str | None:
        """The password in a PostgreSQL URL: a secret the log filter masks like the tokens."""
        password = urlsplit(self.database_url).password if "://" in self.database_url else None
        return unquote(password) if password else None

    def is_operator(self, platform: str, user_id: str) -> bool:
        return user_id in self.admin_ids or f"{platform}:{user_id}" in self.admin_ids


ENV_NAMES: dict[str, str] = {
    "telegram_bot_token": "TELEGRAM_BOT_TOKEN",
    "discord_bot_token": "DISCORD_BOT_TOKEN",
}


def env_name(field_name: str) -> str:
    return ENV_NAMES.get(field_name, f"PERPWATCH_{field_name.upper()}")


class SettingsError(Exception):
    """A bad setting, worded as one line an operator can act on."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = env_name(str(first["loc"][0])) if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        got = first.get("input")
        shown = "" if name.endswith("TOKEN") or got is None else f" (got {mask_url(str(got))[:80]!r})"
        raise SettingsError(f"bad setting {name}: {message}{shown}") from None
