"""A dependency layer named by its files, carried as one tar (issue 21).

Theory of operation: a layer named by its file manifest
(`roost.images.filemanifest`) has a name before anything is packed, so a
build ends once its tree is scanned, not once 100 MB of tar are hashed.
It still travels and is stored as one archive, so copies, caches and
backups move one file as for any blob: the archive's first member,
`.roost-files`, is the manifest itself (whose sha256 is the layer's
name), then the tree as GNU tar writes it (`roost.builder.pack`). The
archive's own bytes name nothing; what proves it is:

- `check_head`: the first member is the manifest the name hashes to
  (cheap: a transport's check that the right archive came);
- `ArchiveCheck` (and `verify_archive` over a file): every member after
  it is exactly the manifest's (paths, kinds, modes, sizes, symlink
  targets, every file hashed), fed as the bytes come, without unpacking:
  what a store checks before it keeps a copy (as the copy streams in, so
  it ends with the last byte), so a second host's copy is verified before
  a release is made;
- where it is unpacked (`roost.images.archive.unpack_layer_archive`), the
  unpacked tree against the manifest (`treescan.verify_tree`): what a
  runner runs is what was checked, whatever a tar parser made of the
  headers.

`archive_size` says how many bytes GNU tar writes for a manifest's tree
(GNU format, this blocking factor), so the builder can serve the archive
while it is still being written, its total known in advance.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from roost.images.digest import ArchiveRefused, ImageError, format_digest
from roost.images.filemanifest import (
    DIR,
    FILE,
    LINK,
    MAX_MANIFEST_BYTES,
    MAX_PATH,
    MODE_BITS,
    FileEntry,
    FileManifest,
    Seen,
    compare_shape,
    parse_file_manifest,
)

FILES_MEMBER = ".roost-files"
# GNU tar's records for a layer: 256 blocks of 512 bytes (roost.builder.pack).
RECORD_BLOCKS = 256
BLOCK = 512
# The head's fixed mtime (1980-01-02, as the layer's files carry).
HEAD_MTIME = 315619200
# GNU format holds names and symlink targets up to this long in the header;
# longer ones take a ././@LongLink member before it (measured with GNU tar).
NAME_FIELD = 100
_READ = 1 << 20


def _blocks(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def archive_head(manifest: bytes) -> bytes:
    """The archive's first member: `.roost-files` holding `manifest`, padded to a block."""
    info = tarfile.TarInfo(FILES_MEMBER)
    info.size = len(manifest)
    info.mode = 0o644
    info.mtime = HEAD_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    header = info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="strict")
    return header + manifest + bytes(_blocks(len(manifest)) - len(manifest))


def _member_size(name: str, link: str, size: int) -> int:
    n = BLOCK + _blocks(size)
    for text in (name, link):
        length = len(text.encode())
        if length > NAME_FIELD:
            n += BLOCK + _blocks(length + 1)  # the LongLink header and the NUL-ended text
    return n


def archive_size(m: FileManifest, head: int) -> int:
    """Bytes of the archive: `head` bytes, then GNU tar's output for the tree (pure).

    tar pads its own output (after the two zero blocks that end it) to a
    whole record.
    """
    body = 2 * BLOCK
    for e in m.entries:
        if e.kind == DIR:
            body += _member_size(e.path + "/", "", 0)
        elif e.kind == LINK:
            body += _member_size(e.path, e.data, 0)
        else:
            body += _member_size(e.path, "", e.size)
    record = RECORD_BLOCKS * BLOCK
    return head + -(-body // record) * record


class ArchiveCheck:
    """Checks a layer archive against the manifest its name hashes to, fed as it
    arrives (`feed`, then `finish`): no I/O, so a copy is checked while it streams
    and a pack while tar writes it, with nothing left to read afterwards.

    A parser of the archives builders write (GNU tar's format, as `archive_head`
    and `roost.builder.pack` make them: regular files, directories, symlinks,
    long names), refusing anything else; each member's bytes are hashed as they
    pass. What it proves is that the bytes are the manifest's tree as these
    headers say; what a runner runs is proven again where it is unpacked
    (`roost.images.archive.unpack_layer_archive`).
    """

    def __init__(self, digest: str, *, head_only: bool = False, shape_only: bool = False) -> None:
        self.digest = digest
        # Stop at the manifest: a transport's check (check_head).
        self._head_only = head_only
        # Every header, no file's bytes (`check_members`: their data is skipped).
        self.shape_only = shape_only
        self.manifest: FileManifest | None = None
        self._want: dict[str, FileEntry] = {}
        self._buf = bytearray()
        self._need = BLOCK  # bytes the current step waits for (a header first)
        self._step: Callable[[bytes], None] = self._header
        self._long: dict[bytes, str] = {}
        self._member: tuple[str, str, int, int, str] | None = None  # path, kind, mode, size, link
        self._left = 0  # data bytes of the member still to come
        self._pad = 0
        self._hash: Any = None
        self._head: bytearray | None = None
        self._seen: list[Seen] = []
        self._names: set[str] = set()
        self._ended = False

    # -------------------------------------------------------------- feeding

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self.done:
            if self._left or self._pad:
                view = self._data(view)
                continue
            if self._ended:
                if any(view):
                    self._refuse("there is data after the archive's end")
                return
            need = self._need
            if not self._buf and len(view) >= need:  # the usual case: no copy to gather
                block, view = bytes(view[:need]), view[need:]
                self._need = BLOCK
                self._step(block)
                continue
            take = min(need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == need:
                block, self._buf = bytes(self._buf), bytearray()
                self._need = BLOCK
                self._step(block)

    def skippable(self) -> int:
        """Bytes of the current member's data (and padding) that may be passed over
        unread: a shape-only check's, past the manifest; 0 otherwise."""
        if not self.shape_only or self.manifest is None or self._buf:
            return 0
        return self._left + self._pad

    def skip(self, n: int) -> None:
        """`n` bytes (at most `skippable()`) passed over, as if fed."""
        assert 0 < n <= self.skippable()
        take = min(n, self._left)
        self._left -= take
        self._pad -= n - take
        if take and not self._left:
            self._end_member()

    def finish(self) -> FileManifest:
        """The manifest, once the whole archive came and is exactly it; ImageError otherwise."""
        if not self._ended or self._buf or self._left or self._pad:
            self._refuse("the archive is cut short")
        if self.manifest is None:
            self._refuse("the archive does not begin with its file manifest")
        problems = compare_shape(self.manifest, self._seen)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            self._refuse(f"{problems[0][:300]}{more}")
        return self.manifest

    # -------------------------------------------------------------- steps

    @property
    def pending(self) -> int:
        """Bytes the parser waits for before its next step (a header, a long name,
        the rest of a member's data and padding)."""
        if self._left or self._pad:
            return self._left + self._pad
        return self._need - len(self._buf)

    @property
    def done(self) -> bool:
        """Nothing more to feed: a head-only check holds its manifest."""
        return self._head_only and self.manifest is not None

    @property
    def ended(self) -> bool:
        """The archive's end (its zero blocks) was reached: only padding may follow."""
        return self._ended

    def _refuse(self, why: str) -> NoReturn:
        raise ArchiveRefused(f"layer {self.digest} refused: {why}")

    def _header(self, block: bytes) -> None:
        if not any(block):
            self._ended = True  # tar ends with zero blocks, then pads its record
            return
        if block[257:265] != _GNU_MAGIC:
            self._refuse("a member is not in GNU tar's format, which builders write")
        stored = _number(block[148:156])
        # The checksum field itself counts as eight spaces.
        if stored is None or stored != sum(block) - sum(block[148:156]) + 256:
            self._refuse("a member's header is damaged (its checksum does not match)")
        kind, size = block[156:157], _number(block[124:136])
        if size is None or size < 0:
            self._refuse("a member's size is not a number")
        if kind in _LONG:
            if not 0 < size <= MAX_PATH + 1 or kind in self._long:
                self._refuse("a member's long name is empty, too long or given twice")
            self._need = _blocks(size)
            self._step = lambda data: self._long_text(kind, data[:size])
            return
        name = self._long.pop(_LONGNAME, None) or _text(block[0:100])
        link = self._long.pop(_LONGLINK, None) or _text(block[157:257])
        mode = _number(block[100:108]) or 0
        if kind in (b"0", b"\x00"):
            self._start(name, FILE, mode & MODE_BITS, size, "")
        elif kind == b"5":
            self._start(name.rstrip("/"), DIR, mode & MODE_BITS, 0, "")
        elif kind == b"2":
            self._start(name, LINK, 0, 0, link)
        else:
            what = "a hard link" if kind == b"1" else f"of type {kind!r}"
            self._refuse(f"{name[:200]!r} is {what}, which no layer holds")

    def _long_text(self, kind: bytes, data: bytes) -> None:
        self._long[kind] = _text(data)
        self._step = self._header

    def _start(self, path: str, kind: str, mode: int, size: int, link: str) -> None:
        if self.manifest is None and self._head is None:
            if path != FILES_MEMBER or kind != FILE:
                self._refuse("the archive does not begin with its file manifest")
            if size > MAX_MANIFEST_BYTES:
                self._refuse(f"its file manifest is larger than {MAX_MANIFEST_BYTES} bytes")
            self._head = bytearray()
        elif path in self._names or path == FILES_MEMBER:
            self._refuse(f"{path[:200]!r} is in it twice")
        self._names.add(path)
        self._member = (path, kind, mode, size, link)
        e = self._want.get(path)
        hashes = e is not None and e.size == size and not self.shape_only
        self._hash = hashlib.sha256() if hashes else None
        self._left, self._pad = size, _blocks(size) - size
        if not size:
            self._end_member()

    def _data(self, view: memoryview) -> memoryview:
        if self._left:
            take = min(self._left, len(view))
            piece = view[:take]
            if self._head is not None and self.manifest is None:
                self._head += piece
            elif self._hash is not None:
                self._hash.update(piece)
            self._left -= take
            view = view[take:]
            if not self._left:
                self._end_member()
            return view
        take = min(self._pad, len(view))
        self._pad -= take
        return view[take:]

    def _end_member(self) -> None:
        assert self._member is not None
        path, kind, mode, size, link = self._member
        self._member = None
        if self.manifest is None:
            assert self._head is not None
            data = bytes(self._head)
            got = format_digest(hashlib.sha256(data).hexdigest())
            if got != self.digest:
                self._refuse(f"the archive holds another layer's manifest ({got})")
            self.manifest = parse_file_manifest(data)
            self._want = {e.path: e for e in self.manifest.entries if e.kind == FILE}
            return
        if self._hash is not None and self._hash.hexdigest() != self._want[path].data:
            self._refuse(f"{path[:200]!r} differs from its manifest")
        # What is remembered per member stays bounded by the manifest, whatever
        # a hostile source sends (tiny members are 512 bytes each); a few
        # members too many are left to finish() to name.
        if len(self._seen) >= _most_members(self.manifest):
            self._refuse(
                f"it holds far more members than its manifest's {len(self.manifest.entries)}"
            )
        self._seen.append(Seen(path, kind, mode, size if kind == FILE else 0, link))


def _most_members(m: FileManifest) -> int:
    return 2 * len(m.entries) + 1000


_GNU_MAGIC = b"ustar  \x00"
_LONGNAME, _LONGLINK = b"L", b"K"
_LONG = (_LONGNAME, _LONGLINK)


def _text(field: bytes) -> str:
    raw = field.split(b"\x00", 1)[0]
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")  # never in a manifest: refused there


def _number(field: bytes) -> int | None:
    """A header's numeric field: octal text, or GNU's base-256 for large values."""
    if field[:1] and field[0] & 0x80:
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] & 0x40 else value
    text = field.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def check_head(path: Path, digest: str) -> FileManifest:
    """The manifest the archive at `path` begins with, once it hashes to `digest`
    (blocking; reads no further than the manifest)."""
    check = _read_file(ArchiveCheck(digest, head_only=True), path)
    if check.manifest is None:
        raise ImageError(
            f"layer {digest} refused: the archive does not begin with its file manifest"
        )
    return check.manifest


def check_members(path: Path, digest: str) -> FileManifest:
    """The manifest, once every member of the archive at `path` is what it lists but
    for file contents, which are passed over unread (blocking; ImageError otherwise).

    What a runner checks before GNU tar unpacks it (the tree is hashed after):
    no member tar would write that the manifest does not list, no hard link,
    device or fifo, nothing twice, no name through a symlink. Headers only,
    in place of tarfile's generic pass over the same members (0.3-0.5 s of
    a warm layer's unpack, 7,900-14,000 members): about half its time, and
    each member held to the manifest rather than to general rules.
    """
    return _read_file(ArchiveCheck(digest, shape_only=True), path).finish()


def verify_archive(path: Path, digest: str) -> FileManifest:
    """The manifest, once every member of the archive at `path` is exactly what it lists
    (blocking); ImageError naming the first difference otherwise."""
    return _read_file(ArchiveCheck(digest), path).finish()


def _read_file(check: ArchiveCheck, path: Path) -> ArchiveCheck:
    """`check` fed the archive at `path`: all of it, or up to its manifest (head
    only); a shape-only check's file bytes are seeked past, not read."""
    try:
        with open(path, "rb", buffering=0) as fh:
            while not check.done:
                n = check.skippable()
                if n:
                    fh.seek(n, os.SEEK_CUR)  # past the end: the read below finds it cut
                    check.skip(n)
                    continue
                # Headers one by one when file bytes are skipped, else large reads.
                piecemeal = check.shape_only and not check.ended
                chunk = fh.read(min(max(check.pending, 1), _READ) if piecemeal else _READ)
                if not chunk:
                    break
                check.feed(chunk)
    except OSError as exc:
        raise ImageError(f"layer {check.digest}: cannot read its archive: {exc}") from exc
    return check
