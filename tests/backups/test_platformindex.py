"""What a platform snapshot says a restore needs (restore.json): written from
the controller's answer, read back by the backup (which images) and the
restore (which keys) without reading the state copy's tables; a snapshot
taken before restore.json still restores its apps' keys from its state copy;
a bad index is a clear error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from roost.backups import platformrestore as pr
from roost.backups.images import ImagesError, index_digests
from roost.backups.platformindex import (
    INDEX_FILE,
    PlatformIndexError,
    app_keys,
    index_file,
    read_index,
)
from roost.wire.messages import PlatformSnapshot
from tests.releases import digest as d


def _state_copy(path: Path, apps: list[tuple[int, str, float]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE apps (id INTEGER, name TEXT, created_at REAL)")
        db.executemany("INSERT INTO apps VALUES (?, ?, ?)", apps)


def _tree(tmp: Path, snap: PlatformSnapshot) -> Path:
    """The platform tree backupd stages from `snap` (as staging.py writes it)."""
    index = index_file(snap)
    root = tmp / "platform"
    root.mkdir()
    _state_copy(root / "state.sqlite", [(9, "old", 1.0)])  # what the tables say: not read
    if index is not None:
        (root / INDEX_FILE).write_bytes(index)
    return root


def test_the_controllers_answer_is_what_the_backup_and_the_restore_read(tmp_path: Path) -> None:
    snap = PlatformSnapshot(
        app_keys={"shop": "1-1700000000000", "blog": "2-1700000001000"},
        images=[d("1"), d("e")],
    )
    root = _tree(tmp_path, snap)
    index = read_index(root)
    assert index is not None and index.images == [d("1"), d("e")]
    assert (
        app_keys(root)
        == pr.read_apps(root)
        == {"blog": "2-1700000001000", "shop": "1-1700000000000"}
    )
    assert index_digests(root) == [d("1"), d("e")]


def test_a_platform_without_apps_says_so_with_an_empty_index(tmp_path: Path) -> None:
    root = _tree(tmp_path, PlatformSnapshot(app_keys={}, images=[]))
    assert app_keys(root) == {} and index_digests(root) == []


def test_an_older_controllers_snapshot_has_its_keys_from_its_state_copy(tmp_path: Path) -> None:
    old = PlatformSnapshot(files={"state.sqlite": b"x"})  # a controller before the index
    assert index_file(old) is None
    root = _tree(tmp_path, old)
    assert read_index(root) is None
    assert app_keys(root) == {"old": "9-1000"}  # as AppRow.key derives it
    assert index_digests(root) is None  # its backup carried no image


def test_a_cluster_state_stages_no_image(tmp_path: Path) -> None:
    root = _tree(tmp_path, PlatformSnapshot(app_keys={}, images=[d("1")]))
    (root / "state.sqlite").unlink()  # a state.pgdump instead: `roost restore` refuses it
    assert index_digests(root) is None


def test_a_bad_index_is_a_clear_error(tmp_path: Path) -> None:
    root = _tree(tmp_path, PlatformSnapshot(app_keys={}, images=["sha256:nothex"]))
    with pytest.raises(ImagesError, match="the controller named image 'sha256:nothex'"):
        index_digests(root)
    (root / INDEX_FILE).write_text('{"app_keys": []}')
    with pytest.raises(PlatformIndexError, match="holds no app_keys object and images list"):
        read_index(root)
    with pytest.raises(pr.RestoreError, match="does not say which apps it holds"):
        pr.read_apps(root)
    (root / INDEX_FILE).write_text("{not json")
    with pytest.raises(ImagesError, match="does not say which images serve"):
        index_digests(root)
