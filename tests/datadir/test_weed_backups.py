"""Backups read an app's tree from the cluster's SeaweedFS mount and restore
into it (issue 17): the servicehost's own code (AppData, pack_tree, and
the in-place restore of roost.datadir.swap) on a real mount whose app tree
is another user's, 0700, as in a cluster. Root packs it through FUSE (the
kernel's permission checks let root in, as on a plain tree); a restore
puts the backup's files in place, as the app's user, the old ones kept."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir import swap
from roost.servicehost.appdata import AppData, pack_tree
from tests.datadir.seaweedkit import Cluster, seaweed_cluster, write_fsync

pytestmark = pytest.mark.e2e

APP_OWNER = (54_321, 54_321)  # an app's uid/gid (no name needed)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.fail("needs root and /dev/fuse (FUSE mounts); the suite runs as root")
    (tmp_path / "weed").mkdir()
    with seaweed_cluster(tmp_path / "weed") as c:
        yield c


def test_a_data_backup_reads_the_tree_and_a_restore_replaces_it_in_place(
    cluster: Cluster, tmp_path: Path
) -> None:
    root = cluster.mount("appdata")
    data = AppData(root, archive=tmp_path / "archive")
    data.create()
    tree = data.dir("shop", APP_OWNER)
    assert tree.stat().st_uid == APP_OWNER[0] and (tree.stat().st_mode & 0o777) == 0o700
    (tree / "media").mkdir()
    write_fsync(tree / "media" / "up.jpg", b"jpeg")
    write_fsync(tree / "notes.txt", b"v1")
    for p in (tree / "media", tree / "media" / "up.jpg", tree / "notes.txt"):
        os.chown(p, *APP_OWNER)

    packed = data.archive("shop")
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert got == {"media/up.jpg": b"jpeg", "notes.txt": b"v1"}

    # The tree changes, then the backup is restored into it in place.
    write_fsync(tree / "notes.txt", b"v2, after the backup")
    inode = tree.stat().st_ino
    staging = root / ".restore-shop-r1"  # where the servicehost stages it (restores.py)
    staging.mkdir()
    with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
        tar.extractall(staging, filter="data")
    swap.replace_contents(tree, staging, tmp_path / "kept")
    assert tree.stat().st_ino == inode  # the same tree: running instances bind it
    assert (tree / "notes.txt").read_bytes() == b"v1"
    assert (tree / "media" / "up.jpg").read_bytes() == b"jpeg"
    assert (tree / "notes.txt").stat().st_uid == APP_OWNER[0]
    assert (tmp_path / "kept" / "notes.txt").read_bytes() == b"v2, after the backup"
    # Another mount (another host) sees the restored files.
    other = cluster.mount("elsewhere")
    assert pack_tree(other / "shop") == pack_tree(tree)
