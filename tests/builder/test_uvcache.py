"""uv's cache in memory beside the layers (roost.builder.uvcache): seeding, saving, budget."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.builder.manager import BuildManager
from roost.builder.ramlayers import ram_dir_for, remove_ram_layers
from roost.builder.sandbox import BuildUser
from roost.builder.uvcache import UvCache
from roost.builder.workspace import Workspace
from roost.settings import Settings
from roost.wire.messages import Msg

# Not root here: uv would run as this process's own user.
OWNER = BuildUser(name="me", uid=os.geteuid(), gid=os.getegid(), dropped=False)


def _entry(cache: Path, name: str, size: int = 10) -> Path:
    p = cache / "archive-v0" / name / "pkg" / "__init__.py"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * size)
    return p


def test_seeded_from_disk_and_saved_back(tmp_path: Path) -> None:
    disk, ram = tmp_path / "disk", tmp_path / "ram"
    old = _entry(disk, "old")
    caches = UvCache.open(disk, ram, 1 << 20, OWNER)
    assert caches.in_memory and caches.path == ram
    assert (ram / old.relative_to(disk)).read_bytes() == old.read_bytes()
    new = _entry(ram, "new")  # what a build downloaded
    assert not (disk / new.relative_to(ram)).exists()
    caches.close()
    assert (disk / new.relative_to(ram)).read_bytes() == new.read_bytes()
    assert old.exists() and not caches.in_memory and caches.path == disk


def test_a_killed_builders_memory_copy_is_reused_and_a_half_seeded_one_swept(
    tmp_path: Path,
) -> None:
    disk, ram = tmp_path / "disk", tmp_path / "ram"
    _entry(disk, "on-disk")
    kept = _entry(ram, "downloaded-before-the-kill")
    half = _entry(tmp_path / "ram.seeding-12345", "cut-short")
    caches = UvCache.open(disk, ram, 1 << 20, OWNER)
    assert caches.path == ram and kept.is_file()
    assert not (ram / "archive-v0" / "on-disk").exists()  # not seeded again
    assert not half.exists() and not (tmp_path / "ram.seeding-12345").exists()


def test_too_big_or_no_budget_stays_on_disk(tmp_path: Path) -> None:
    disk, ram = tmp_path / "disk", tmp_path / "ram"
    _entry(disk, "big", size=2000)
    assert UvCache.open(disk, ram, 1000, OWNER).path == disk
    assert UvCache.open(disk, ram, 0, OWNER).path == disk
    assert UvCache.open(disk, None, 1 << 20, OWNER).path == disk
    assert not ram.exists()


def test_a_tmpfs_short_of_room_keeps_it_on_disk(tmp_path: Path) -> None:
    """A real 4 MiB tmpfs: below the free room a cache must leave (we are root in tests)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        disk = tmp_path / "disk"
        _entry(disk, "small")
        caches = UvCache.open(disk, mnt / "uv-cache", 1 << 30, OWNER)
        assert caches.path == disk and not (mnt / "uv-cache").exists()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_outgrown_cache_is_saved_and_dropped(tmp_path: Path) -> None:
    disk, ram = tmp_path / "disk", tmp_path / "ram"
    disk.mkdir()
    caches = UvCache.open(disk, ram, 1000, OWNER)
    assert caches.in_memory and not caches.over_budget()
    grown = _entry(ram, "grown", size=2000)
    assert caches.over_budget()
    detached = caches.detach()
    assert detached == ram and caches.path == disk  # builds from now on: the disk
    caches.retire(detached)
    assert not ram.exists() and (disk / grown.relative_to(ram)).stat().st_size == 2000


@pytest.fixture
def fresh_root() -> Iterator[Path]:
    """A builder directory of its own (world-searchable, for the build user)."""
    base = Path(tempfile.mkdtemp(prefix="roost-uvcache-test-"))
    os.chmod(base, 0o755)
    yield base / "builder"
    remove_ram_layers(Path(Settings().builder_ram_dir), base / "builder")
    shutil.rmtree(base, ignore_errors=True)


async def test_a_builder_uses_the_memory_copy_and_keeps_the_disk_one(fresh_root: Path) -> None:
    seeded = _entry(fresh_root / "uv-cache", "seeded")
    ws = await Workspace.open(fresh_root, Settings())
    ram = ram_dir_for(Path(ws.settings.builder_ram_dir), fresh_root)
    assert ws.ram_layers is not None, "this machine has /dev/shm: layers go to memory"
    assert ws.uv_cache == ram / "uv-cache" and ws.uv_cache.stat().st_uid == ws.user.uid
    assert not ws.uv_cache.stat().st_mode & 0o077
    assert (ws.uv_cache / seeded.relative_to(fresh_root / "uv-cache")).is_file()
    new = _entry(ws.uv_cache, "downloaded")
    ws.close()  # the builder stopping: saved, memory given back
    assert not ram.exists()
    assert (fresh_root / "uv-cache" / new.relative_to(ram / "uv-cache")).is_file()


async def test_manager_moves_an_outgrown_cache_back_to_disk(fresh_root: Path) -> None:
    ws = await Workspace.open(fresh_root, Settings(builder_uv_cache_ram=1000))
    assert ws.uv_caches.in_memory

    async def send(msg: Msg) -> None:
        raise AssertionError("no build runs here")

    manager = BuildManager(ws, send)
    await manager.trim_uv_cache()
    assert ws.uv_caches.in_memory  # within its budget: stays
    grown = _entry(ws.uv_cache, "grown", size=2000)
    manager.running.add("b1")  # a build running: never moved under it
    await manager.trim_uv_cache()
    assert ws.uv_caches.in_memory
    manager.running.clear()
    await manager.trim_uv_cache()
    assert ws.uv_cache == fresh_root / "uv-cache" and not grown.exists()
    assert (ws.uv_cache / "archive-v0" / "grown" / "pkg" / "__init__.py").stat().st_size == 2000
    ws.close()
