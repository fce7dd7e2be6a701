"""The installed distribution: it ships no `tests` (nor `bench`), and `perpwatch demo` needs nothing beyond it.

A wheel is built from a copy of the source tree (so the checkout is left untouched) and unpacked; the demo's
venue and frames are then imported from the unpacked wheel alone, with `tests` made unimportable.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("perpwatch", "bot", "watchers", "storage", "tests", "bench")


def _builds_without_isolation() -> bool:
    """setuptools builds wheels itself from 70.1 on; before that it needs the `wheel` package."""
    major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "out"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SOURCES:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(src)]
    if _builds_without_isolation():
        command.insert(4, "--no-build-isolation")
    subprocess.run(command, check=True, capture_output=True, timeout=300)  # noqa: S603 - our own interpreter and pip
    [built] = out.glob("perpwatch-*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_ships_no_tests_and_carries_the_demo_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    tops = {name.split("/")[0] for name in names if not name.startswith("perpwatch-")}
    assert tops == {"bot", "perpwatch", "storage", "watchers"}
    for shipped in (
        "bot/demo.py",
        "bot/demo_venue.py",
        "bot/demo_frames/forceorder_replay.jsonl",
        "bot/data/known_wallets.toml",
        "storage/migrations/sqlite/0001_init.sql",
        "storage/migrations/postgresql/0001_init.sql",
        "watchers/registry.py",
        "bot/families/__init__.py",
    ):
        assert shipped in names


_NO_TESTS = """
import importlib.abc, sys

class NoTests(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("tests", "bench"):
            raise ModuleNotFoundError(f"{name} is not installed")
        return None

sys.meta_path.insert(0, NoTests())
"""

_DEMO_VENUE = """
import asyncio, aiohttp, bot, bot.demo, bot.demo_venue

assert bot.__file__.startswith(sys.argv[1]), bot.__file__
frames = bot.demo.load_frames()
assert len(frames) == 40, len(frames)

async def main() -> None:
    async with bot.demo_venue.FakeForceOrderServer() as venue:
        async with aiohttp.ClientSession() as session, session.ws_connect(venue.url) as ws:
            await venue.wait_connected()
            await venue.push(frames[0])
            assert await ws.receive_json() == frames[0]

asyncio.run(main())
print("ok")
"""


def _environment(site: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("PERPWATCH_") and not k.endswith("_BOT_TOKEN")}
    return {**keep, "PYTHONPATH": str(site)}


def test_the_demo_venue_and_its_frames_load_from_the_wheel_alone(site: Path, tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter, our own code
        [sys.executable, "-c", _NO_TESTS + _DEMO_VENUE, str(site)],
        cwd=tmp_path,
        env=_environment(site),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _app_imports() -> bool:
    try:
        import bot.app  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _app_imports(), reason="bot.app does not import in this checkout (backbone v2 in progress)")
def test_perpwatch_demo_runs_from_the_wheel(site: Path, tmp_path: Path) -> None:
    code = _NO_TESTS + "from bot.cli import main\nraise SystemExit(main(['demo', '--rate', '200']))\n"
    done = subprocess.run(  # noqa: S603 - our own interpreter, our own code
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_environment(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "alerts sent" in done.stdout + done.stderr
