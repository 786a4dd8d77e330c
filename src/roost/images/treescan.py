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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from roost.images.digest import ArchiveRefused, ImageError
from roost.images.filemanifest import (
    DIR,
    FILE,
    FILE_MANIFEST_FORMAT,
    LINK,
    MAX_ENTRIES,
    MAX_PATH,
    MODE_BITS,
    FileEntry,
    FileManifest,
    Seen,
    check_entry,
    check_path,
    compare_shape,
    file_entry,
)

READ_CHUNK = 1 << 20
# Far deeper than any venv (about 12 levels); bounds the walk's recursion.
MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Identity = tuple[int, int, int, int]
_IDENT = struct.Struct("<QQQq")


def key_of(ident: Identity) -> bytes:
    """A file's identity as `HashCache` keys it."""
    return _IDENT.pack(*ident)


class HashCache:
    """sha256 of files by identity (device, inode, size, mtime_ns: `key_of`); least
    recently used go. A scan `peek`s each file's, then `touch`es those it used.

    Kept compact (a packed key, the raw digest: about 200 bytes an entry),
    since it lives as long as the builder: 100,000 entries, a dozen warm
    layers of the bench's size, hold about 20 MB.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._hashes: dict[bytes, bytes] = {}
        # Scans run in threads, two builds' at once at times.
        self._lock = threading.Lock()

    def peek(self, key: bytes) -> bytes | None:
        """The raw digest under a packed key, not marked used (see `touch`).

        Without the lock: one dict lookup is atomic under the interpreter's
        lock, and a scan of thousands of files took a lock per file."""
        return self._hashes.get(key)

    def touch(self, keys: list[bytes]) -> None:
        """Mark `keys` (found by `peek`) the most recently used, under one lock."""
        with self._lock:
            hashes = self._hashes
            for key in keys:
                digest = hashes.pop(key, None)
                if digest is not None:
                    hashes[key] = digest

    def put(self, key: bytes, sha256: str) -> None:
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
    """The manifest of the tree at `root` (not listed itself), hashing only unseen files.

    On the warm build's path (issue 21): thousands of entries, nearly all
    known to the cache, so the cost is Python's per entry. Hence one flat
    walk, the cache looked up without its lock (touched once at the end),
    and each path checked as it is found rather than the manifest again
    after (`make_manifest`): an entry made here is valid but for its path.
    """
    entries: list[FileEntry] = []
    stats = ScanStats()
    pack = _IDENT.pack
    peek = cache.peek if cache is not None else None
    seen: list[bytes] = []
    for path, st, target, dirfd, name in walk(root):
        if not path.isascii():
            check_path(path)  # undecodable bytes (os's surrogate escapes)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            entries.append(FileEntry(path, DIR, mode & MODE_BITS, 0, ""))
        elif stat.S_ISLNK(mode):
            entries.append(file_entry(path, LINK, 0, data=target))
        else:
            size = st.st_size
            key = pack(st.st_dev, st.st_ino, size, st.st_mtime_ns)
            raw = peek(key) if peek is not None else None
            if raw is None:
                sha = hash_at(dirfd, name, st, path)
                stats.hashed += 1
                stats.hashed_bytes += size
                if cache is not None:
                    cache.put(key, sha)
            else:
                sha = raw.hex()
                seen.append(key)
            stats.files += 1
            stats.total_bytes += size
            entries.append(FileEntry(path, FILE, mode & MODE_BITS, size, sha))
    if cache is not None:
        cache.touch(seen)
    if len(entries) > MAX_ENTRIES:
        raise ImageError(f"the tree holds more than {MAX_ENTRIES} entries, more than a layer may")
    for e in entries:
        if len(e.path) > MAX_PATH:
            check_path(e.path)
        if e.kind == LINK:
            check_entry(e)
    entries.sort(key=_by_path)
    return FileManifest(roost_files=FILE_MANIFEST_FORMAT, entries=entries), stats


@dataclass(frozen=True)
class Verified:
    """A tree found to be exactly its manifest: each regular file's entry with the
    identity it was found with, and the bytes of all its entries (symlinks as
    themselves, as `archive.tree_size` counts them)."""

    files: list[tuple[FileEntry, Identity]]
    size: int
    hashed: int  # files read (the others known by the identity `linked` gave)


def verify_tree(
    root: Path, manifest: FileManifest, linked: Mapping[str, Identity] | None = None
) -> Verified:
    """Refuse (ImageError) a tree that is not exactly `manifest`: every file is read and
    hashed, but one whose identity is what `linked` (path -> identity) says: a file
    linked from one this host hashed to that sha256 (roost.images.linkunpack)."""
    want = {e.path: e for e in manifest.entries if e.kind == FILE}
    known = linked or {}
    seen: list[Seen] = []
    files: list[tuple[FileEntry, Identity]] = []
    size = hashed = 0
    for path, st, target, dirfd, name in walk(root):
        mode = st.st_mode
        kind = DIR if stat.S_ISDIR(mode) else LINK if stat.S_ISLNK(mode) else FILE
        seen.append(Seen(path, kind, stat.S_IMODE(mode), st.st_size, target))
        size += st.st_size
        e = want.get(path) if kind == FILE else None
        if e is None or e.size != st.st_size:
            continue  # compare_shape names it with the rest
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        # Hashed while its directory is open.
        if known.get(path) != ident:
            hashed += 1
            if hash_at(dirfd, name, st, path) != e.data:
                raise ArchiveRefused(f"layer refused: {path[:200]!r} differs from its manifest")
        files.append((e, ident))
    problems = compare_shape(manifest, seen)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArchiveRefused(f"layer refused: {problems[0][:300]}{more}")
    return Verified(files, size, hashed)


def walk(root: Path) -> Iterator[tuple[str, os.stat_result, str, int, str]]:
    """(relative path, lstat, symlink target, parent's fd, name) of every entry below `root`.

    Depth first, one descriptor open per level (not one per directory
    listed: a site-packages holds hundreds), so a deep tree is refused
    rather than allowed to exhaust descriptors. One generator with its own
    stack, not one per level: each entry then passes through one frame,
    where nested generators passed it up through every level (a third of a
    warm layer's scan).
    """
    top = os.open(root, _DIR_FLAGS)
    # Per level: its descriptor, its path's prefix, what is left of its listing.
    stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = [(top, "", _listing(top))]
    try:
        while stack:
            dirfd, prefix, left = stack[-1]
            for entry in left:
                name = entry.name
                st = entry.stat(follow_symlinks=False)  # fstatat on dirfd, no symlink followed
                path = f"{prefix}{name}"
                mode = st.st_mode
                if stat.S_ISREG(mode):
                    yield path, st, "", dirfd, name
                elif stat.S_ISDIR(mode):
                    yield path, st, "", dirfd, name
                    if len(stack) > MAX_DEPTH:
                        raise ImageError(
                            f"{path[:200]!r} is nested more than {MAX_DEPTH} directories deep"
                        )
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dirfd)
                    try:
                        if _ident(os.fstat(sub)) != _ident(st):
                            raise ImageError(f"{path[:200]!r} changed while it was read")
                        listing = _listing(sub)
                    except BaseException:
                        os.close(sub)
                        raise
                    stack.append((sub, path + "/", listing))
                    break  # down into it; this level's listing resumes after
                elif stat.S_ISLNK(mode):
                    yield path, st, os.readlink(name, dir_fd=dirfd), dirfd, name
                else:
                    raise ImageError(f"{path[:200]!r} is a special file, which no layer holds")
            else:
                stack.pop()
                os.close(dirfd)
    finally:
        for dirfd, _, _ in stack:
            os.close(dirfd)


def _listing(dirfd: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(dirfd) as it:
        return iter(list(it))


def hash_at(dirfd: int, name: str, st: os.stat_result, path: str) -> str:
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


def _by_path(e: FileEntry) -> str:
    return e.path
