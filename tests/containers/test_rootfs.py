"""The base root file system leaves no mount behind, also when debootstrap does (root only).

debootstrap itself is replaced by a small script that does what the real one did on a loaded
machine: return with /proc still mounted under the root (and, to make a careless clean-up
visible, a bind mount of a host directory under /dev). The real debootstrap runs in
test_compose.py's image build whenever the cache is empty.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers import rootfs
from tests.containers.engine import requires_root, stop_stale_engines
from tests.containers.rootfs import RootfsError, mounts_under, pack, rootfs_tarball

pytestmark = requires_root


@pytest.fixture
def host_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory of the host's that a fake debootstrap bind-mounts under the root: its file
    must survive every clean-up."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "precious").write_text("the host's")
    yield host
    assert (host / "precious").read_text() == "the host's"


def fake_debootstrap(tmp_path: Path, host: Path, exit_code: int) -> list[str]:
    """A debootstrap that makes a root, leaves /proc and a bind of `host` mounted, and exits
    with `exit_code`; the root is its fourth argument, as for the real one."""
    script = tmp_path / "debootstrap"
    script.write_text(f"""#!/bin/sh
set -e
root="$4"
mkdir -p "$root/proc" "$root/sys" "$root/dev/shm" "$root/etc/ssl/certs" "$root/usr/bin"
echo bookworm > "$root/etc/debian_version"
mount -t proc proc "$root/proc"
mount --bind {host} "$root/dev/shm"
exit {exit_code}
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return [str(script)]


def no_mounts_left(path: Path) -> None:
    assert mounts_under(path) == []
    listed = subprocess.run(["mount"], capture_output=True, text=True, check=True).stdout
    assert str(path) not in listed


def test_a_proc_mount_left_by_debootstrap_is_unmounted_and_not_packed(
        tmp_path: Path, host_dir: Path) -> None:
    cache = tmp_path / "cache"
    tarball = cache / "base.tar"
    rootfs_tarball(tarball, ["python3"], "http://mirror.invalid/debian",
                   ca_bundle=b"CA", debootstrap=fake_debootstrap(tmp_path, host_dir, 0))
    no_mounts_left(tmp_path)
    assert list(cache.iterdir()) == [tarball]  # no scratch dir, no partial file
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        ca = tar.extractfile("./etc/ssl/certs/ca-certificates.crt")
        assert ca is not None and ca.read() == b"CA"
    assert "./etc/debian_version" in names
    assert not [n for n in names if n.startswith(("./proc/", "./sys/", "./dev/"))], names


def test_a_failure_mid_build_leaves_no_mount_no_scratch_and_one_sentence(
        tmp_path: Path, host_dir: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(RootfsError) as failed:
        rootfs_tarball(cache / "base.tar", ["python3"], "http://mirror.invalid/debian",
                       debootstrap=fake_debootstrap(tmp_path, host_dir, 1))
    assert str(failed.value).startswith("debootstrap exited with 1")
    assert "\n" not in str(failed.value)
    no_mounts_left(tmp_path)
    assert list(cache.iterdir()) == []


def test_pack_unmounts_a_proc_mount_put_there_before_tar(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("base\n")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        pack(root, tmp_path / "out.tar")
    finally:
        rootfs.unmount_all(root)
    no_mounts_left(tmp_path)
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert set(tar.getnames()) == {".", "./etc", "./etc/hostname", "./proc"}


def test_clean_up_never_deletes_through_a_mount_it_could_not_remove(
        tmp_path: Path, host_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    (scratch / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host_dir), str(scratch / "mnt")], check=True)
    try:
        # As if umount failed: the mount stays, and the clean-up must refuse, not descend.
        monkeypatch.setattr(rootfs, "unmount_all", lambda path: mounts_under(path))
        with pytest.raises(RootfsError, match="rather than delete through a mount"):
            rootfs.remove_tree(scratch)
    finally:
        monkeypatch.undo()
        rootfs.unmount_all(scratch)
    no_mounts_left(tmp_path)
    rootfs.remove_tree(scratch)
    assert not scratch.exists()


def test_mount_points_with_spaces_are_read_back(tmp_path: Path) -> None:
    odd = tmp_path / "a dir\twith space"
    odd.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(odd)], check=True)
    try:
        assert mounts_under(tmp_path) == [Path(os.path.realpath(odd))]
    finally:
        rootfs.unmount_all(tmp_path)
    no_mounts_left(tmp_path)


def test_a_stale_engine_left_on_the_data_root_is_stopped_and_unmounted(tmp_path: Path) -> None:
    """A killed test run leaves its dockerd running (a session of its own) with the data root
    mounted: the next engine stops it and unmounts the root before starting. A process named
    like dockerd on another data root is left alone."""
    root, other = tmp_path / "engine", tmp_path / "other"
    root.mkdir()
    other.mkdir()

    shell = tmp_path / "bin" / "dockerd"  # a copy of bash: its argv[0] ends with dockerd
    shell.parent.mkdir()
    shutil.copy("/bin/bash", shell)

    def fake_dockerd(data_root: Path) -> subprocess.Popen[bytes]:
        # `; true`: bash must not exec sleep in its place (the name would change).
        return subprocess.Popen([str(shell), "-c", "sleep 60; true", "--data-root",
                                 str(data_root)], start_new_session=True)

    stale, bystander = fake_dockerd(root), fake_dockerd(other)
    try:
        subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
        stop_stale_engines(root)
        assert stale.wait(timeout=5) is not None
        assert bystander.poll() is None
        assert mounts_under(root) == []
    finally:
        for proc in (stale, bystander):
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(root)], capture_output=True)
