"""Linking a new layer's files from cached layers, and checking the tree that results (I/O).

Theory of operation (`roost.images.archive.unpack_layer_archive` runs it):
the new tree's directories are made first, then each file `linkplan`
planned is hard-linked from the cached layer that holds it, then GNU tar
extracts everything else, leaving out the members linked (its
--exclude-from list): directories (their modes set by tar), symlinks and
the files no cached layer holds. Linking before tar means no symlink of
the archive is yet in the tree while links are made, and each directory is
opened from its parent's descriptor with O_NOFOLLOW anyway, on both sides.

A link is kept only when the inode it names has the identity (device,
inode, size, mtime_ns) recorded when the source was verified, and the mode
the manifest lists; otherwise (the source evicted meanwhile, rewritten, a
file system's limit on links) it is removed and tar writes that member. So
a source layer evicted mid-way costs only speed: eviction renames the
layer away and deletes it, and a link made before then still holds the
verified inode (hard links keep the bytes alive), one made after fails.

`check_tree` is `treescan.verify_tree` given the links made: a file whose
identity is the linked one is not read again: every file of the result was either
hashed here or linked from a file hashed to that sha256 on this host and
unchanged since (as far as its identity tells, see
`roost.images.linkplan`). tar never writes through a linked file: without
--overwrite it unlinks what is in the way and makes a new file (a new
inode), which is then hashed like any other.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from roost.images.filemanifest import FileManifest
from roost.images.linkplan import Identity, Source, SourceFile, linkable
from roost.images.treescan import verify_tree

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Descriptors one side keeps open at most (a venv has ~1,000 directories).
_MOST_OPEN = 128


class _Dirs:
    """Descriptors of directories below `root` by relative path, each opened from its
    parent's without following a symlink."""

    def __init__(self, root: Path) -> None:
        self._root = os.open(root, _DIR_FLAGS)
        self._fds: dict[str, int] = {}

    def fd(self, path: str) -> int:
        if not path:
            return self._root
        fd = self._fds.get(path)
        if fd is not None:
            return fd
        if len(self._fds) >= _MOST_OPEN:
            self._close_below()
        parent, _, name = path.rpartition("/")
        fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd(parent))
        self._fds[path] = fd
        return fd

    def _close_below(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def close(self) -> None:
        self._close_below()
        os.close(self._root)


def make_dirs(dest: Path, dirs: Iterable[str]) -> None:
    """Make the directories `dirs` (parents first) below `dest`, private until tar
    gives them their modes."""
    tree = _Dirs(dest)
    try:
        for path in dirs:
            parent, _, name = path.rpartition("/")
            os.mkdir(name, 0o700, dir_fd=tree.fd(parent))
    finally:
        tree.close()


def link_planned(dest: Path, layers: Path, plan: Mapping[str, Source]) -> dict[str, Identity]:
    """Hard-link each planned file into `dest` from `layers/<hex>/`; path -> identity of
    those linked (the others are left for tar)."""
    linked: dict[str, Identity] = {}
    tree, cached = _Dirs(dest), _Dirs(layers)
    try:
        for path, src in plan.items():
            parent, _, name = path.rpartition("/")
            src_parent, _, src_name = src.file.path.rpartition("/")
            try:
                src_fd = cached.fd(f"{src.layer}/{src_parent}" if src_parent else src.layer)
                fd = tree.fd(parent)
                os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # evicted meanwhile, too many links...: tar writes it
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            got = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if (
                stat.S_ISREG(st.st_mode)
                and got == src.file.identity
                and stat.S_IMODE(st.st_mode) == src.file.mode
            ):
                linked[path] = got
            else:  # changed since it was verified: not these bytes for sure
                os.unlink(name, dir_fd=fd)
    finally:
        tree.close()
        cached.close()
    return linked


@dataclass(frozen=True)
class Checked:
    """A tree found to be exactly its manifest: its files as the cache records them
    (`linkplan.linkable` ones), and the bytes it takes as `archive.tree_size` counts."""

    files: list[SourceFile]
    size: int
    hashed: int  # files read (the others were linked, known by identity)


def check_tree(root: Path, manifest: FileManifest, linked: Mapping[str, Identity]) -> Checked:
    """Refuse (ArchiveRefused) a tree that is not exactly `manifest`; every file is hashed
    but those still the inode linked (`linked`: path -> identity: treescan.verify_tree)."""
    found = verify_tree(root, manifest, linked)
    files = [
        SourceFile(e.path, e.mode, e.size, bytes.fromhex(e.data), dev, ino, mtime_ns)
        for e, (dev, ino, _, mtime_ns) in found.files
        if linkable(e)
    ]
    return Checked(files, found.size, found.hashed)
