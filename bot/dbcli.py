"""`perpwatch db upgrade | status | copy --to URL`: the database named by PERPWATCH_DATABASE_URL, looked after
from the command line. What they cannot do is a StorageStartError: one line, and `perpwatch` exits 1."""

from __future__ import annotations

import os
import re
from typing import TextIO
from urllib.parse import urlsplit

from bot.progress import Progress, progress_for
from storage import DATABASE_SETTING, Engine, StorageStartError, open_engine, parse_database_url
from storage.engine import DatabaseUrl


async def upgrade(url: str, out: TextIO) -> None:
    from storage.admin import upgrade as apply

    engine = open_engine(url)
    await engine.open(migrate=False)
    try:
        done = await apply(engine)
    finally:
        await engine.close()
    if not done.applied:
        out.write(f"already at version {done.after}\n")
        return
    for version, name in done.applied:
        out.write(f"applied migration {version} ({name})\n")
    out.write(f"database {engine.display} is at version {done.after}\n")


async def status(url: str, out: TextIO) -> None:
    from storage.admin import COUNTED, DatabaseStatus, database_status, pending_migrations, release_version

    parsed = parse_database_url(url)
    if _missing_file(parsed):  # opening would create it: a status looks, it does not create
        kind = parsed.kind
        shown = DatabaseStatus(kind, parsed.masked, 0, release_version(kind), pending_migrations(kind, 0))
    else:
        engine = open_engine(url)
        await engine.open(migrate=False)
        try:
            shown = await database_status(engine)
        finally:
            await engine.close()
    if shown.version > shown.release:
        version = f"{shown.version} (newer than this release's {shown.release})"
    elif shown.version == 0:
        version = "0 (no perpwatch tables yet: `perpwatch db upgrade` or the bot's start creates them)"
    else:
        version = str(shown.version)
    out.write(f"engine: {shown.kind}\n")
    out.write(f"database: {shown.display}\n")
    out.write(f"schema version: {version}\n")
    pending = ", ".join(name for _v, name in shown.pending) or "none"
    out.write(f"pending migrations: {pending}\n")
    for name in COUNTED:
        out.write(f"{name}: {shown.counts[name]:,}\n" if shown.counts is not None else f"{name}: -\n")


async def copy(url: str, to: str, out: TextIO) -> None:
    from storage.copy import copy_database

    source_url, target_url = parse_database_url(url), parse_database_url(to)
    if _missing_file(source_url):
        raise _no_source(source_url)
    if _same_database(source_url, target_url):
        raise StorageStartError(f"--to names the database being copied ({target_url.masked}): name an empty one")
    source = open_engine(url)
    await source.open(migrate=False)  # the copy never writes to the source: it may be live
    try:
        target = await _open_target(to)
        try:
            with progress_for(out, unit="rows") as shown:  # a bar on a terminal, plain lines otherwise
                report = await copy_database(source, target, progress=lambda line: _copy_progress(shown, line))
        finally:
            await target.close()
    finally:
        await source.close()
    if report.already_copied:
        out.write("already copied: nothing to do\n")
        return
    out.write(f"copied {report.total:,} rows into {report.target}: point {DATABASE_SETTING} at it and start the bot\n")


async def _open_target(to: str) -> Engine:
    """The target's own start-up refusals, told as --to's (they name the setting of the bot's database)."""
    target = open_engine(to)
    try:
        await target.open(migrate=False)
    except StorageStartError as exc:
        raise StorageStartError(str(exc).replace(DATABASE_SETTING, "--to")) from None
    return target


_TABLE_LINE = re.compile(r"(?P<table>\w+): (?P<done>[\d,]+)(?: of (?P<total>[\d,]+))? rows?")
"""storage.copy's word on one table: `events: 100,000 of 1,500,000 rows` on the way, `events: 15 rows` done."""


def _copy_progress(shown: Progress, line: str) -> None:
    """storage.copy reports in lines; a table's count becomes the progress of that table, the rest notes."""
    found = _TABLE_LINE.fullmatch(line)
    if found is None:
        shown.note(line)
        return
    done = int(found["done"].replace(",", ""))
    total = int(found["total"].replace(",", "")) if found["total"] else done
    shown.update(found["table"], done, total)


def _no_source(url: DatabaseUrl) -> StorageStartError:
    return StorageStartError(
        f"database {os.path.abspath(url.path)} ({DATABASE_SETTING}) does not exist: nothing to copy; "
        f"point {DATABASE_SETTING} at the bot's database"
    )


def _missing_file(url: DatabaseUrl) -> bool:
    return url.kind == "sqlite" and url.path != ":memory:" and not os.path.exists(url.path)


def _same_database(a: DatabaseUrl, b: DatabaseUrl) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "sqlite":
        return a.path != ":memory:" and os.path.realpath(a.path) == os.path.realpath(b.path)
    pa, pb = urlsplit(a.dsn), urlsplit(b.dsn)
    return (pa.hostname, pa.port or 5432, pa.path) == (pb.hostname, pb.port or 5432, pb.path)
