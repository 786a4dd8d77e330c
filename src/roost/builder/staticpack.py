"""Packing the static bundle: the builder's own archive of what collect static left.

Theory of operation: the collect static step (static_script.py) runs the
app's code (its Django settings, collectstatic, storage backends) as the
build user, so the tree it leaves in `staging/` is the app's to shape, and
so was any archive that process wrote. The builder therefore packs the tree
itself, straight into the store, as the bundle the routers serve: regular
files and directories only.

It walks the tree with directory descriptors: each entry is lstat'ed and,
if it is a directory or a regular file, opened relative to its parent's
descriptor with O_NOFOLLOW, and what was opened is fstat'ed again, so a
symlink is never followed (not even one swapped in between the two looks:
O_NOFOLLOW refuses it, and a FIFO or device swapped in is seen by fstat).
The builder runs as root, so a regular file with a second name is dropped
as well: a hard link can name a file the build user could never read.

Dropped with a line in the build log, not refused: builds never make such
entries in good faith (collectstatic copies files; `[static]` mappings are
copied by static_script.py, which follows links only inside the app and
skips the others; a mapping onto the data directory is not bundled at all:
the build log says it is served from the data directory), and the collect
step always skipped links, so refusing would fail deploys that worked
before, for files that were never going to be served. A project whose own
collectstatic makes links (`--link`) gets a working deploy and a log naming
each file left out.
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from roost.builder.errors import BuildError
from roost.images.store import ImageStore

# Deeper directories are left out (and said so): the walk holds one
# descriptor per level, and no real static tree comes close.
MAX_DEPTH = 64
CHUNK = 1 << 20

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the lstat must not block the open.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def drop_reason(mode: int, nlink: int) -> str | None:
    """None for what goes into a bundle (a directory, a regular file with one
    name); otherwise what the entry is, for the build log."""
    if stat.S_ISDIR(mode):
        return None
    if stat.S_ISREG(mode):
        return None if nlink == 1 else "a hard link"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


@dataclass
class PackedBundle:
    digest: str
    created: bool  # False: the store already held these bytes
    files: int
    dropped: list[str] = field(default_factory=list)  # "path (what it is)"


class _Budget:
    """The archive's running size against the limit (headers counted too)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def check(self, more: int) -> None:
        self.total += more
        if self.total > self.limit:
            raise BuildError(f"static files are larger than {self.limit} bytes")


class _Packer:
    def __init__(self, tf: tarfile.TarFile, size: _Budget, abort: threading.Event) -> None:
        self.tf = tf
        self.size = size
        self.abort = abort
        self.files = 0
        self.dropped: list[str] = []

    def walk(self, dirfd: int, prefix: str, depth: int) -> None:
        for name in sorted(os.listdir(dirfd)):
            if self.abort.is_set():
                raise BuildError("build cancelled")
            rel = prefix + name
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: nothing to pack
            why = drop_reason(st.st_mode, st.st_nlink)
            if why is None and stat.S_ISDIR(st.st_mode) and depth >= MAX_DEPTH:
                why = f"nested deeper than {MAX_DEPTH} directories"
            if why is None:
                why = self._take(dirfd, name, rel, st, depth)
            if why is not None:
                self.dropped.append(f"{rel} ({why})")

    def _take(self, dirfd: int, name: str, rel: str, st: os.stat_result, depth: int) -> str | None:
        is_dir = stat.S_ISDIR(st.st_mode)
        try:
            fd = os.open(name, _DIR if is_dir else _FILE, dir_fd=dirfd)
        except OSError as exc:
            return f"changed while packing: {exc.strerror}"
        try:
            now = os.fstat(fd)
            why = drop_reason(now.st_mode, now.st_nlink)
            if why is None and stat.S_ISDIR(now.st_mode) != is_dir:
                why = "changed while packing"
            if why is not None:
                return why
            if is_dir:
                self.walk(fd, rel + "/", depth + 1)
            else:
                self._add_file(fd, rel, now)
            return None
        finally:
            os.close(fd)

    def _add_file(self, fd: int, rel: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(rel)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.size.check(512 + st.st_size)
        with os.fdopen(os.dup(fd), "rb") as fh:
            try:
                self.tf.addfile(info, fh)
            except OSError as exc:  # tarfile: the file shrank while being read
                raise BuildError(f"static file {rel} changed while packing: {exc}") from None
        self.files += 1


def pack_static_tree(
    store: ImageStore, staging: Path, limit: int, abort: threading.Event
) -> PackedBundle:
    """Archive the regular files under `staging` into the store (blocking; run
    it in a thread). `staging` itself is opened with O_NOFOLLOW too: the build
    user owns its parent and may have put a link there instead."""
    try:
        root = os.open(staging, _DIR)
    except OSError as exc:
        raise BuildError(
            f"static files: {staging.name} is not a directory ({exc.strerror})"
        ) from None
    try:
        with store.writer() as w:
            # A stream ("w|") only ever calls write(): the store's writer
            # hashes the archive as it is made.
            sink = cast("IO[bytes]", w)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.GNU_FORMAT) as tf:
                packer = _Packer(tf, _Budget(limit), abort)
                packer.walk(root, "", 0)
            digest = w.commit()
    finally:
        os.close(root)
    return PackedBundle(digest, w.created, packer.files, packer.dropped)
