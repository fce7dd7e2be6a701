"""A throwaway PostgreSQL server for one test run: `python -m tests.pgserver -- <command...>`.

The PostgreSQL tests need a real server, and asking every developer (and CI) to keep one running, with a known
password and a database they do not mind losing, is more to ask than `make test` should. So the run brings its own:
a cluster in a temp directory on a free loopback port, gone when the command ends. The command finds it through
`PERPWATCH_TEST_POSTGRES_URL`.

Where no server can be had, the command still runs (SQLite alone) after one line on stderr that says why, so a
laptop without PostgreSQL loses nothing; `PERPWATCH_REQUIRE_POSTGRES=1` turns that line into a failure, for CI.

Stdlib only: it serves the storage code, so it must not need any of it, and any Python 3.11 can run it (a
non-root user whose own Python is not the venv's, say).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import quote

URL_VAR = "PERPWATCH_TEST_POSTGRES_URL"
REQUIRE_VAR = "PERPWATCH_REQUIRE_POSTGRES"
SKIP_PREFIX = "pgserver: PostgreSQL tests skipped: "
SERVER_USER = "postgres"  # initdb refuses to run as root, so root hands the cluster to this account
SUPERUSER = "perpwatch"
DEBIAN_LIB = Path("/usr/lib/postgresql")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
LOG_TAIL_LINES = 20


class Unavailable(Exception):
    """No server for this run; `reason` finishes the one skip line, `detail` (the server log) only follows it."""

    def __init__(self, reason: str, detail: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = list(detail)


class Interrupted(Exception):
    """SIGINT or SIGTERM, raised where we are so the `finally` blocks stop the server and delete its directory."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Programs:
    initdb: Path
    pg_ctl: Path


def skip_line(reason: str) -> str:
    """One line, always the same prefix, so a log search for it finds every skipped PostgreSQL run."""
    return SKIP_PREFIX + " ".join(reason.split())


def required(environ: Mapping[str, str]) -> bool:
    """Only an explicit "1": CI sets it, and a stray empty or "0" must not fail a developer's run."""
    return environ.get(REQUIRE_VAR, "").strip() == "1"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _programs_in(bindir: Path) -> Programs | None:
    initdb, pg_ctl = bindir / "initdb", bindir / "pg_ctl"
    return Programs(initdb, pg_ctl) if _executable(initdb) and _executable(pg_ctl) else None


def _version_key(path: Path) -> tuple[int, ...]:
    """Debian names the directories by major version ("15", "9.6"); compare them as numbers, not strings."""
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def find_programs(
    *, pg_config: str | None, lib_root: Path = DEBIAN_LIB, search_path: str | None = None
) -> Programs | None:
    """initdb and pg_ctl, where a server install puts them.

    pg_config comes first because it names the installation the client libraries were built against; but on Debian
    it often comes from libpq-dev alone, whose bindir holds no server, so every candidate must hold both programs.
    Debian keeps the server programs off PATH (/usr/lib/postgresql/<major>/bin), hence the second look; PATH last.
    """
    if pg_config:
        try:
            done = _run([pg_config, "--bindir"], timeout=10)
        except OSError:
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            found = _programs_in(Path(done.stdout.strip().splitlines()[-1]))
            if found:
                return found
    if lib_root.is_dir():
        for bindir in sorted(lib_root.glob("*/bin"), key=lambda p: _version_key(p.parent), reverse=True):
            found = _programs_in(bindir)
            if found:
                return found
    initdb, pg_ctl = shutil.which("initdb", path=search_path), shutil.which("pg_ctl", path=search_path)
    if initdb and pg_ctl:
        return Programs(Path(initdb), Path(pg_ctl))
    return None


def install_programs(*, apt_get: str | None, policy_rc_d: Path = POLICY_RC_D) -> None:
    """`apt-get install postgresql`, without leaving Debian's own cluster running for good.

    The package's postinst starts its service; a policy-rc.d that answers 101 ("action forbidden") stops that, but
    only for the install: a policy-rc.d left behind would silence every later package's service too. One that was
    already there (Docker images ship one) is someone else's and stays. The index may be stale or absent in a fresh
    image, so one failed install earns one `apt-get update` and a second try.
    """
    if apt_get is None:
        raise Unavailable("no initdb/pg_ctl found and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt_get, "install", "-y", "-q", "postgresql"]
    created = False
    if not policy_rc_d.exists():
        policy_rc_d.write_text(
            "#!/bin/sh\n# Written by perpwatch tests/pgserver.py for one apt-get install.\nexit 101\n"
        )
        policy_rc_d.chmod(0o755)
        created = True
    try:
        _say("installing PostgreSQL's server programs (apt-get install postgresql)")
        done = _run(install, env=env)
        if done.returncode != 0:
            _run([apt_get, "update", "-q"], env=env)
            done = _run(install, env=env)
    finally:
        if created:
            policy_rc_d.unlink(missing_ok=True)
    if done.returncode != 0:
        raise Unavailable(f"apt-get install postgresql failed (exit {done.returncode}): {_last_line(done.stdout)}")


def obtain_programs(*, is_root: bool, find: Callable[[], Programs | None], install: Callable[[], None]) -> Programs:
    """The programs, installing them only where we may (root) and only where they are missing."""
    found = find()
    if found:
        return found
    if not is_root:
        raise Unavailable("no initdb/pg_ctl found and not root to install them (apt-get install postgresql)")
    install()
    found = find()
    if not found:
        raise Unavailable("apt-get installed postgresql but no initdb/pg_ctl turned up")
    return found


def free_loopback_port() -> int:
    """A port nobody holds now. Another process could take it before the server binds it; start then fails loudly."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class ThrowawayServer:
    """One cluster in one temp directory; `close()` stops it and deletes the directory, however far `start()` got."""

    programs: Programs
    as_user: str | None  # the account initdb and pg_ctl run as; None: the current one
    root: Path = field(init=False)
    port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="perpwatch-pg-"))
        if self.as_user is not None:
            try:
                account = pwd.getpwnam(self.as_user)
                os.chown(self.root, account.pw_uid, account.pw_gid)
            except BaseException:  # no server object to close() yet: the directory is ours to remove here
                shutil.rmtree(self.root, ignore_errors=True)
                raise

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _as_server_user(self, args: list[str]) -> list[str]:
        if self.as_user is None:
            return args
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self.as_user, "--", *args]
        return [shutil.which("su") or "/bin/su", self.as_user, "-s", "/bin/sh", "-c", shlex.join(args)]

    def _pg(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        # cwd: the server account may not be allowed into the directory `make` runs in.
        return _run(self._as_server_user(args), cwd=self.root, timeout=timeout)

    def start(self) -> str:
        """initdb, configure, start; the URL (with the password) for the command, never for a log."""
        password = secrets.token_urlsafe(24)
        pwfile = self.root / "pwfile"
        pwfile.touch(mode=0o600)
        pwfile.write_text(password + "\n")
        if self.as_user is not None:
            account = pwd.getpwnam(self.as_user)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            done = self._pg(
                [
                    str(self.programs.initdb),
                    f"--pgdata={self.data}",
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",  # the socket lives in our 0700 directory: only its owner reaches it
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",  # nothing here has to survive a crash
                    "--no-instructions",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise Unavailable(f"initdb failed (exit {done.returncode}): {_last_line(done.stdout)}")
        self.port = free_loopback_port()
        settings = {
            "listen_addresses": _conf_string("127.0.0.1"),
            "port": str(self.port),
            "unix_socket_directories": _conf_string(str(self.root)),
            # A throwaway test server: its data dies with the run, so durability only costs time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/pgserver.py: a throwaway server for one test run\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        done = self._pg(
            [str(self.programs.pg_ctl), "start", "-w", "-t", "60", "-s", "-D", str(self.data), "-l", str(self.log)],
            timeout=90,
        )
        if done.returncode != 0:
            raise Unavailable(f"the server did not start (pg_ctl exit {done.returncode}); its log:", self._log_tail())
        return f"postgresql://{SUPERUSER}:{quote(password, safe='')}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the server, keeping its data (a test restarts it to see the bot ride out the outage)."""
        args = [str(self.programs.pg_ctl), "stop", "-m", "fast", "-w", "-t", "30", "-s", "-D", str(self.data)]
        if self._pg(args, timeout=45).returncode != 0:
            raise Unavailable("the server did not stop; its log:", self._log_tail())

    def resume(self) -> None:
        """Start the stopped server again on the same port, with the same data."""
        args = [str(self.programs.pg_ctl), "start", "-w", "-t", "60", "-s", "-D", str(self.data), "-l", str(self.log)]
        if self._pg(args, timeout=90).returncode != 0:
            raise Unavailable("the server did not start again; its log:", self._log_tail())

    def _log_tail(self) -> list[str]:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ["(no server log)"]

    def version(self) -> str:
        try:
            return (self.data / "PG_VERSION").read_text(encoding="utf-8").strip()
        except OSError:
            return "?"

    def close(self) -> None:
        """Stop the server if it got as far as running, then delete everything, the data included.

        "fast" ends the sessions the command left open; "immediate" is for a server that will not even do that.
        A server we cannot stop keeps its directory (deleting files under a live server helps no one).
        """
        if (self.data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                args = [str(self.programs.pg_ctl), "stop", "-m", mode, "-w", "-t", "30", "-s", "-D", str(self.data)]
                if self._pg(args, timeout=45).returncode == 0:
                    break
            else:
                _say(f"could not stop the throwaway server; left running in {self.root}")
                return
        shutil.rmtree(self.root, ignore_errors=True)


def ensure_server_user(name: str = SERVER_USER) -> None:
    """Debian's package creates `postgres`; a machine with the programs from elsewhere may have no such account."""
    try:
        pwd.getpwnam(name)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise Unavailable(f"no {name} user to run initdb as (initdb refuses root) and no useradd to create one")
    done = _run([useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
    if done.returncode != 0:
        raise Unavailable(f"useradd {name} failed (exit {done.returncode}): {_last_line(done.stdout)}")


def _run(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with the output kept for an error line, and a gentler end on an interrupt.

    subprocess.run SIGKILLs its child when anything interrupts the wait; apt-get (dpkg) and pg_ctl deserve a
    SIGTERM and a moment to finish cleanly first.
    """
    child = subprocess.Popen(  # noqa: S603 - our own argument lists, no shell
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=cwd,
    )
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _end(child)
        return subprocess.CompletedProcess(list(args), 124, f"timed out after {timeout:.0f} s")
    except BaseException:
        _end(child)
        raise
    return subprocess.CompletedProcess(list(args), child.returncode, out)


def _end(child: subprocess.Popen[str]) -> None:
    child.terminate()
    try:
        child.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()


def _last_line(output: str | None) -> str:
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _say(line: str) -> None:
    sys.stderr.write(f"pgserver: {line}\n")
    sys.stderr.flush()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _hold(signum: int, frame: FrameType | None) -> None:
    """Not SIG_IGN: an ignored signal stays ignored in the programs we start (exec keeps it), a handler does not."""


def _exit_code(returncode: int) -> int:
    """A command a signal killed reports as a shell would (128 + signal), not as a negative number."""
    return 128 - returncode if returncode < 0 else returncode


def _terminal_sent_it_to_all(signum: int) -> bool:
    """Whether the command already has this signal, so passing it on would deliver it twice.

    Ctrl-C at a terminal reaches the whole foreground process group, the command too, and a second SIGINT would cut
    short the command's own clean-up (pytest's teardown). A SIGINT from `kill`, or SIGTERM, reached only us.
    """
    if signum != signal.SIGINT:
        return False
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def run_command(command: Sequence[str], env: dict[str, str]) -> int:
    """The command's exit code. An interrupt goes on to the command, which gets 30 s to end before SIGKILL."""
    try:
        child = subprocess.Popen(list(command), env=env)  # noqa: S603 - the command we were asked to run
    except OSError as exc:
        _say(f"cannot run {command[0]}: {exc.strerror}")
        return 127
    try:
        return _exit_code(child.wait())
    except Interrupted as stop:
        try:
            if not _terminal_sent_it_to_all(stop.signum):
                child.send_signal(stop.signum)
            return _exit_code(child.wait(timeout=30))
        except (Interrupted, subprocess.TimeoutExpired):
            child.kill()
            return _exit_code(child.wait())


def main(
    argv: Sequence[str] | None = None,
    *,
    is_root: bool | None = None,
    find: Callable[[], Programs | None] | None = None,
    install: Callable[[], None] | None = None,
) -> int:
    """The injectable parts (root or not, what is installed) let the tests walk the skip paths without root."""
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        sys.stderr.write("usage: python -m tests.pgserver -- <command...>\n")
        return 2
    root = os.geteuid() == 0 if is_root is None else is_root
    finder = find or (lambda: find_programs(pg_config=shutil.which("pg_config")))
    installer = install or (lambda: install_programs(apt_get=shutil.which("apt-get")))
    env = {name: value for name, value in os.environ.items() if name != URL_VAR}  # only the server we start
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    server: ThrowawayServer | None = None
    try:
        try:
            programs = obtain_programs(is_root=root, find=finder, install=installer)
            if root:
                ensure_server_user()
            began = time.monotonic()
            server = ThrowawayServer(programs, as_user=SERVER_USER if root else None)
            env[URL_VAR] = server.start()
        except OSError as exc:  # a chown, a temp dir, a program that would not exec: still one line
            gone: Unavailable | None = Unavailable(f"{type(exc).__name__}: {exc}")
        except Unavailable as exc:
            gone = exc
        else:
            gone = None
            ready = time.monotonic() - began
            _say(f"throwaway PostgreSQL {server.version()} on 127.0.0.1:{server.port}, ready in {ready:.1f} s")
        if gone is not None:
            sys.stderr.write(skip_line(gone.reason) + "\n")
            sys.stderr.writelines(f"    {line}\n" for line in gone.detail)
            sys.stderr.flush()
            if required(os.environ):
                return 1
        return run_command(command, env)
    except Interrupted as stop:
        return 128 + stop.signum
    finally:
        # Stopping must not be cut short by a second Ctrl-C, or the server outlives the run; every step has a timeout.
        for sig in previous:
            signal.signal(sig, _hold)
        if server is not None:
            server.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
