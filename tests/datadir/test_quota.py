"""Issue 17: each app's data directory is an ext4 image of its quota, mounted
on its tree (roost.datadir.quota): the plan as data, then real loop mounts
(root): a write past the quota is ENOSPC and what was stored stays readable,
the quota grows online, a tree that had files keeps them, release detaches."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir import quota
from roost.datadir.shared import make
from roost.servicehost.appdata import AppData
from tests.conftest import wait_until

MB = 1 << 20
UID = 1_999_999_001


def test_plan() -> None:
    assert quota.plan(16, None, 0) == "create"
    size = quota.image_bytes(16)
    assert quota.plan(16, size, 10 * MB) == "none"
    assert quota.plan(32, size, 10 * MB) == "grow"
    assert quota.plan(8, size, 4 * MB) == "none"  # smaller, fits: kept as it is
    assert quota.plan(8, size, 12 * MB) == "refuse"  # never under what is stored
    assert quota.image_bytes(1) == quota.image_bytes(quota.MIN_QUOTA_MB)
    assert quota.image_bytes(1000) > 1000 * MB  # ext4's own share on top


@pytest.fixture
def root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("needs root (loop mounts); the suite runs as root")
    top = Path(tempfile.mkdtemp(prefix="roost-quota-"))
    r = top / "appdata"
    make(r)
    try:
        yield r
    finally:
        quota.release(r)
        shutil.rmtree(top)


def _fill(path: Path, mb: int) -> int:
    """Write up to `mb` MiB (fsync'd); the errno that stopped it, or 0."""
    chunk = os.urandom(MB)
    try:
        with open(path, "wb") as fh:
            for _ in range(mb):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_a_write_past_the_quota_is_enospc_and_the_rest_stays(root: Path) -> None:
    tree = quota.ensure(root, "shop", 8, (UID, UID))
    assert os.path.ismount(tree) and tree.stat().st_uid == UID
    assert sorted(os.listdir(tree)) == []  # no lost+found: the app's files only
    (tree / "keep.txt").write_text("kept\n")
    assert _fill(tree / "big.bin", 64) in (errno.ENOSPC, errno.EDQUOT)
    assert (tree / "keep.txt").read_text() == "kept\n"
    use = quota.usage(tree)
    assert 7 * MB < use.quota_bytes < 12 * MB and use.used_bytes > 7 * MB
    # Mounting again is a no-op; another app's tree is its own file system.
    assert quota.ensure(root, "shop", 8, (UID, UID)) == tree
    other = quota.ensure(root, "blog", 8, (UID + 1, UID + 1))
    assert os.stat(other).st_dev != os.stat(tree).st_dev
    assert quota.mounted_apps(root) == ["blog", "shop"]


def test_the_quota_grows(root: Path) -> None:
    tree = quota.ensure(root, "shop", 8, (UID, UID))
    (tree / "a.txt").write_text("a\n")
    before = quota.usage(tree).quota_bytes
    quota.ensure(root, "shop", 32, (UID, UID))
    assert quota.usage(tree).quota_bytes > before + 20 * MB
    assert (tree / "a.txt").read_text() == "a\n"
    assert _fill(tree / "big.bin", 20) == 0


def test_a_tree_that_had_files_keeps_them(root: Path) -> None:
    tree = root / "shop"
    (tree / "media").mkdir(parents=True)
    (tree / "media" / "up.jpg").write_bytes(b"jpeg")
    os.chown(tree, UID, UID)
    quota.ensure(root, "shop", 8, (UID, UID))
    assert os.path.ismount(tree) and (tree / "media" / "up.jpg").read_bytes() == b"jpeg"
    assert tree.stat().st_uid == UID


def test_release_detaches_and_the_next_mount_finds_the_files(root: Path) -> None:
    tree = quota.ensure(root, "shop", 8, (UID, UID))
    (tree / "a.txt").write_text("a\n")
    quota.release(root)
    assert not os.path.ismount(tree) and not (tree / "a.txt").exists()
    quota.ensure(root, "shop", 8, (UID, UID))
    assert (tree / "a.txt").read_text() == "a\n"


def test_a_tree_held_by_a_sandbox_grows_once_released(root: Path) -> None:
    """Where online growth is refused (no CAP_SYS_RESOURCE, as in a
    container), a tree another mount namespace holds (a running sandbox) is
    left mounted at its size, not unmounted under the app, and grows at the
    next call once nothing holds it."""
    tree = quota.ensure(root, "shop", 8, (UID, UID))
    (tree / "a.txt").write_text("a\n")
    before = quota.usage(tree).quota_bytes
    holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "120"])
    try:
        wait_until(lambda: quota.held_elsewhere(tree), 10, "the holder's namespace")
        quota.ensure(root, "shop", 32, (UID, UID))
        assert os.path.ismount(tree) and (tree / "a.txt").read_text() == "a\n"
        grown_online = quota.usage(tree).quota_bytes > before + 20 * MB
    finally:
        holder.kill()
        holder.wait()
    assert not quota.held_elsewhere(tree)
    quota.ensure(root, "shop", 32, (UID, UID))
    assert quota.usage(tree).quota_bytes > before + 20 * MB, grown_online
    assert _fill(tree / "big.bin", 20) == 0


def test_the_servicehost_keeps_an_apps_own_size(root: Path) -> None:
    """A data session brings the app's own size (DataStart.data_quota_mb);
    a later call that brings none (a backup's pack) keeps it, not the
    host's ROOST_DATA_QUOTA_MB."""
    data = AppData(root, (UID, UID))
    data.quota_mb = 8
    tree = data.dir("shop", (UID, UID), 24)
    own = quota.usage(tree).quota_bytes
    assert own > 20 * MB
    assert data.dir("shop", (UID, UID)) == tree
    assert quota.usage(tree).quota_bytes == own
    data.quotas = False  # a tree an operator mounted (ROOST_APPDATA_ROOT): no quota made
    assert not os.path.ismount(data.dir("other", (UID, UID), 24))
