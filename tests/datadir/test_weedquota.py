"""An app's use under its quota in the shared tree: the bytes of its files
(what `-df.logical` counts), links not followed."""

from __future__ import annotations

import os
from pathlib import Path

from roost.datadir.weedquota import tree_bytes


def test_the_files_sizes_counted_links_and_directories_not(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.jpg").write_bytes(b"x" * 1000)
    (tmp_path / "notes.txt").write_bytes(b"y" * 24)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"z" * 10_000)
    os.symlink(outside / "big", tmp_path / "link")
    os.symlink(outside, tmp_path / "dirlink")
    assert tree_bytes(tmp_path) == 1024
    assert tree_bytes(tmp_path / "missing") == 0
