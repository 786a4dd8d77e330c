"""Issue 17: a runner binds the live tree when this host reaches the
servicehost's (its marker), else keeps its pulled copy; once live, for good."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.datadir.shared import MARKER, BadAppName, app_tree, mark, serves_here
from roost.runner.confine import prepare_dirs
from roost.runner.layout import Layout
from roost.tenant.identity import Identity


def test_the_live_tree_once_its_marker_is_seen(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    layout = Layout(tmp_path / "data", root)
    assert layout.data_directory("shop") == layout.app_home("shop") / "data"
    root.mkdir()
    mark(root)
    assert layout.data_directory("shop") == root / "shop"
    (root / MARKER).unlink()  # a mount gone away: writes must not go elsewhere
    assert layout.data_directory("shop") == root / "shop"


def test_a_runner_beside_its_servicehost_makes_the_tree(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert not serves_here(data)
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "servicehost.key_secret").write_text("k")
    assert serves_here(data) and not serves_here(data, "/mnt/shared")
    root = data / "servicehost" / "appdata"
    layout = Layout(data, root, own_tree=True)
    assert (root / MARKER).is_file() and root.stat().st_mode & 0o777 == 0o711
    assert layout.data_directory("shop") == root / "shop"


def test_app_names_are_one_plain_component(tmp_path: Path) -> None:
    for bad in ("..", "a/b", "", "A", "x" * 49):
        with pytest.raises(BadAppName):
            app_tree(tmp_path, bad)


def test_an_apps_files_on_this_runner_join_its_live_tree(tmp_path: Path) -> None:
    # Upgraded to the live tree: what the app wrote into this runner's pulled
    # copy (never copied back before) joins the tree before it is bound.
    if os.geteuid() != 0:
        pytest.fail("needs root (the app's own user); the suite runs as root")
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "servicehost.key_secret").write_text("k")
    layout = Layout(data, data / "servicehost" / "appdata", own_tree=True)
    ident = Identity(name="a7-shop", uid=1_999_999_201, gid=1_999_999_201)
    pulled = layout.app_home("shop") / "data"
    pulled.mkdir(parents=True)
    (pulled / "upload.jpg").write_bytes(b"from an instance")
    os.chown(pulled / "upload.jpg", ident.uid, ident.gid)
    prepare_dirs(ident, layout, "shop", bundle_dir=None)
    live = layout.data_directory("shop")
    assert (live / "upload.jpg").read_bytes() == b"from an instance"
    assert not pulled.exists() and live.stat().st_uid == ident.uid
