"""Issue 17: each app's data directory is an ext4 image of its quota, mounted
on its tree (roost.datadir.quota): the plan as data, then real loop mounts
(root): a write past the quota is ENOSPC and what was stored stays readable,
the quota grows online, a tree that had files keeps them, release detaches."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from roost.datadir import quota
from roost.datadir.shared import make
from roost.servicehost.appdata import AppData
from roost.tenant.identity import Identity
from roost.tenant.sandbox import SandboxSpec, bwrap_argv, system_links
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


def _grow_offline(root: Path, app: str, quota_mb: int) -> str:
    """`quota.ensure` in a process without CAP_SYS_RESOURCE (as in a
    container), so that growing is offline wherever the test runs; its log."""
    code = (
        "import sys; from pathlib import Path; from roost.datadir import quota; "
        "quota.ensure(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), None)"
    )
    cmd = ["setpriv", "--bounding-set=-sys_resource", "--", sys.executable, "-c", code]
    cmd += [str(root), app, str(quota_mb)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    return r.stderr


def _device(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def _mounts_of(pid: int, dev: str) -> set[str]:
    """The ids of the mounts of `dev` in `pid`'s mount namespace (none while
    it has not left ours yet)."""
    if os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
        return set()
    with open(f"/proc/{pid}/mountinfo") as fh:
        return {f[0] for f in (line.split(" ") for line in fh) if f[2] == dev}


def _has(pid: int, dev: str) -> bool:
    return bool(_mounts_of(pid, dev))


def test_a_copy_in_a_namespace_made_later_does_not_stop_the_growth(root: Path) -> None:
    """A namespace made after the tree was mounted (`ip netns exec`, a
    systemd service with PrivateTmp: slave propagation) holds a copy of it:
    our unmount takes the copy along, so the tree grows offline. A copy with
    a file open in it does hold the tree: it is not grown, and says so."""
    tree = quota.ensure(root, "shop", 8, (UID, UID))
    (tree / "a.txt").write_text("a\n")
    dev = _device(tree)
    before = quota.usage(tree).quota_bytes
    copy = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "sleep", "60"])
    try:
        wait_until(lambda: _has(copy.pid, dev), 10, "the namespace's copy of the tree")
        assert not quota.held_elsewhere(tree)
        _grow_offline(root, "shop", 32)
        assert quota.usage(tree).quota_bytes > before + 20 * MB
        assert (tree / "a.txt").read_text() == "a\n"
        # Its copy went with our unmount (mount ids are reused: not compared);
        # our mount again reached it anew, grown.
        seen = os.statvfs(f"/proc/{copy.pid}/root{tree}")
        assert seen.f_blocks * seen.f_frsize == quota.usage(tree).quota_bytes
        assert not quota.held_elsewhere(tree)
    finally:
        copy.kill()
        copy.wait()
    grown = quota.usage(tree).quota_bytes
    script = f"exec 3< {tree / 'a.txt'}; exec sleep 60"
    busy = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "sh", "-c", script])
    try:
        dev = _device(tree)
        wait_until(lambda: _has(busy.pid, dev), 10, "the busy namespace's copy")
        wait_until(lambda: os.path.exists(f"/proc/{busy.pid}/fd/3"), 10, "the open file")
        said = _grow_offline(root, "shop", 64)
        assert "the quota grows later" in said and "in use" in said, said
        assert os.path.ismount(tree) and quota.usage(tree).quota_bytes == grown
        assert (tree / "a.txt").read_text() == "a\n" and _has(busy.pid, dev)
    finally:
        busy.kill()
        busy.wait()
    _grow_offline(root, "shop", 64)
    assert quota.usage(tree).quota_bytes > grown + 20 * MB


def test_a_sandbox_holds_its_tree_and_sees_no_tree_mounted_later(root: Path) -> None:
    """A real bubblewrap sandbox (roost.tenant.sandbox) binds its app's tree
    at the same path: that bind holds the tree (not grown under it), and a
    tree mounted afterwards for another app does not appear inside it (its
    bind is a slave of its own tree only; nothing in it receives ROOT's
    mounts), nor does the sandbox hold that other tree."""
    tree = quota.ensure(root, "shop", 8, (UID, UID))
    (tree / "a.txt").write_text("a\n")
    spec = SandboxSpec(cwd=tree, writable=(tree,))
    argv = bwrap_argv(spec, Identity("shop", UID, UID), ["sleep", "60"], host_links=system_links())
    bwrap = subprocess.Popen(argv)
    try:
        inner = cast(int, wait_until(lambda: _sandboxed(bwrap.pid), 10, "the sandbox"))
        assert _has(inner, _device(tree))
        other = quota.ensure(root, "blog", 8, (UID + 1, UID + 1))
        assert not _has(inner, _device(other))
        with open(f"/proc/{inner}/mountinfo") as fh:
            assert str(other) not in fh.read()
        assert quota.held_elsewhere(tree) and not quota.held_elsewhere(other)
        before = quota.usage(tree).quota_bytes
        said = _grow_offline(root, "shop", 32)
        assert "in use by running processes" in said, said
        assert quota.usage(tree).quota_bytes == before
        assert (tree / "a.txt").read_text() == "a\n"
        other_before = quota.usage(other).quota_bytes
        _grow_offline(root, "blog", 32)
        assert quota.usage(other).quota_bytes > other_before + 20 * MB
        assert not _has(inner, _device(other))
    finally:
        bwrap.kill()
        bwrap.wait()


def _sandboxed(pid: int) -> int:
    """The process under `pid` that runs in a mount namespace of its own (0: none yet)."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            if p != pid and os.readlink(f"/proc/{p}/ns/mnt") != os.readlink("/proc/self/ns/mnt"):
                with open(f"/proc/{p}/comm") as fh:
                    if fh.read().strip() == "sleep":
                        return p
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except OSError:
            continue
    return 0


def test_a_plain_tree_beside_trees_with_quotas_is_archived(root: Path) -> None:
    """ROOT bound on itself (an app with a quota of its own, the host's 0):
    a plain tree of another app is archived out of it all the same (copied:
    rename(2) does not cross ROOT's mount), with its owner and files."""
    data = AppData(root, (UID, UID), archive=root.parent / "archive")
    data.dir("sized", (UID, UID), 8)
    plain = data.dir("plain", (UID, UID))
    assert not os.path.ismount(plain)
    (plain / "f.txt").write_text("f\n")
    moved = data.removed("plain", "1-2", time.time())
    assert moved is not None and not plain.exists()
    assert (moved / "f.txt").read_text() == "f\n" and moved.stat().st_uid == UID
    assert not list(moved.parent.glob("*.partial"))
