"""The container image, built and run for real with no network: `make image-test` (PERPWATCH_IMAGE_TEST=1).

No image registry is reachable here, so the test brings everything itself: Debian's `docker.io` daemon,
started with a data root, exec root, socket and cgroup parent of its own and with every network feature
off (`--bridge=none --iptables=false --ip-forward=false --ip-masq=false`), so it changes nothing on the
host's network and meets no other daemon; a base made by `debootstrap --variant=minbase` with python3,
imported under the tag the Dockerfile's FROM names; and the project's wheels, built beforehand into the
build context, so `docker build --network=none` needs nothing from outside. The daemon is stopped by its
pid and its directory deleted however the run ends.

Where it cannot run (not root, or docker.io/debootstrap missing and not installable) it says so in one line
and skips; PERPWATCH_REQUIRE_IMAGE=1 (CI) turns that line into a failure, as PERPWATCH_REQUIRE_POSTGRES does
for the PostgreSQL half of the suite. Under `make test` it is skipped: it is minutes of work, run on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENABLED = os.environ.get("PERPWATCH_IMAGE_TEST", "").strip() == "1"
REQUIRED = os.environ.get("PERPWATCH_REQUIRE_IMAGE", "").strip() == "1"
BASE_TAR = os.environ.get("PERPWATCH_IMAGE_BASE_TAR", "").strip()
"""A rootfs tarball to import instead of running debootstrap: for rerunning the test while working on it."""
MIRROR = os.environ.get("PERPWATCH_IMAGE_MIRROR", "").strip() or "http://deb.debian.org/debian"
# Read at import: the autouse fixture in conftest removes every PERPWATCH_* variable before a test runs.

REPO = Path(__file__).resolve().parent.parent
BASE_TAG = "python:3.11-slim-bookworm"
"""The Dockerfile's default PYTHON_IMAGE: the debootstrap base stands in for the official image."""
SUITE = "bookworm"
IMAGE = "perpwatch:image-test"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
TRUST_KEY = Path("/etc/docker/key.json")
GRACE_S = 10
"""Docker's default stop timeout: `docker stop` sends SIGKILL after it, and the container exits 137."""

pytestmark = pytest.mark.skipif(not ENABLED, reason="the image test runs under `make image-test`")


class Unavailable(Exception):
    """This machine cannot run the image test; the reason is the one line said."""


def _unavailable(reason: str) -> None:
    line = f"image test skipped: {reason}"
    if REQUIRED:
        pytest.fail(f"{line} (PERPWATCH_REQUIRE_IMAGE=1)", pytrace=False)
    pytest.skip(line)


def _run(
    args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - our own arguments
        list(args), capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise AssertionError(f"{' '.join(args[:4])}... exited {done.returncode}:\n{tail}")
    return done


def _programs() -> tuple[str, str, str]:
    """dockerd, Debian's docker client (the one of the daemon's version) and debootstrap; installed if missing."""
    wanted = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
    missing = [pkg for prog, pkg in wanted.items() if shutil.which(prog) is None]
    if missing:
        if os.geteuid() != 0:
            raise Unavailable(f"{', '.join(missing)} not installed and not root to install them")
        if shutil.which("apt-get") is None:
            raise Unavailable(f"{', '.join(missing)} not installed and no apt-get to install them")
        _apt_install(missing)
    dockerd, debootstrap = shutil.which("dockerd"), shutil.which("debootstrap")
    client = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if not (dockerd and debootstrap and client):
        raise Unavailable("apt-get installed docker.io and debootstrap but their programs did not turn up")
    if os.geteuid() != 0:
        raise Unavailable("not root: dockerd and debootstrap need root")
    return dockerd, client, debootstrap


def _apt_install(packages: Sequence[str]) -> None:
    """Without letting docker.io's postinst start the system's own daemon: a policy-rc.d that forbids it,
    only for this install and only if none was there (tests/pgserver.py does the same for PostgreSQL)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    ours = not POLICY_RC_D.exists()
    if ours:
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# Written by perpwatch tests/test_image.py for one apt-get install.\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
    try:
        install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *packages]
        done = _run(install, timeout=600, env=env, check=False)
        if done.returncode != 0:
            _run(["apt-get", "update", "-q"], timeout=300, env=env, check=False)
            done = _run(install, timeout=600, env=env, check=False)
    finally:
        if ours:
            POLICY_RC_D.unlink(missing_ok=True)
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise Unavailable(f"apt-get install {' '.join(packages)} failed (exit {done.returncode}): {last[0]}")


@dataclass
class Daemon:
    """One dockerd of this test's own, and what it took to get the image built."""

    client: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def cgroup_parent(self) -> str:
        return f"perpwatch-image-test-{os.getpid()}"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.root / "client"),  # no ~/.docker written
            "DOCKER_BUILDKIT": "0",  # the classic builder: Debian's docker.io ships no buildx
            "HOME": str(self.root),
        }

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([self.client, *args], timeout=timeout, env=self.env(), check=check)

    def start(self, dockerd: str) -> None:
        (self.root / "daemon.json").write_text("{}\n")  # not the host's /etc/docker/daemon.json
        log = (self.root / "dockerd.log").open("wb")
        self.process = subprocess.Popen(  # noqa: S603
            [
                dockerd,
                f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}",
                f"--pidfile={self.root / 'dockerd.pid'}",
                f"--host=unix://{self.socket}",
                f"--config-file={self.root / 'daemon.json'}",
                f"--cgroup-parent={self.cgroup_parent}",
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches us, and we stop it in order
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"dockerd exited {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.docker("version", timeout=10, check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise AssertionError(f"dockerd did not answer within 60 s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "dockerd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """By its pid: SIGTERM (it stops its containers and its containerd), SIGKILL if it will not go."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _ours(root: Path) -> list[int]:
    """Processes left over from our daemon (its containerd or a shim), known by our directory on their
    command line: nobody else's process names it."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline:
            pids.append(int(proc.name))
    return pids


def _cleanup(daemon: Daemon, key_was_there: bool) -> None:
    helpers = _ours(daemon.root)  # its containerd: named by pid in a stack dump it may write to /tmp
    daemon.stop()
    for pid in _ours(daemon.root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in helpers:
        Path(tempfile.gettempdir(), f"containerd.{pid}.stacks.log").unlink(missing_ok=True)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(str(daemon.root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)  # noqa: S603, S607
    shutil.rmtree(daemon.root, ignore_errors=True)
    for cgroup_root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        with_parent = cgroup_root / daemon.cgroup_parent
        if with_parent.is_dir():
            for child in sorted(with_parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                with_parent.rmdir()
    # dockerd 20.10 writes its identity key to /etc/docker/key.json whatever its other roots are.
    if not key_was_there:
        TRUST_KEY.unlink(missing_ok=True)


def _note(request: pytest.FixtureRequest, line: str) -> None:
    """A measured time, shown as the run goes (past pytest's capture): what the README's figures come from."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        sys.stderr.write(f"\nimage test: {line}\n")


@pytest.fixture(scope="module")
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    try:
        dockerd, client, debootstrap = _programs()
    except Unavailable as exc:
        _unavailable(str(exc))
        raise
    key_was_there = TRUST_KEY.exists()
    root = Path(tempfile.mkdtemp(prefix="pw-image-"))  # short: a unix socket path is at most 107 bytes
    found = Daemon(client=client, root=root)
    try:
        started = time.monotonic()
        found.start(dockerd)
        found.timings["daemon start"] = time.monotonic() - started
        _build(found, debootstrap, request)
        yield found
    finally:
        _cleanup(found, key_was_there)


def _build(daemon: Daemon, debootstrap: str, request: pytest.FixtureRequest) -> None:
    """Base, wheels, context, then `docker build --network=none`, each step timed."""
    root = daemon.root
    started = time.monotonic()
    if BASE_TAR:
        tarball = Path(BASE_TAR)
    else:
        rootfs = root / "rootfs"
        _run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-venv", SUITE, str(rootfs), MIRROR],
            timeout=900,
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):  # what an image needs none of
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        tarball = root / "base.tar"
        _run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=300)
        shutil.rmtree(rootfs)
    daemon.timings["debootstrap base"] = time.monotonic() - started

    started = time.monotonic()
    daemon.docker("import", str(tarball), BASE_TAG, timeout=300)
    daemon.timings["import base"] = time.monotonic() - started

    started = time.monotonic()
    context = root / "context"
    _copy_source(context)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(context / "wheelhouse"), str(context)],
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    daemon.timings["wheels"] = time.monotonic() - started

    started = time.monotonic()
    build = daemon.docker("build", "--network=none", "--tag", IMAGE, str(context), timeout=900)
    (root / "build.log").write_text(build.stdout + build.stderr)
    daemon.timings["docker build"] = time.monotonic() - started
    _note(request, ", ".join(f"{step} {seconds:.1f} s" for step, seconds in daemon.timings.items()))


def _copy_source(context: Path) -> None:
    """What git knows of the work tree (tracked files and new ones it does not ignore), as the build context:
    the Dockerfile and .dockerignore apply to it as to a clone."""
    listed = _run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard", "-z"], timeout=60
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = context / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _inspect(daemon: Daemon, what: str) -> dict[str, object]:
    [found] = json.loads(daemon.docker("inspect", what).stdout)
    assert isinstance(found, dict)
    return found


def test_image_is_built_offline_to_run_as_non_root(daemon: Daemon) -> None:
    config = _inspect(daemon, IMAGE)["Config"]
    assert isinstance(config, dict)
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "perpwatch", "healthcheck"]
    assert "/data" in config["Volumes"]
    assert "PERPWATCH_DATABASE_URL=sqlite:////data/perpwatch.db" in config["Env"]
    assert daemon.docker("run", "--rm", "--network=none", "--entrypoint", "id", IMAGE, "-u").stdout.strip() == "10001"
    # the source, its wheels and pip's build left nothing behind in the image that runs
    daemon.docker("run", "--rm", "--network=none", "--entrypoint", "sh", IMAGE, "-c", "test ! -e /src")


def test_demo_runs_in_a_container_with_no_network(daemon: Daemon, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    done = daemon.docker("run", "--rm", "--network=none", IMAGE, "demo", timeout=180)
    _note(request, f"perpwatch demo in a container {time.monotonic() - started:.1f} s")
    output = done.stdout + done.stderr
    assert "alerts sent" in output, output[-2000:]
    assert "1 duplicate ignored" in output, output[-2000:]


def test_bot_turns_healthy_keeps_its_database_on_the_volume_and_stops_on_sigterm(
    daemon: Daemon, request: pytest.FixtureRequest
) -> None:
    name, volume = "perpwatch-image-test", "perpwatch-image-test-data"
    daemon.docker(
        "run", "--detach", "--name", name, "--network=none", "--volume", f"{volume}:/data",
        "--health-interval=1s", "--health-start-period=60s",
        "--env", "PERPWATCH_WATCHERS=binance", IMAGE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        health = ""
        while time.monotonic() < deadline:
            state = _inspect(daemon, name)["State"]
            assert isinstance(state, dict)
            assert state["Running"], daemon.docker("logs", name).stderr[-2000:]
            health = str(state.get("Health", {}).get("Status"))
            if health == "healthy":
                break
            time.sleep(1)
        assert health == "healthy", daemon.docker("logs", name).stderr[-2000:]
        started = time.monotonic()
        daemon.docker("stop", f"--time={GRACE_S}", name, timeout=GRACE_S + 30)
        _note(request, f"docker stop (SIGTERM) took {time.monotonic() - started:.1f} s of the {GRACE_S} s grace")
        state = _inspect(daemon, name)["State"]
        assert isinstance(state, dict)
        logs = daemon.docker("logs", name)
        assert state["ExitCode"] == 0, (state, logs.stderr[-2000:])  # 137 would be the SIGKILL after the grace
        assert "stopping" in logs.stderr
    finally:
        daemon.docker("rm", "--force", name, check=False)
    status = daemon.docker("run", "--rm", "--network=none", "--volume", f"{volume}:/data", IMAGE, "db", "status")
    assert "engine: sqlite" in status.stdout and "/data/perpwatch.db" in status.stdout
    assert "schema version: 0" not in status.stdout  # the bot's own run created and migrated it there
    daemon.docker("volume", "rm", volume, check=False)
