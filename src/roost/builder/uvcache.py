"""uv's shared cache, kept in memory beside the in-memory layers, saved on disk.

Why: a dependency layer installed from a cache on another filesystem is a
copy of every file (uv's `--link-mode=copy`); from a cache on the same
tmpfs it is hard links. Measured on the 15-requirement sample app (a layer of
~5,600 files, 83 MB packed): 0.23 s copying, 0.08 s linking, from the same
warm cache.
So when the layers are in a tmpfs (roost.builder.ramlayers), uv's cache
goes there too, as `<ram dir>/roost-layers-<hash>/uv-cache`.

The cache is worth keeping across restarts (a builder that lost it
downloads everything again, and cannot build at all while PyPI is
unreachable), and a tmpfs is not: so `DATA/builder/uv-cache` stays the
lasting copy. Opening seeds the memory copy from it (into a staging name,
renamed when whole); closing (a builder stopping) saves what is new back to
it before the memory is given back. A builder killed outright leaves its
memory copy behind, and the next start uses it (after a reboot, the disk
copy): at worst what it downloaded since it started is lost, which is a
cache's loss, not data.

Budget: the memory copy is used only while it stays within
`settings.builder_uv_cache_ram` bytes. Too big already on disk: it stays
there. Grown past the budget: once no build is running, the builder
switches back to the disk copy for good (until its next start) and saves and
drops the memory copy (`detach`, `retire`), since uv cannot be told to use two
caches.

Hard links make layer files and cache files one inode each. Both belong to
the build user, who could already write the cache, so the trust model is
unchanged (see roost.builder.layers).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from roost.builder.ramlayers import MIN_FREE_BYTES, has_room
from roost.builder.sandbox import BuildUser
from roost.images.archive import tree_size

log = logging.getLogger("roost.builder")

# A memory copy being seeded is `<name>.seeding-<pid>`, renamed when complete.
SEEDING = ".seeding-"


class UvCache:
    """Which directory uv uses as its cache, and the memory copy's life cycle."""

    def __init__(self, disk: Path, ram: Path | None, budget: int) -> None:
        self.disk = disk
        self.ram = ram
        self.budget = budget

    @property
    def path(self) -> Path:
        return self.ram if self.ram is not None else self.disk

    @property
    def in_memory(self) -> bool:
        return self.ram is not None

    @classmethod
    def open(cls, disk: Path, ram: Path | None, budget: int, user: BuildUser) -> UvCache:
        """The cache for a builder starting: `ram` (in its tmpfs) seeded from `disk` (blocking).

        `ram` None or a budget of 0: the cache stays on disk. The memory
        copy is `user`'s: uv runs as the build user and writes the cache. A
        memory copy left by a builder that was killed is used as it is: it is
        complete (seeding renames it into place) and newer than the disk copy.
        """
        if ram is None or budget <= 0 or shutil.which("rsync") is None:
            return cls(disk, None, budget)
        for leftover in ram.parent.glob(f"{ram.name}{SEEDING}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if ram.is_dir():
            return cls(disk, ram, budget)
        size = tree_size(disk)
        if size > budget:
            log.info("uv cache is %d MB, over ROOST_BUILDER_UV_CACHE_RAM: kept on disk", size >> 20)
            return cls(disk, None, budget)
        if not has_room(ram.parent, size + MIN_FREE_BYTES):
            log.info("uv cache kept on disk: %s is short of room", ram.parent)
            return cls(disk, None, budget)
        staging = ram.with_name(f"{ram.name}{SEEDING}{os.getpid()}")
        staging.mkdir(mode=0o700)
        user.chown(staging)
        if not _sync(disk, staging):
            shutil.rmtree(staging, ignore_errors=True)
            return cls(disk, None, budget)
        os.rename(staging, ram)
        return cls(disk, ram, budget)

    def save(self) -> bool:
        """Copy what is new or changed in the memory copy to the disk copy (blocking)."""
        if self.ram is None:
            return True
        return _sync(self.ram, self.disk)

    def over_budget(self) -> bool:
        """Whether the memory copy has grown past its budget (blocking: walks it)."""
        return self.ram is not None and tree_size(self.ram) > self.budget

    def detach(self) -> Path | None:
        """Stop using the memory copy: builds that start from now on use the disk.

        Only while no build runs (uv must not be using the memory copy). Returns
        the memory copy, for `retire`.
        """
        ram, self.ram = self.ram, None
        if ram is not None:
            log.info("uv cache grew past ROOST_BUILDER_UV_CACHE_RAM: moving it back to disk")
        return ram

    def retire(self, ram: Path) -> None:
        """Save a detached memory copy to disk and remove it (blocking)."""
        if not _sync(ram, self.disk):
            log.warning("uv cache: saving the in-memory copy failed; its new entries are lost")
        shutil.rmtree(ram, ignore_errors=True)

    def close(self) -> None:
        """Save the memory copy (a builder stopping); the caller removes the tmpfs directory."""
        if self.ram is not None and not self.save():
            log.warning("uv cache: saving the in-memory copy at stop failed")
        self.ram = None


def _sync(src: Path, dst: Path) -> bool:
    """Copy files missing or different in `dst` from `src`; nothing is deleted.

    rsync, not cp: it writes each file under a temporary name and renames it
    into place, so a copy cut short (a builder killed while saving) leaves no
    truncated file that a later run would take for a whole one.
    """
    try:
        done = subprocess.run(
            ["rsync", "-a", "--", f"{src}/", f"{dst}/"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        log.warning("uv cache: cannot copy %s to %s: %s", src, dst, exc)
        return False
    if done.returncode != 0:
        log.warning("uv cache: copying %s to %s failed: %s", src, dst, done.stderr.strip()[-500:])
        return False
    return True
