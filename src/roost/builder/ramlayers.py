"""Dependency layers in memory: a tmpfs directory per builder, bounded, swept.

Why: installing a dependency layer is tens of thousands of metadata
operations (a venv of 15 packages is ~2,900 directories and ~5,500 files).
On a disk those are journal-bound: on the shared VMs Roost was measured on,
one mkdir took 0.5 ms and the same `uv pip sync` took anywhere from 0.2 to
1.5 s depending on what else the disk was doing. In tmpfs the same install
took 0.24 s, steadily, copying from a uv cache on disk; 0.08 s hard-linking
from a uv cache in the same tmpfs, which is where roost.builder.uvcache
puts it. Layers are a cache: the blob in the image store is what
images name, and a lost layer directory is rebuilt from the uv cache.

So when `settings.builder_layers_ram` is above zero and the configured
directory (`/dev/shm` by default) is a tmpfs, a builder keeps its layers in
`<ram dir>/roost-layers-<hash of the builder's data dir>/layers/`; the byte budget
is enforced by `prune_layers` after each build, and a layer is installed on
disk instead (`DATA/builder/layers`) when the tmpfs is short of room.

Life cycle: the directory belongs to one builder data directory (its path is
written in `owner` beside `layers/`). A builder removes it when it stops (memory is not a
cache that should outlive the service), and any `Workspace.open` sweeps the
directories whose owner no longer exists (a builder killed, a test's data dir
deleted), so nothing piles up in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
from pathlib import Path

log = logging.getLogger("roost.builder")

PREFIX = "roost-layers-"
OWNER = "owner"
# Below this much free tmpfs space a new layer goes to disk instead.
MIN_FREE_BYTES = 1 << 30


def is_tmpfs(path: Path, mounts: str | None = None) -> bool:
    """Whether `path` lies on a tmpfs mount (the longest matching mount point wins)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return False
    try:
        target = str(path.resolve())
    except OSError:
        return False
    best, fstype = "", ""
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, parts[2]
    return fstype == "tmpfs"


def ram_dir_for(ram_base: Path, root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return ram_base / f"{PREFIX}{key}"


def _ours(path: Path) -> bool:
    """A real directory (not a symlink) owned by this process's user: safe to use or remove."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def sweep_orphans(ram_base: Path) -> int:
    """Remove layer directories whose builder data directory is gone."""
    removed = 0
    try:
        entries = list(ram_base.iterdir())
    except OSError:
        return 0
    for d in entries:
        if not d.name.startswith(PREFIX) or not _ours(d):
            continue
        try:
            owner = (d / OWNER).read_text().strip()
        except OSError:
            owner = ""
        if owner and Path(owner).exists():
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed


def open_ram_layers(ram_base: Path, root: Path, budget: int) -> Path | None:
    """The tmpfs layers directory for builder `root`, or None (disk layers then)."""
    if budget <= 0 or not is_tmpfs(ram_base):
        return None
    if n := sweep_orphans(ram_base):
        log.info("removed %d in-memory layer directories of builders that are gone", n)
    d = ram_dir_for(ram_base, root)
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o755)
    if not _ours(d):
        # Someone else's (or a symlink planted in a world-writable /dev/shm): never use it.
        log.warning("%s is not a directory of ours: dependency layers stay on disk", d)
        return None
    os.chmod(d, 0o755)
    (d / OWNER).write_text(str(root.resolve()))
    layers = d / "layers"
    layers.mkdir(exist_ok=True)
    os.chmod(layers, 0o755)  # the build user enters it (the umask is 077)
    return layers


def remove_ram_layers(ram_base: Path, root: Path) -> None:
    """Give the memory back (a builder stopping; a test's teardown)."""
    d = ram_dir_for(ram_base, root)
    if _ours(d):
        shutil.rmtree(d, ignore_errors=True)


def has_room(path: Path, needed: int = MIN_FREE_BYTES) -> bool:
    try:
        return shutil.disk_usage(path).free >= needed
    except OSError:
        return False
