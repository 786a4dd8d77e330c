"""Where `roost up` keeps its data, and refusing a place its users cannot reach."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from roost.cli.datadir import (
    SYSTEM_DATA,
    USER_DATA,
    closed_parent,
    default_data_dir,
    make_parents,
    older_local_dir,
)
from roost.cli.main import cli

DIR = stat.S_IFDIR


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory every user can walk through (pytest's own are root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="roost-datadir-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_root_keeps_its_data_in_var_lib_anyone_else_here() -> None:
    assert default_data_dir(0, {}) == SYSTEM_DATA == Path("/var/lib/roost")
    assert default_data_dir(1000, {}) == USER_DATA == Path(".roost")
    assert default_data_dir(0, {"ROOST_DATA": "/srv/roost"}) == Path("/srv/roost")
    assert default_data_dir(1000, {"ROOST_DATA": ""}) == USER_DATA


def test_the_topmost_closed_directory_is_named() -> None:
    modes = {
        Path("/"): DIR | 0o755,
        Path("/root"): DIR | 0o700,
        Path("/root/src"): DIR | 0o700,
        Path("/root/src/roost"): DIR | 0o755,
    }
    assert closed_parent(Path("/root/src/roost/.roost"), modes.get) == Path("/root")
    # The data directory itself does not count (roost up makes it 0711); a
    # directory yet to be made will be searchable.
    assert closed_parent(Path("/srv/new/data"), {Path("/"): DIR | 0o755}.get) is None
    assert closed_parent(Path("/root"), modes.get) is None
    modes[Path("/root")] = DIR | 0o701
    assert closed_parent(Path("/root/src/roost/.roost"), modes.get) == Path("/root/src")


def test_parents_are_made_searchable_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        make_parents(tmp_path / "a" / "b" / "data")
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert not (tmp_path / "a" / "b" / "data").exists()


def test_an_older_local_data_directory_is_pointed_out(tmp_path: Path) -> None:
    chosen = tmp_path / "var" / "lib" / "roost"
    assert older_local_dir(tmp_path, chosen) is None
    (tmp_path / ".roost").mkdir()
    (tmp_path / ".roost" / "cluster.json").write_text("{}")
    assert older_local_dir(tmp_path, chosen) == tmp_path / ".roost"
    # Not when it is the one in use, nor once the new one has a platform.
    assert older_local_dir(tmp_path, tmp_path / ".roost") is None
    chosen.mkdir(parents=True)
    (chosen / "cluster.json").write_text("{}")
    assert older_local_dir(tmp_path, chosen) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops to the build and service users")
def test_up_refuses_at_once_a_data_directory_its_users_cannot_reach(open_tmp: Path) -> None:
    tmp_path = open_tmp
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)
    data = home / "checkout" / ".roost"
    # `roost up --data DIR` is accepted (as the README says) and wins over `roost --data`.
    r = CliRunner().invoke(cli, ["--data", str(tmp_path / "x"), "up", "--data", str(data)])
    assert r.exit_code == 1, r.output
    assert f"cannot reach the data directory {data}" in r.output
    assert f"chmod o+x {home}" in r.output and "--data /var/lib/roost" in r.output
    assert not (home / "checkout").exists() and not (tmp_path / "x").exists()
    # The global option works as before.
    r = CliRunner().invoke(cli, ["--data", str(data), "up"])
    assert r.exit_code == 1 and f"cannot reach the data directory {data}" in r.output
