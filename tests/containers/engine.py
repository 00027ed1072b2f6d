"""A private Docker engine for the container tests, and the image they run.

    engine = Engine.start(tmp_dir)      # its own dockerd, socket, exec-root; nothing shared
    engine.docker("ps")                 # the docker CLI against that socket only
    engine.stop()                       # containers and networks gone, dockerd killed

The engine never touches the system's Docker: it listens on a socket inside `tmp_dir`, keeps its
run-time state there, runs no bridge of its own (`--bridge=none`), edits no iptables rules and
talks to containerd under namespaces of its own. Its data root (images and layers only) lives in
CACHE, which this test owns, so that a later run finds the base image and the build cache; every
container, network and volume is removed at stop, and at start (a killed run's leftovers).

No registry is reachable, so the base image is made here (`base_image`): a minimal Debian
bookworm with Debian's Python 3.11, pip and venv, built by debootstrap (`tests.containers.rootfs`,
which leaves no mount behind) and imported as a single-layer image, cached as a tarball in CACHE.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.containers.rootfs import RootfsError, rootfs_tarball, unmount_all

# The engine's data root and the base tarball. DPNORM_TEST_CACHE points elsewhere, e.g. at an
# empty directory to build everything from nothing as a fresh machine does.
CACHE = Path(os.environ.get("DPNORM_TEST_CACHE") or "/var/cache/dpnorm-tests")
requires_root = pytest.mark.skipif(os.geteuid() != 0,
                                   reason="container tests need root (dockerd, debootstrap)")
PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose",
            "debootstrap": "debootstrap", "prometheus": "prometheus"}
BASE_REPO = "dpnorm-test/python"
# What python:3.11-slim has and the Dockerfile relies on: `python`, venv, pip, CA certificates.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    size_bytes: int
    base_seconds: float  # building the base root file system (0: cached)
    build_seconds: float  # docker build of the project's Dockerfile
    steps: tuple[int, int]  # (build steps taken from the layer cache, all steps)


def ensure_packages() -> None:
    """Install what the tests need from Debian when it is missing (apt-get, as root)."""
    missing = sorted({pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None})
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300,
                   capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env,
                   timeout=600, capture_output=True)


def docker_cli() -> str:
    """Debian's client (it matches the engine's API); any other one on PATH as a fallback."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


class Engine:
    """One private dockerd. Build with `start`; `stop` is safe to call more than once."""

    def __init__(self, run_dir: Path, proc: subprocess.Popen[bytes],
                 netns: str | None = None) -> None:
        self.run_dir = run_dir
        self.proc = proc
        self.netns = netns
        self.socket = run_dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0",
                    "COMPOSE_DOCKER_CLI_BUILD": "0"}

    @classmethod
    def start(cls, run_dir: Path, timeout: float = 60.0, netns: str | None = None) -> Engine:
        """With `netns`, dockerd runs in a new network namespace of that name: the bridges of
        its networks and its containers' links exist only there (it then has no way out, so
        builds need an engine without one)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        root = data_root()
        root.mkdir(parents=True, exist_ok=True)
        stop_stale_engines(root)
        tag = f"dpnorm-test-{os.getpid()}"
        log = (run_dir / "dockerd.log").open("wb")
        prefix: list[str] = []
        if netns:
            sweep_stale_netns()
            subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
            subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True,
                           capture_output=True)
            # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts.
            prefix = ["nsenter", f"--net=/run/netns/{netns}"]
        proc = subprocess.Popen(
            [*prefix, "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
             "--ip-masq=false", "--data-root", str(root), "--exec-root", str(run_dir / "exec"),
             "-H", f"unix://{run_dir / 'docker.sock'}", "--pidfile", str(run_dir / "docker.pid"),
             "--containerd-namespace", tag, "--containerd-plugins-namespace", f"{tag}-plugins"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        engine = cls(run_dir, proc, netns)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                engine.stop()
                raise RuntimeError("the private dockerd did not come up:\n" + engine.log()[-3000:])
            if engine.docker("version", check=False).returncode == 0:
                break
            time.sleep(0.3)
        engine.clean()
        return engine

    def log(self) -> str:
        path = self.run_dir / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([docker_cli(), *args], env=self.env, capture_output=True,
                              timeout=timeout, input=input.decode() if input else None,
                              text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def clean(self) -> None:
        """Remove every container, user network and volume of this engine (not its images)."""
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", "-v", *ids, check=False)
        nets = [n for n in self.docker("network", "ls", "-q", "--filter", "type=custom",
                                       check=False).stdout.split()]
        if nets:
            self.docker("network", "rm", *nets, check=False)
        self.docker("volume", "prune", "-f", check=False)
        # Superseded builds (untagged); the tagged build stage stays as the next run's cache.
        self.docker("image", "prune", "-f", check=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.clean()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Mounts under the exec-root (netns files, shm) would keep rm -rf from finishing; a
        # dockerd that had to be killed leaves its data root mounted on itself.
        exec_root = self.run_dir / "exec"
        left = unmount_all(exec_root) + unmount_all(data_root())
        shutil.rmtree(exec_root, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
        if left:
            raise RootfsError(f"the engine left {', '.join(map(str, left))} mounted")


def _alive(pid: int) -> bool:
    try:  # a zombie has exited; only its parent's wait is missing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_stale_engines(root: Path) -> None:
    """Stop a dockerd still running on `root` from a test run that was killed (SIGKILL skips
    the fixtures' finalizers, and dockerd runs in a session of its own): it holds the data
    root's lock, so the next run's engine could not start."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"dockerd") or b"--data-root" not in argv:
            continue
        at = argv.index(b"--data-root") + 1
        if at >= len(argv) or Path(os.fsdecode(argv[at])) != root:
            continue
        pid = int(entry.name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    left = unmount_all(root)
    if left:
        raise RootfsError(f"a stale engine left {', '.join(map(str, left))} mounted")


def data_root() -> Path:
    """Where every engine of the tests keeps its images (one at a time: build, then run)."""
    return CACHE / "engine"


NETNS_PREFIX = "dpnorm-engine-"


def engine_netns() -> str:
    return f"{NETNS_PREFIX}{os.getpid()}"


def sweep_stale_netns() -> None:
    """Delete the namespaces of earlier runs that were killed before they could."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=False).stdout
    for name in (ln.split()[0] for ln in listed.splitlines() if ln.strip()):
        match = re.fullmatch(rf"{NETNS_PREFIX}(\d+)", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def apt_mirror() -> str:
    """The Debian mirror this machine's own apt sources name (deb822 or one-line form)."""
    texts = [p.read_text() for p in [Path("/etc/apt/sources.list"),
                                     *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
             if p.is_file()]
    for text in texts:
        for block in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            if uris and re.search(r"^Suites:.*\bbookworm\b", block, re.M) \
                    and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def base_image(engine: Engine) -> tuple[str, float]:
    """An image like python:3.11-slim in the engine (from the cached root file system, or made
    by debootstrap first). Returns the tag and the seconds the root file system took to make
    (0 on a cache hit)."""
    ca = HOST_CA.read_bytes() if HOST_CA.exists() else b""
    key = hashlib.sha256(repr((BASE_PACKAGES, "bookworm", "minbase")).encode() + ca)
    tarball = CACHE / f"base-bookworm-{key.hexdigest()[:12]}.tar"
    tag = f"{BASE_REPO}:3.11-bookworm-{key.hexdigest()[:12]}"
    built = 0.0
    if not tarball.exists():
        started = time.monotonic()
        try:
            rootfs_tarball(tarball, BASE_PACKAGES, apt_mirror(), ca_bundle=ca)
        except RootfsError as exc:
            pytest.fail(f"the containers' base image could not be built: {exc}", pytrace=False)
        built = time.monotonic() - started
    if engine.docker("image", "inspect", tag, check=False).returncode != 0:
        subprocess.run(
            [docker_cli(), "import",
             "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "-c", "ENV LANG=C.UTF-8", "-c", 'CMD ["python3"]', str(tarball), tag],
            env=engine.env, check=True, capture_output=True, timeout=600)
    return tag, built


def torch_wheel(version: str) -> Path | None:
    """The CPU torch wheel on this disk where pip's find-links points, if there is one."""
    proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                          text=True, timeout=60, check=False)
    dirs = [Path(d) for line in proc.stdout.splitlines() if "find-links" in line
            for d in line.split("=", 1)[1].strip("'\" ").split()]
    for d in dirs:
        found = sorted(d.glob(f"torch-{version}+cpu-cp311-cp311-*linux*x86_64.whl"))
        if found:
            return found[0]
    return None


class WheelServer:
    """Serves one directory read-only over HTTP on 127.0.0.1 (for `docker build
    --network=host`: the build's pip fetches the local torch wheel from it)."""

    def __init__(self, directory: Path) -> None:
        import functools
        import http.server
        import threading

        handler = functools.partial(_QuietHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        from urllib.parse import quote

        return f"http://127.0.0.1:{self.port}/{quote(name)}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _quiet_handler_base() -> type:
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


_QuietHandler = _quiet_handler_base()
