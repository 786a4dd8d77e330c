"""A layer named by its files: a manifest of (path, kind, mode, size, sha256).

Theory of operation: a dependency layer's tar must be hashed whole before
it can be named, and a warm build waits for that (issue 21). A file
manifest names the same tree by its files instead: each regular file by
the sha256 of its bytes, each symlink by its target, each directory by its
mode. Its canonical bytes (entries sorted by path, JSON arrays) hash to
one digest, so a file manifest is itself an ordinary blob of the store and
travels by the same chunk protocol, verified by that digest. Most of the
files' hashes need no reading at all on the builder: a file hard-linked
from uv's cache or the bytecode store keeps its inode from one layer to
the next, and `roost.images.treescan` remembers each inode's hash.

The manifest is a claim about a tree, not proof: a receiver trusts a tree
only once `treescan.verify_tree` has found exactly these entries in it and
every file hashing to what is listed (`compare_shape` is the pure half of
that check). A wrong claim (a cache file altered in place, its mtime put
back; a bad RECORD, had one been trusted) therefore fails the copy, never
passes a tampered file.

Modes are what an unpacked image has: permission bits under umask 022
with setuid, setgid and sticky gone (the tar flags and the runners'
unpacking strip them, `roost.builder.pack`, `roost.images.archive`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import NamedTuple

import msgspec

from roost.images.digest import ImageError, format_digest

FILE_MANIFEST_FORMAT = 1
# A venv of hundreds of packages has tens of thousands of files; far above
# any real layer, and a bound on what a receiver parses.
MAX_ENTRIES = 500_000
MAX_MANIFEST_BYTES = 128 << 20
MAX_PATH = 4096
# What an unpacked image can hold: rwx for the owner, r-x for the rest.
MODE_BITS = 0o755

FILE, DIR, LINK = "f", "d", "l"
_HEX = re.compile(r"[0-9a-f]{64}")


class FileEntry(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    path: str
    kind: str  # FILE, DIR or LINK
    mode: int  # MODE_BITS at most; 0 for a symlink
    size: int  # bytes of a file; 0 otherwise
    # The file's sha256 (hex), a symlink's target, "" for a directory.
    data: str


class FileManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    roost_files: int
    entries: list[FileEntry]

    @property
    def size(self) -> int:
        """Bytes of all files (what a receiver with none of them downloads)."""
        return sum(e.size for e in self.entries)


def file_entry(path: str, kind: str, mode: int, size: int = 0, data: str = "") -> FileEntry:
    return FileEntry(path=path, kind=kind, mode=mode & MODE_BITS if kind != LINK else 0,
                     size=size, data=data)  # fmt: skip


def make_manifest(entries: Iterable[FileEntry]) -> FileManifest:
    """A checked manifest of `entries` in canonical (path) order."""
    m = FileManifest(
        roost_files=FILE_MANIFEST_FORMAT, entries=sorted(entries, key=lambda e: e.path)
    )
    check_file_manifest(m)
    return m


def encode_file_manifest(m: FileManifest, *, check: bool = True) -> bytes:
    """Canonical bytes: the same tree, the same bytes, the same digest (`check`
    False: `m` is make_manifest's, checked as it was made)."""
    if check:
        check_file_manifest(m)
    return msgspec.json.encode(m, order="sorted")


def file_manifest_digest(data: bytes) -> str:
    return format_digest(hashlib.sha256(data).hexdigest())


def parse_file_manifest(data: bytes) -> FileManifest:
    """The manifest in `data` (untrusted); ImageError when it is not a valid one."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ImageError(f"file manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        m = msgspec.json.decode(data, type=FileManifest)
    except msgspec.DecodeError as exc:
        raise ImageError(f"malformed file manifest: {exc}") from None
    check_file_manifest(m)
    if encode_file_manifest(m, check=False) != data:
        # One tree, one encoding: otherwise two digests could name one tree.
        raise ImageError("file manifest is not in canonical form")
    return m


def check_file_manifest(m: FileManifest) -> None:
    """Refuse a manifest no builder makes: bad paths, order, kinds, modes, hashes."""
    if m.roost_files != FILE_MANIFEST_FORMAT:
        raise ImageError(
            f"file manifest format {m.roost_files} is not supported (want {FILE_MANIFEST_FORMAT})"
        )
    if len(m.entries) > MAX_ENTRIES:
        raise ImageError(f"file manifest lists more than {MAX_ENTRIES} entries")
    kinds: dict[str, str] = {}
    previous = ""
    for e in m.entries:
        check_path(e.path)
        if previous and e.path <= previous:
            raise ImageError(f"file manifest: {e.path[:200]!r} is out of order or listed twice")
        previous = e.path
        parent = e.path.rpartition("/")[0]
        if parent and kinds.get(parent) != DIR:
            raise ImageError(f"file manifest: {e.path[:200]!r} is not under a listed directory")
        check_entry(e)
        kinds[e.path] = e.kind


def check_path(path: str) -> None:
    if path.isascii() and 0 < len(path) <= MAX_PATH and "\x00" not in path:
        # The usual path, without a list of its parts (a receiver checks every
        # entry of a manifest: tens of thousands).
        wrapped = f"/{path}/"
        if "//" not in wrapped and "/./" not in wrapped and "/../" not in wrapped:
            return
    if not path or len(path) > MAX_PATH or "\x00" in path:
        raise ImageError(f"file manifest: path {path[:200]!r} is empty, too long or has a NUL")
    try:
        path.encode()
    except UnicodeEncodeError:  # a name of undecodable bytes (os's surrogate escapes)
        raise ImageError(f"file manifest: path {path[:200]!r} is not UTF-8") from None
    parts = path.split("/")
    if "" in parts or "." in parts or ".." in parts:
        raise ImageError(f"file manifest: path {path[:200]!r} is not a plain relative path")


def check_entry(e: FileEntry) -> None:
    if e.kind == FILE and e.size >= 0 and not e.mode & ~MODE_BITS and _HEX.fullmatch(e.data):
        return  # the usual entry, checked without building a message
    where = repr(e.path[:200])
    if e.kind == FILE:
        if not _HEX.fullmatch(e.data) or e.size < 0:
            raise ImageError(f"file manifest: {where} has no valid sha256 or size")
    elif e.kind == DIR:
        if e.data or e.size:
            raise ImageError(f"file manifest: directory {where} has a size or data")
    elif e.kind == LINK:
        if not e.data or "\x00" in e.data or len(e.data) > MAX_PATH or e.size or e.mode:
            raise ImageError(f"file manifest: symlink {where} has a bad target, size or mode")
    else:
        raise ImageError(f"file manifest: {where} has unknown kind {e.kind[:8]!r}")
    if e.mode & ~MODE_BITS or e.mode < 0:
        raise ImageError(f"file manifest: {where} has mode {e.mode:o}, beyond {MODE_BITS:o}")


class Seen(NamedTuple):
    """What a tree holds at one path, before any file is read (treescan, layerarchive).

    A named tuple: a layer's check makes one per file, thousands at a time."""

    path: str
    kind: str
    mode: int
    size: int
    target: str = ""  # a symlink's


def compare_shape(m: FileManifest, seen: Iterable[Seen]) -> list[str]:
    """Every difference but file contents between `m` and a tree, in path order (pure).

    Empty when the tree holds exactly the manifest's paths, each of its
    kind, mode (permission bits, `stat.S_IMODE`) and size (a file), or
    target (a symlink); file contents are the caller's to hash.
    """
    want = {e.path: e for e in m.entries}
    problems: list[tuple[str, str]] = []
    found: set[str] = set()
    for s in seen:
        found.add(s.path)
        e = want.get(s.path)
        if e is None:
            problems.append((s.path, f"{s.path!r} is not in the manifest"))
        elif e.kind != s.kind:
            problems.append(
                (s.path, f"{s.path!r} is a {_KIND[s.kind]}, listed as a {_KIND[e.kind]}")
            )
        elif e.kind == LINK:
            if e.data != s.target:
                problems.append((s.path, f"symlink {s.path!r} points elsewhere than listed"))
        elif e.mode != s.mode:  # exactly: a setuid or group-write bit found is refused
            problems.append((s.path, f"{s.path!r} has mode {s.mode:o}, listed {e.mode:o}"))
        elif e.size != s.size and e.kind == FILE:
            problems.append((s.path, f"{s.path!r} is {s.size} bytes, listed {e.size}"))
    problems.extend((p, f"{p!r} is missing") for p in want.keys() - found)
    return [text for _, text in sorted(problems)]


_KIND = {FILE: "file", DIR: "directory", LINK: "symlink"}
