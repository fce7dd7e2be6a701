"""tests/pgserver.py: where it looks for the server programs, when it installs them, and what a run without a
server says and does, all without root or a server; then, when `make test` started one, that it answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests import pgserver
from tests.pgserver import Programs, Unavailable

NOT_ROOT_LINE = (
    "pgserver: PostgreSQL tests skipped: "
    "no initdb/pg_ctl found and not root to install them (apt-get install postgresql)"
)


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _server_dir(path: Path, *, initdb: bool = True, pg_ctl: bool = True) -> Path:
    if initdb:
        _script(path / "initdb", "exit 0")
    if pg_ctl:
        _script(path / "pg_ctl", "exit 0")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_newest_debian_major_wins_by_number_not_by_spelling(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    _server_dir(lib / "9.6" / "bin")
    _server_dir(lib / "15" / "bin")
    _server_dir(lib / "16" / "bin", pg_ctl=False)  # half an install (a client package) is no server
    found = pgserver.find_programs(pg_config=None, lib_root=lib, search_path="")
    assert found == Programs(lib / "15" / "bin" / "initdb", lib / "15" / "bin" / "pg_ctl")


def test_pg_config_comes_first_but_only_where_its_bindir_holds_a_server(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    _server_dir(lib / "15" / "bin")
    own = _server_dir(tmp_path / "opt" / "pg17" / "bin")
    pg_config = _script(tmp_path / "pg_config", f"echo {own}")
    assert pgserver.find_programs(pg_config=str(pg_config), lib_root=lib, search_path="") == Programs(
        own / "initdb", own / "pg_ctl"
    )

    client_only = tmp_path / "usr" / "bin"  # what libpq-dev's pg_config reports: psql, no initdb
    client_only.mkdir(parents=True)
    _script(pg_config, f"echo {client_only}")
    assert pgserver.find_programs(pg_config=str(pg_config), lib_root=lib, search_path="") == Programs(
        lib / "15" / "bin" / "initdb", lib / "15" / "bin" / "pg_ctl"
    )

    _script(pg_config, "exit 1")
    assert pgserver.find_programs(pg_config=str(pg_config), lib_root=lib, search_path="") == Programs(
        lib / "15" / "bin" / "initdb", lib / "15" / "bin" / "pg_ctl"
    )


def test_path_is_the_last_place_and_a_file_that_cannot_run_is_not_a_program(tmp_path: Path) -> None:
    on_path = tmp_path / "bin"
    _server_dir(on_path)
    missing = tmp_path / "no-such-lib"
    assert pgserver.find_programs(pg_config=None, lib_root=missing, search_path=str(on_path)) == Programs(
        on_path / "initdb", on_path / "pg_ctl"
    )

    (on_path / "pg_ctl").chmod(0o644)
    lib = tmp_path / "lib"
    _server_dir(lib / "15" / "bin")
    (lib / "15" / "bin" / "initdb").chmod(0o644)
    if os.access(on_path / "pg_ctl", os.X_OK):
        pytest.skip("this filesystem ignores the execute bit")
    assert pgserver.find_programs(pg_config=None, lib_root=lib, search_path=str(on_path)) is None


def test_missing_programs_are_installed_only_by_root() -> None:
    installs: list[str] = []
    present = Programs(Path("/x/initdb"), Path("/x/pg_ctl"))

    with pytest.raises(Unavailable) as gone:
        pgserver.obtain_programs(is_root=False, find=lambda: None, install=lambda: installs.append("apt"))
    assert pgserver.skip_line(gone.value.reason) == NOT_ROOT_LINE
    assert installs == []

    assert pgserver.obtain_programs(is_root=True, find=lambda: present, install=lambda: installs.append("apt")) == (
        present
    )
    assert installs == []  # present: nothing to install, even as root

    answers = iter([None, present])
    assert pgserver.obtain_programs(
        is_root=True, find=lambda: next(answers), install=lambda: installs.append("apt")
    ) == (present)
    assert installs == ["apt"]

    with pytest.raises(Unavailable, match="no initdb/pg_ctl turned up"):
        pgserver.obtain_programs(is_root=True, find=lambda: None, install=lambda: installs.append("apt"))


def test_the_skip_message_is_one_line_with_one_prefix() -> None:
    line = pgserver.skip_line("initdb failed (exit 1):\n  could not create directory\n")
    assert line == "pgserver: PostgreSQL tests skipped: initdb failed (exit 1): could not create directory"
    assert "\n" not in line


def test_only_an_explicit_1_requires_postgres() -> None:
    assert pgserver.required({"PERPWATCH_REQUIRE_POSTGRES": "1"})
    for value in ("", "0", "yes", "true"):
        assert not pgserver.required({"PERPWATCH_REQUIRE_POSTGRES": value})
    assert not pgserver.required({})


def _probe(tmp_path: Path, code: int) -> list[str]:
    """A command that records whether it ran and whether it saw a server URL, then exits with `code`."""
    marker = tmp_path / "ran"
    return [
        sys.executable,
        "-c",
        "import os, pathlib, sys; "
        f"pathlib.Path({str(marker)!r}).write_text(os.environ.get('PERPWATCH_TEST_POSTGRES_URL', 'none')); "
        f"sys.exit({code})",
    ]


def test_without_a_server_the_command_runs_anyway_after_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PERPWATCH_REQUIRE_POSTGRES", raising=False)
    monkeypatch.setenv("PERPWATCH_TEST_POSTGRES_URL", "postgresql://someone-else@db/x")  # not ours: not passed on
    code = pgserver.main(["--", *_probe(tmp_path, 3)], is_root=False, find=lambda: None)
    assert code == 3
    assert (tmp_path / "ran").read_text() == "none"
    assert capsys.readouterr().err.splitlines() == [NOT_ROOT_LINE]


def test_required_postgres_turns_the_skip_into_a_failure_without_running_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PERPWATCH_REQUIRE_POSTGRES", "1")
    code = pgserver.main(["--", *_probe(tmp_path, 0)], is_root=False, find=lambda: None)
    assert code == 1
    assert not (tmp_path / "ran").exists()
    assert capsys.readouterr().err.splitlines() == [NOT_ROOT_LINE]


def test_the_commands_exit_code_passes_through_a_signal_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERPWATCH_REQUIRE_POSTGRES", raising=False)
    assert pgserver.main(["sh", "-c", "kill -TERM $$"], is_root=False, find=lambda: None) == 128 + 15
    assert pgserver.main(["--", "/no/such/program"], is_root=False, find=lambda: None) == 127
    assert pgserver.main(["--"]) == 2


def _fake_apt_get(tmp_path: Path, policy: Path, *, installs_fail: int) -> tuple[Path, Path]:
    """An apt-get that logs each call, whether policy-rc.d was in place, and DEBIAN_FRONTEND; its first
    `installs_fail` installs fail the way a stale package index does."""
    log = tmp_path / "apt.log"
    count = tmp_path / "installs"
    apt_get = _script(
        tmp_path / "fake-bin" / "apt-get",
        f"""
if [ -e {policy} ]; then p=policy; else p=no-policy; fi
echo "$* $p $DEBIAN_FRONTEND" >> {log}
if [ "$1" = install ]; then
    n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}
    echo "Reading package lists..."
    if [ $n -le {installs_fail} ]; then echo "E: Unable to locate package postgresql"; exit 100; fi
fi
exit 0""",
    )
    return apt_get, log


def test_install_retries_once_after_an_update_and_forbids_services_only_meanwhile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy-rc.d"
    apt_get, log = _fake_apt_get(tmp_path, policy, installs_fail=1)
    pgserver.install_programs(apt_get=str(apt_get), policy_rc_d=policy)
    assert log.read_text().splitlines() == [
        "install -y -q postgresql policy noninteractive",
        "update -q policy noninteractive",
        "install -y -q postgresql policy noninteractive",
    ]
    assert not policy.exists()  # ours, so gone: later packages may start their services again
    assert "Reading package lists" not in capsys.readouterr().err  # quiet unless it fails


def test_a_policy_rc_d_that_was_there_stays_and_a_failed_install_says_why_in_one_line(tmp_path: Path) -> None:
    policy = _script(tmp_path / "policy-rc.d", "exit 101  # the image's own")
    apt_get, log = _fake_apt_get(tmp_path, policy, installs_fail=2)
    with pytest.raises(Unavailable) as gone:
        pgserver.install_programs(apt_get=str(apt_get), policy_rc_d=policy)
    assert gone.value.reason == "apt-get install postgresql failed (exit 100): E: Unable to locate package postgresql"
    assert len(log.read_text().splitlines()) == 3  # one update, one retry, no more
    assert policy.read_text().endswith("exit 101  # the image's own\n")

    with pytest.raises(Unavailable, match="no apt-get"):
        pgserver.install_programs(apt_get=None, policy_rc_d=policy)


def _select_1(url: str, password: str) -> subprocess.CompletedProcess[str]:
    """psql over loopback TCP, the password from the environment so no process list shows it."""
    parts = urlsplit(url)
    psql = shutil.which("psql")
    assert psql is not None
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    who = ["-h", str(parts.hostname), "-p", str(parts.port), "-U", unquote(parts.username or ""), "-d", parts.path[1:]]
    return subprocess.run(  # noqa: S603 - psql from PATH, our own arguments
        [psql, *who, "-w", "-X", "-tAc", "SELECT 1"], capture_output=True, text=True, env=env, timeout=30, check=False
    )


@pytest.mark.skipif(not os.environ.get("PERPWATCH_TEST_POSTGRES_URL"), reason="no PostgreSQL server for this run")
def test_the_throwaway_server_answers_with_the_password_it_was_given() -> None:
    if shutil.which("psql") is None:
        pytest.skip("no psql to ask the server with")
    url = os.environ["PERPWATCH_TEST_POSTGRES_URL"]
    assert urlsplit(url).hostname == "127.0.0.1"
    done = _select_1(url, unquote(urlsplit(url).password or ""))
    assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
    # Loopback TCP asks for the password (scram-sha-256), so the URL's password is what let us in, not trust.
    assert _select_1(url, "not-the-password").returncode != 0
