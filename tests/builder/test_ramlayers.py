"""Dependency layers in memory (roost.builder.ramlayers): placement, budget, sweeping."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.builder.layers import prune_layers
from roost.builder.ramlayers import (
    is_tmpfs,
    open_ram_layers,
    ram_dir_for,
    remove_ram_layers,
    sweep_orphans,
)
from roost.builder.workspace import Workspace

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
tmpfs /run/user/0 tmpfs rw 0 0
/dev/vdb /dev/shm/disk ext4 rw 0 0
"""


def test_tmpfs_is_told_by_the_longest_mount_point() -> None:
    assert is_tmpfs(Path("/dev/shm"), MOUNTS)
    assert is_tmpfs(Path("/dev/shm/x/y"), MOUNTS)
    assert not is_tmpfs(Path("/dev/shm/disk/x"), MOUNTS)  # a disk mounted inside
    assert not is_tmpfs(Path("/dev/shmx"), MOUNTS)  # a prefix of the name is not inside
    assert not is_tmpfs(Path("/var/tmp"), MOUNTS)


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A small private tmpfs (we are root on test machines): a real one, bounded."""
    d = Path(tempfile.mkdtemp(prefix="roost-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=True)
        d.rmdir()


def test_orphans_are_swept_and_live_owners_kept(tmpfs: Path, tmp_path: Path) -> None:
    live, gone = tmp_path / "live", tmp_path / "gone"
    live.mkdir()
    gone.mkdir()
    a = open_ram_layers(tmpfs, live, 1 << 20)
    b = open_ram_layers(tmpfs, gone, 1 << 20)
    assert a is not None and b is not None and a != b
    (b / "somelayer").mkdir()
    gone.rmdir()
    assert sweep_orphans(tmpfs) == 1
    assert a.is_dir() and not ram_dir_for(tmpfs, gone).exists()
    remove_ram_layers(tmpfs, live)
    assert not ram_dir_for(tmpfs, live).exists()


def test_a_planted_symlink_is_never_used(tmpfs: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(target, ram_dir_for(tmpfs, tmp_path))
    assert open_ram_layers(tmpfs, tmp_path, 1 << 20) is None
    assert list(target.iterdir()) == []


def test_no_tmpfs_or_no_budget_means_disk(tmp_path: Path) -> None:
    assert open_ram_layers(tmp_path, tmp_path / "root", 1 << 30) is None  # not a tmpfs
    assert open_ram_layers(Path("/dev/shm"), tmp_path / "root", 0) is None


def _ready(path: Path, size: int, age: float) -> None:
    path.mkdir(parents=True)
    (path / "ready").write_text(json.dumps({"format": 2, "digest": "sha256:" + "0" * 64,
                                            "size": size}))  # fmt: skip
    t = time.time() - age
    os.utime(path / "ready", (t, t))


async def test_prune_keeps_memory_layers_within_their_byte_budget(ws: Workspace) -> None:
    assert ws.ram_layers is not None, "this machine has /dev/shm: layers go to memory"
    budget = dataclasses.replace(ws.settings, builder_layers_ram=250, builder_layers_kept=10)
    small = dataclasses.replace(ws, settings=budget)
    names = [f"prunetest{i}" for i in range(4)]
    try:
        for i, name in enumerate(names):  # prunetest0 is the most recent
            _ready(ws.ram_layers / name, 100, age=1000 + i)
        _ready(ws.disk_layers / "prunetest-disk", 10_000, age=5000)  # disk: count only
        ws.layers_in_use["prunetest3"] = 1  # the oldest, but a build uses it
        removed = prune_layers(small, keep=10)
        assert sorted(k for k in removed if k.startswith("prunetest")) == ["prunetest2"]
        assert (ws.disk_layers / "prunetest-disk").exists()
    finally:
        ws.layers_in_use.pop("prunetest3", None)
        for p in [*(ws.ram_layers / n for n in names), ws.disk_layers / "prunetest-disk"]:
            subprocess.run(["rm", "-rf", str(p)], check=True)


async def test_a_full_tmpfs_sends_new_layers_to_disk(ws: Workspace, tmpfs: Path) -> None:
    settings = dataclasses.replace(ws.settings, builder_ram_dir=str(tmpfs))
    ram = open_ram_layers(tmpfs, ws.root, settings.builder_layers_ram)
    assert ram is not None
    tight = dataclasses.replace(ws, settings=settings, ram_layers=ram)
    # 4 MiB of tmpfs is below the room a layer needs: this layer goes to disk,
    assert tight.layer_path("newkey") == ws.disk_layers / "newkey"
    # and one already in memory stays where it is.
    (ram / "oldkey").mkdir()
    assert tight.layer_path("oldkey") == ram / "oldkey"
    tight.close()
    assert not ram.exists()
