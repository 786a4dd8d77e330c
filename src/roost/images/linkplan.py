"""Which files of a new layer a runner links from layers it holds, and from where (pure).

Theory of operation: a layer named by its files (`roost.images.filemanifest`)
says each file's sha256, mode and size, and a warm build's layer holds
nearly every file of the previous release's, byte for byte. A runner's
cache (`roost.images.cache`) remembers, per layer it has unpacked and
verified, each file's path, mode, size, sha256 and the identity (device,
inode, size, mtime_ns) the file had when it was hashed or linked
(`LayerFiles`, kept by `roost.images.layerindex`). A new layer then takes a
file from a cached one by a hard link when one holds those bytes with that
mode (`plan_links`), and tar writes only the rest
(`roost.images.linkunpack`).

A cached layer's record is a claim about bytes verified earlier; the
linking side checks the linked inode still has the identity recorded (a
file rewritten since changes its mtime or size and is not linked), and
the record is the runner's own, written only after the layer was checked.

Only the layers most alike the new one are read whole: `sketch` keeps
each layer's smallest file hashes (a bottom-k sample: two layers sharing
most files share most of it, and a small layer is all in it), and the
previous release's layer, which shares nearly all of it, is found without
loading every index.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec

from roost.images.filemanifest import FILE, FileEntry
from roost.images.layerarchive import FILES_MEMBER

INDEX_FORMAT = 1
# Hashes in a layer's sketch (8 bytes of each): about 2 KB a layer in memory.
SKETCH_SIZE = 128
# Layers whose indexes are read for one unpack: the previous release's
# layer and one more (another app's with the same framework, say).
MOST_SOURCES = 2

Identity = tuple[int, int, int, int]  # device, inode, size, mtime_ns


class SourceFile(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """One verified file of a cached layer: where it is and what it was when checked."""

    path: str
    mode: int
    size: int
    sha256: bytes  # raw, 32 bytes
    dev: int
    ino: int
    mtime_ns: int

    @property
    def identity(self) -> Identity:
        return (self.dev, self.ino, self.size, self.mtime_ns)


class LayerFiles(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A cached layer's verified files (what `roost.images.layerindex` keeps per layer)."""

    format: int
    files: list[SourceFile]


class Source(NamedTuple):
    """Where a new layer's file is linked from: a cached layer (hex) and its file."""

    layer: str
    file: SourceFile


def encode_layer_files(files: Iterable[SourceFile]) -> bytes:
    return msgspec.msgpack.encode(LayerFiles(format=INDEX_FORMAT, files=list(files)))


def decode_layer_files(data: bytes) -> LayerFiles | None:
    """The index in `data`, or None when it is not one this release reads (never linked from)."""
    try:
        got = msgspec.msgpack.decode(data, type=LayerFiles)
    except msgspec.DecodeError:
        return None
    return got if got.format == INDEX_FORMAT else None


def sketch(hashes: Iterable[bytes]) -> frozenset[bytes]:
    """The sample of `hashes` that stands for a layer when ranking sources: the smallest."""
    return frozenset(heapq.nsmallest(SKETCH_SIZE, {h[:8] for h in hashes}))


def rank_sources(
    wanted: frozenset[bytes], sketches: Mapping[str, frozenset[bytes]], most: int = MOST_SOURCES
) -> list[str]:
    """The layers (keys of `sketches`) sharing most of `wanted`, best first (none sharing none)."""
    scored = [(len(wanted & s), layer) for layer, s in sketches.items()]
    scored = [t for t in scored if t[0]]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [layer for _, layer in scored[:most]]


def linkable(e: FileEntry) -> bool:
    """Whether a manifest entry may be linked at all.

    Empty files are not: tar makes one as cheaply as a link, and linking
    every empty __init__.py of every layer to one inode would pile up links
    to the file system's limit. A path with a newline is not: tar reads the
    list of members it leaves out one a line. Nor is a file where the
    archive's own head goes (no builder lists one; the tree's check refuses it).
    """
    return e.kind == FILE and e.size > 0 and "\n" not in e.path and e.path != FILES_MEMBER


def sources_by_hash(indexes: Mapping[str, LayerFiles]) -> dict[bytes, list[Source]]:
    """Every file of `indexes` (layer hex -> its files) by its sha256, in the order given."""
    out: dict[bytes, list[Source]] = {}
    for layer, index in indexes.items():
        for f in index.files:
            out.setdefault(f.sha256, []).append(Source(layer, f))
    return out


def plan_links(
    entries: Sequence[FileEntry], sources: Mapping[bytes, Sequence[Source]]
) -> dict[str, Source]:
    """Path -> the cached file to link there, for each entry a source holds exactly.

    Exactly: the same sha256, size and mode (a link shares the inode, so its
    mode is the source's; another mode is written by tar instead). The file
    at the same path is preferred: then each inode gains one link per layer
    holding that path, however many copies of those bytes a layer has.
    """
    plan: dict[str, Source] = {}
    for e in entries:
        if not linkable(e):
            continue
        found = [
            s
            for s in sources.get(bytes.fromhex(e.data), ())
            if s.file.size == e.size and s.file.mode == e.mode
        ]
        if found:
            plan[e.path] = next((s for s in found if s.file.path == e.path), found[0])
    return plan


def exclude_list(paths: Iterable[str]) -> bytes:
    """GNU tar's --exclude-from text for `paths` (linkable ones: no newline), one a line."""
    return b"".join(p.encode() + b"\n" for p in paths)
