"""The runner (root) gives an app's data directory to the app's user before
each start, while the app's other instances may be changing that tree. A
tenant that swaps a directory for a link between the walk listing it and
the chown of what is in it must not get the link's target changed: a
chown through /etc or another app's data would hand host files to the app.

The swap is made deterministic: the walk is wrapped so that, as it reaches
the directory `d`, `d` is renamed away and a link to the victim directory
takes its name (what a tenant's tight rename loop wins sooner or later).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.runner import confine
from roost.tenant.identity import Identity

APP = Identity(name="roost-app-shop", uid=61234, gid=61234)


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, victim = tmp_path / "data", tmp_path / "victim"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("the app's")
    victim.mkdir()
    (victim / "f").write_text("not the app's")
    return root, victim


def swapping(real: Any, root: Path, victim: Path) -> Any:
    def walk(*args: Any, **kwargs: Any) -> Iterator[Any]:
        for entry in real(*args, **kwargs):
            if str(entry[0]) == str(root / "d"):
                os.rename(root / "d", root / "d.moved")
                os.symlink(victim, root / "d")
            yield entry

    return walk


def test_a_directory_swapped_for_a_link_mid_walk_changes_nothing_outside(
    tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, victim = tree
    monkeypatch.setattr(os, "walk", swapping(os.walk, root, victim))
    monkeypatch.setattr(os, "fwalk", swapping(os.fwalk, root, victim))
    confine.give_tree(APP, root)
    assert os.stat(victim / "f").st_uid == 0  # the link's target is untouched
    assert os.stat(victim).st_uid == 0
    assert os.stat(root / "d.moved" / "f").st_uid == APP.uid  # the app's file is the app's


def test_the_whole_tree_becomes_the_apps_links_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    outside.write_text("host file")
    (root / "link").symlink_to(outside)
    (root / "a" / "dirlink").symlink_to(tmp_path)
    confine.give_tree(APP, root)
    for p in (root / "a", root / "a" / "b", root / "a" / "b" / "f", root / "link"):
        st = os.lstat(p)
        assert (st.st_uid, st.st_gid) == (APP.uid, APP.gid), p
    assert os.stat(outside).st_uid == 0
    assert os.stat(tmp_path).st_uid == 0
