"""Reading a tree as a file manifest (the builder) and checking one against it (a receiver).

Both walk the tree through directory descriptors, never following a
symlink (`O_NOFOLLOW` at every step, each file's descriptor checked to be
the entry that was listed): the tree may be the build user's, who could
swap a directory for a symlink while it is read.

`scan_tree` hashes only files it has not seen: `HashCache` keeps each
regular file's sha256 by its identity (device, inode, size, mtime). A
dependency layer is mostly hard links into uv's cache and the bytecode
store, the same inodes from one layer to the next, so a warm build's scan
reads only what is new (the packages that changed, the venv's own scripts
and metadata). The identity leaves out ctime on purpose: every hard link
made to a file changes its ctime, so each new layer would miss. That makes
the cache a claim, not proof: the build user owns those files and may
rewrite one in place and put its mtime back. The claim is then wrong and
`verify_tree`, on whoever receives the layer, finds the file differs and
refuses it: a tampered file fails the copy; it never passes as verified.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from roost.images.digest import ArchiveRefused, ImageError
from roost.images.filemanifest import (
    DIR,
    FILE,
    LINK,
    FileEntry,
    FileManifest,
    Seen,
    compare_shape,
    file_entry,
    make_manifest,
)

READ_CHUNK = 1 << 20
# Far deeper than any venv (about 12 levels); bounds the walk's recursion.
MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Identity = tuple[int, int, int, int]
_IDENT = struct.Struct("<QQQq")


class HashCache:
    """sha256 of files by identity (device, inode, size, mtime_ns); least recently used go.

    Kept compact (a packed key, the raw digest: about 200 bytes an entry),
    since it lives as long as the builder: 100,000 entries, a dozen warm
    layers of the bench's size, hold about 20 MB.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._hashes: dict[bytes, bytes] = {}
        # Scans run in threads, two builds' at once at times.
        self._lock = threading.Lock()

    def get(self, ident: Identity) -> str | None:
        key = _IDENT.pack(*ident)
        with self._lock:
            digest = self._hashes.pop(key, None)
            if digest is None:
                return None
            self._hashes[key] = digest  # now the most recently used
        return digest.hex()

    def put(self, ident: Identity, sha256: str) -> None:
        key = _IDENT.pack(*ident)
        with self._lock:
            self._hashes.pop(key, None)
            self._hashes[key] = bytes.fromhex(sha256)
            while len(self._hashes) > self.limit:
                del self._hashes[next(iter(self._hashes))]

    def __len__(self) -> int:
        return len(self._hashes)


@dataclass
class ScanStats:
    files: int = 0
    hashed: int = 0  # files read (the others' hashes came from the cache)
    hashed_bytes: int = 0
    total_bytes: int = 0


def scan_tree(root: Path, cache: HashCache | None = None) -> tuple[FileManifest, ScanStats]:
    """The manifest of the tree at `root` (not listed itself), hashing only unseen files."""
    entries: list[FileEntry] = []
    stats = ScanStats()
    for path, st, target, dirfd, name in _walk(root):
        if stat.S_ISDIR(st.st_mode):
            entries.append(file_entry(path, DIR, st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            entries.append(file_entry(path, LINK, 0, data=target))
        else:
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            sha = cache.get(ident) if cache is not None else None
            if sha is None:
                sha = _hash_at(dirfd, name, st, path)
                stats.hashed += 1
                stats.hashed_bytes += st.st_size
                if cache is not None:
                    cache.put(ident, sha)
            stats.files += 1
            stats.total_bytes += st.st_size
            entries.append(file_entry(path, FILE, st.st_mode, st.st_size, sha))
    return make_manifest(entries), stats


def verify_tree(root: Path, manifest: FileManifest) -> None:
    """Refuse (ImageError) a tree that is not exactly `manifest`: every file is read and hashed."""
    want = {e.path: e for e in manifest.entries if e.kind == FILE}
    seen: list[Seen] = []
    for path, st, target, dirfd, name in _walk(root):
        kind = DIR if stat.S_ISDIR(st.st_mode) else LINK if stat.S_ISLNK(st.st_mode) else FILE
        seen.append(Seen(path, kind, stat.S_IMODE(st.st_mode), st.st_size, target))
        e = want.get(path) if kind == FILE else None
        # Hashed while its directory is open; a size that differs is named
        # by compare_shape with the rest.
        if e is not None and e.size == st.st_size and _hash_at(dirfd, name, st, path) != e.data:
            raise ArchiveRefused(f"layer refused: {path[:200]!r} differs from its manifest")
    problems = compare_shape(manifest, seen)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArchiveRefused(f"layer refused: {problems[0][:300]}{more}")


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result, str, int, str]]:
    """(relative path, lstat, symlink target, parent's fd, name) of every entry below `root`.

    Depth first, one descriptor open per level (not one per directory
    listed: a site-packages holds hundreds), so a deep tree is refused
    rather than allowed to exhaust descriptors or the stack.
    """
    top = os.open(root, _DIR_FLAGS)
    try:
        yield from _walk_dir(top, "", 0)
    finally:
        os.close(top)


def _walk_dir(
    dirfd: int, prefix: str, depth: int
) -> Iterator[tuple[str, os.stat_result, str, int, str]]:
    if depth > MAX_DEPTH:
        raise ImageError(f"{prefix[:200]!r} is nested more than {MAX_DEPTH} directories deep")
    with os.scandir(dirfd) as it:
        listed = list(it)
    for entry in listed:
        name = entry.name
        st = entry.stat(follow_symlinks=False)  # fstatat on dirfd, no symlink followed
        path = f"{prefix}{name}"
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            yield path, st, os.readlink(name, dir_fd=dirfd), dirfd, name
        elif stat.S_ISREG(mode):
            yield path, st, "", dirfd, name
        elif stat.S_ISDIR(mode):
            yield path, st, "", dirfd, name
            sub = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
            try:
                if _ident(os.fstat(sub)) != _ident(st):
                    raise ImageError(f"{path[:200]!r} changed while it was read")
                yield from _walk_dir(sub, path + "/", depth + 1)
            finally:
                os.close(sub)
        else:
            raise ImageError(f"{path[:200]!r} is a special file, which no layer holds")


def _hash_at(dirfd: int, name: str, st: os.stat_result, path: str) -> str:
    fd = os.open(name, _FILE_FLAGS, dir_fd=dirfd)
    try:
        if _ident(os.fstat(fd)) != _ident(st):
            raise ImageError(f"{path[:200]!r} changed while it was read")
        h = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
            while chunk := fh.read(READ_CHUNK):
                h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)
