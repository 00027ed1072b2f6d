"""A Debian root file system made by debootstrap and packed as a tarball, leaving no mount behind.

    rootfs_tarball(tarball, packages, mirror)   # debootstrap into a scratch dir, tar, clean up

debootstrap mounts /proc (and on some hosts /sys or a bind of /dev) inside the root while it
installs packages, and normally unmounts them before it exits. Normally is not always: on a
loaded machine it returned with `proc` still mounted under the root, `tar` then failed on
/proc and the scratch directory's clean-up failed with EPERM, leaving the mount on the host.
So nothing here relies on debootstrap's own clean-up:

- after debootstrap (whether it succeeded or not) every mount under the root is unmounted,
  deepest first, and the root is checked to hold none;
- tar stays on the root's own file system (`--one-file-system`) and leaves out what is under
  proc, sys and dev (a container gets its own);
- the scratch directory is removed with `rm --one-file-system` after a last unmount pass, so a
  mount that still could not be removed is never descended into (its contents may be the
  host's), and a failure is one sentence naming what is left.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

# Directories whose contents a container gets from its runtime, never from the image.
RUNTIME_DIRS = ("proc", "sys", "dev")


class RootfsError(RuntimeError):
    """The base root file system could not be made; the message is one sentence."""


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo (octal).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below `root`, deepest first (the order they must be unmounted in)."""
    base = os.path.realpath(root)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == base or point.startswith(base + os.sep):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: (len(p.parts), str(p)), reverse=True)


def unmount_all(root: Path) -> list[Path]:
    """Unmount everything under `root`, deepest first; a busy mount is detached lazily.
    Returns what is still mounted afterwards (empty on success)."""
    for _ in range(3):  # a mount can hide another mounted on the same point
        points = mounts_under(root)
        if not points:
            return []
        for point in points:
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
    return mounts_under(root)


def remove_tree(path: Path) -> None:
    """Remove `path` without ever crossing into a mount left under it."""
    left = unmount_all(path)
    if left:
        raise RootfsError(f"could not unmount {', '.join(map(str, left))}; left {path} in place "
                          "rather than delete through a mount")
    proc = subprocess.run(["rm", "-rf", "--one-file-system", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0 and path.exists():
        raise RootfsError(f"could not remove {path}: {proc.stderr.strip().splitlines()[-1]}")


@contextlib.contextmanager
def scratch_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory whose clean-up unmounts first and never fails on a mount."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield path
    finally:
        remove_tree(path)


def pack(root: Path, tarball: Path) -> None:
    """Tar `root` (after unmounting everything under it) into `tarball`, atomically."""
    left = unmount_all(root)
    if left:
        raise RootfsError(f"{', '.join(map(str, left))} is still mounted under the new root "
                          "file system after umount; not packing it")
    excludes = [f"--exclude=./{d}/*" for d in RUNTIME_DIRS]
    partial = tarball.with_name(tarball.name + ".partial")
    proc = subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--one-file-system",
                           *excludes, "-cf", str(partial), "."],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RootfsError(f"tar of the base root file system failed: {last_line(proc.stderr)}")
    partial.rename(tarball)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def rootfs_tarball(tarball: Path, packages: Sequence[str], mirror: str, *,
                   suite: str = "bookworm", ca_bundle: bytes = b"",
                   debootstrap: Sequence[str] = ("debootstrap",)) -> None:
    """Make `tarball`: a minbase `suite` with `packages`, and `ca_bundle` as its CA certificates
    if given. `debootstrap` is the command to run (a test injects a failing one)."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with scratch_dir(tarball.parent, "rootfs-") as scratch:
        root = scratch / "root"
        try:
            proc = subprocess.run([*debootstrap, "--variant=minbase",
                                   f"--include={','.join(packages)}", suite, str(root), mirror],
                                  capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise RootfsError("debootstrap did not finish in 15 minutes") from exc
        finally:
            unmount_all(root)  # also after a failure or a timeout, before anything else
        if proc.returncode != 0:
            raise RootfsError(f"debootstrap exited with {proc.returncode}: "
                              f"{last_line(proc.stdout + proc.stderr)}")
        # This machine's package traffic passes a TLS proxy whose CA only the host's bundle
        # holds; pip inside the test's build needs it. Test base image only.
        if ca_bundle:
            (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca_bundle)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        pack(root, tarball)
