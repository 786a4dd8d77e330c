"""Issue 17: a data restore replaces the live tree's files in place
(roost.datadir.swap), so instances bound to it see them at once and a tree
that is a file system of its own (a quota) can be restored at all; the old
files are kept, the restored ones are the app's; a retry keeps the first
try's copy of the originals."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.datadir import quota
from roost.datadir.shared import make
from roost.datadir.swap import carry_over, replace_contents

UID = 1_999_999_101


@pytest.fixture
def root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("needs root (another user, loop mounts); the suite runs as root")
    top = Path(tempfile.mkdtemp(prefix="roost-swap-"))
    os.chmod(top, 0o700)  # closed to the app's user: it must not need to walk here
    r = top / "appdata"
    make(r)
    try:
        yield r
    finally:
        quota.release(r)
        shutil.rmtree(top)


def _staging(root: Path) -> Path:
    staging = root / ".restore-shop-1"
    (staging / "media").mkdir(parents=True)
    (staging / "media" / "a.jpg").write_bytes(b"restored")
    (staging / "top.txt").write_text("restored top\n")
    return staging


def _check(live: Path, kept: Path) -> None:
    assert sorted(os.listdir(live)) == ["media", "top.txt"]  # old.txt gone
    assert (live / "media" / "a.jpg").read_bytes() == b"restored"
    assert {p.stat().st_uid for p in (live, live / "media", live / "top.txt")} == {UID}
    assert (kept / "old.txt").read_text() == "before\n"


@pytest.mark.parametrize("with_quota", [False, True])
def test_a_restore_replaces_the_files_in_place(root: Path, with_quota: bool) -> None:
    live = quota.ensure(root, "shop", 8, (UID, UID)) if with_quota else root / "shop"
    live.mkdir(mode=0o700, exist_ok=True)
    os.chown(live, UID, UID)
    (live / "old.txt").write_text("before\n")
    os.chown(live / "old.txt", UID, UID)
    (live / "elsewhere").symlink_to("/etc")  # the app's own link: copied as a link
    held = os.open(live, os.O_RDONLY)  # a running instance's view of the tree
    try:
        kept = root.parent / "kept" / "data-1"
        replace_contents(live, _staging(root), kept)
        _check(live, kept)
        assert (kept / "elsewhere").is_symlink()
        assert os.fstat(held).st_ino == live.stat().st_ino  # the same tree, not a new one
        assert os.path.ismount(live) == with_quota
        # A retry (the servicehost died after step 1) keeps the originals.
        replace_contents(live, _staging_again(root), kept)
        _check(live, kept)
    finally:
        os.close(held)


def _staging_again(root: Path) -> Path:
    shutil.rmtree(root / ".restore-shop-1", ignore_errors=True)
    return _staging(root)


def test_a_runners_pulled_copy_joins_the_live_tree(root: Path) -> None:
    # Before the live tree a runner held a copy the app wrote to: those files
    # join the tree (as the app's user, through DATA closed to it), none
    # replaces one already there, and the copy is set aside.
    old = root.parent / "runner" / "apps" / "shop" / "data"
    (old / "media").mkdir(parents=True)
    (old / "media" / "upload.jpg").write_bytes(b"written on the runner")
    (old / "same.txt").write_text("runner's\n")
    live = root / "shop"
    live.mkdir(mode=0o700)
    (live / "same.txt").write_text("live\n")
    for p in (old, old / "media", old / "media" / "upload.jpg", old / "same.txt", live,
              live / "same.txt"):  # fmt: skip
        os.chown(p, UID, UID)
    os.chmod(root.parent / "runner", 0o700)
    assert carry_over(old, live, (UID, UID))
    assert (live / "media" / "upload.jpg").read_bytes() == b"written on the runner"
    assert (live / "same.txt").read_text() == "live\n"
    assert (live / "media" / "upload.jpg").stat().st_uid == UID
    assert not old.exists() and (old.parent / "data.pre-live" / "same.txt").exists()
    assert not carry_over(old, live, (UID, UID))  # once
