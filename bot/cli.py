"""`perpwatch run | demo | config | db | backfill | doctor | healthcheck`: the entry point."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from urllib.parse import unquote, urlsplit

from bot.settings import Settings, SettingsError, env_name, load_settings
from storage.engine import DATABASE_SETTING, mask_url, parse_database_url

log = logging.getLogger("perpwatch")


def _secrets(settings: Settings, *urls: str) -> list[str]:
    """What no output may show: the tokens, the database's password, and those of other URLs given (--to)."""
    tokens = [
        t.get_secret_value()
        for t in (settings.telegram_bot_token, settings.discord_bot_token, settings.http_token)
        if t is not None
    ]
    passwords = [settings.database_password] if settings.database_password else []
    for url in urls:
        raw = urlsplit(url).password if "://" in url else None
        passwords.extend({raw, unquote(raw)} if raw else ())  # as typed, and as the driver is given it
    return [*tokens, *passwords]


async def _run(settings: Settings) -> None:
    from bot.app import PerpwatchApp
    from bot.health import beat, heartbeat_path

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with PerpwatchApp(settings):
        if settings.telegram_bot_token is None and settings.discord_bot_token is None:
            log.info("no TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN: alerts print here (console sink)")
        heartbeat = heartbeat_path(
            str(settings.heartbeat_file) if settings.heartbeat_file else None
        )  # once started: a container is healthy only when the bot is up
        beating = asyncio.create_task(beat(heartbeat), name="heartbeat") if heartbeat is not None else None
        await stop.wait()
        log.info("stopping")
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


def _config(settings: Settings) -> None:
    """Print the effective settings with secrets masked: what an operator checks before a deploy."""
    for name, value in settings.model_dump().items():
        shown = "***" if name.endswith("token") and value is not None else value
        if name == "database_url":
            shown = mask_url(str(value))
        if isinstance(shown, list):
            shown = ",".join(shown)
        sys.stdout.write(f"{env_name(name)}={'' if shown is None else shown}\n")


def _db(settings: Settings, command: str, to: str) -> int:
    """`perpwatch db …`: 0 when done, 2 for a bad --to; what the database refuses raises StorageStartError."""
    from bot import dbcli
    from storage import StorageStartError, StorageUnavailable

    if command == "copy":
        try:
            if "://" not in to:
                raise ValueError("--to must be a URL like postgresql://user:password@host:port/dbname")
            parse_database_url(to)
        except ValueError as exc:
            sys.stderr.write(f"perpwatch: {str(exc).replace(DATABASE_SETTING, '--to')}\n")
            return 2
    try:
        if command == "upgrade":
            asyncio.run(dbcli.upgrade(settings.database_url, sys.stdout))
        elif command == "status":
            asyncio.run(dbcli.status(settings.database_url, sys.stdout))
        else:
            asyncio.run(dbcli.copy(settings.database_url, to, sys.stdout))
    except StorageUnavailable as exc:  # locked by another process, a server restarting: nothing was changed
        raise StorageStartError(f"the database cannot be used now ({exc}): try again") from None
    return 0


def _backfill(settings: Settings, programmes: list[str]) -> int:
    """`perpwatch backfill buybacks`: 0 when every programme is read to its end, 1 with one line when a
    programme is unknown or its source keeps failing, 130 when interrupted (what was read is kept)."""
    from bot import backfill

    try:
        asyncio.run(backfill.run(settings, programmes, sys.stdout))
    except backfill.BackfillError as exc:
        sys.stderr.write(f"perpwatch: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stderr.write(f"perpwatch: {backfill.interrupted_note()}\n")
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perpwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the bot with the settings from the environment and .env")
    demo = sub.add_parser("demo", help="run the real bot against loopback fakes, replaying recorded frames")
    demo.add_argument("--rate", type=float, default=8.0, help="frames per second to replay (default 8)")
    sub.add_parser("config", help="print the effective settings, secrets masked")
    db = sub.add_parser("db", help="the database PERPWATCH_DATABASE_URL names: upgrade, status, copy")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply the pending migrations (the bot applies them at start too)")
    db_sub.add_parser("status", help="engine, schema version, pending migrations, rows")
    copy = db_sub.add_parser("copy", help="copy the database into an empty one, e.g. PostgreSQL")
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user:password@host:port/dbname")
    backfill = sub.add_parser("backfill", help="read a long history now, with progress: buybacks")
    backfill_sub = backfill.add_subparsers(dest="backfill_command", required=True)
    backfill_buybacks = backfill_sub.add_parser(
        "buybacks", help="read each programme's source to its end (safe to interrupt: a rerun goes on)"
    )
    backfill_buybacks.add_argument("programmes", nargs="*", metavar="programme", help="programme ids (default: all)")
    doctor = sub.add_parser("doctor", help="check settings, tokens, chat rights, sources and the database")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds for each request or connect (default 5)")
    health = sub.add_parser("healthcheck", help="exit 0 while a running bot's heartbeat file is fresh (no network)")
    health.add_argument("--file", help="the heartbeat file (default: $PERPWATCH_HEARTBEAT_FILE)")
    args = parser.parse_args(argv)
    to: str = getattr(args, "to", None) or ""
    if args.command == "healthcheck":  # before the settings: it runs every few seconds and reads none of them
        from bot.health import check, heartbeat_path

        problem = check(heartbeat_path(args.file))
        sys.stdout.write(f"{problem or 'ok'}\n")
        return 1 if problem else 0

    try:
        settings = load_settings()
    except SettingsError as exc:
        if args.command == "doctor":  # the doctor's answer to a bad setting is its table, not a usage error
            from bot.doctor import render, settings_error

            sys.stdout.write(render(settings_error(str(exc))))
            return 1
        sys.stderr.write(f"perpwatch: {exc}\n")
        return 2

    from bot.logs import setup_logging

    secrets = _secrets(settings, to)
    setup_logging(settings.log_level, secrets, settings.log_format)
    if args.command == "config":
        _config(settings)
        return 0
    if args.command == "doctor":
        from bot import doctor as doctor_checks

        return doctor_checks.run(settings, sys.stdout, secrets, timeout_s=args.timeout)
    from bot.http import HttpStartError
    from bot.platforms.delivery import PlatformStartError
    from storage import StorageStartError

    try:
        if args.command == "run":
            asyncio.run(_run(settings))
        elif args.command == "db":
            return _db(settings, args.db_command, to)
        elif args.command == "backfill":
            return _backfill(settings, args.programmes)
        else:
            from bot.demo import run_demo

            asyncio.run(run_demo(settings, rate=args.rate))
    except (PlatformStartError, StorageStartError, HttpStartError) as exc:  # what the operator must fix, in one line
        message = str(exc)
        for secret in secrets:  # one more guard: this line bypasses the logging filter
            message = message.replace(secret, "***")
        sys.stderr.write(f"perpwatch: {message}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
