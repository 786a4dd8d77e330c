"""What an image cache remembers of its layers named by their files: `meta/files/<hex>.idx`.

Theory of operation: once a layer named by its files is unpacked and its
tree found to be exactly its manifest, the cache (`roost.images.cache`)
saves that layer's files as verified (`linkplan.LayerFiles`: path, mode,
size, sha256, identity), written before the layer's directory is renamed
into place and removed when the layer is evicted. Unpacking a later layer
asks `sources` for the files it could link: the layers most alike it by
their sketches (`linkplan.rank_sources`, a sketch kept in memory per layer,
about 120 hashes) are read whole, and only those.

A cache written by an older release has no such files: its layers are
simply not sources (nor are layers named by a plain tar's sha256). An
older release running on a cache this one wrote leaves `meta/files/` alone
(it reads only files directly in `meta/`); records of layers gone since
are dropped at start (`recover`), and a layer it unpacked again has new
inodes, which no record's identity matches.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from roost.images.digest import ImageError, parse_digest
from roost.images.filemanifest import FileManifest
from roost.images.linkplan import (
    LayerFiles,
    Source,
    SourceFile,
    decode_layer_files,
    encode_layer_files,
    linkable,
    rank_sources,
    sketch,
    sources_by_hash,
)

SUFFIX = ".idx"


class LayerIndex:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        # Layer digest -> its sketch, read when first needed (empty: no record).
        # Written by the event loop (save, forget) and by unpacking threads
        # (a sketch read): single dict operations, never iterated.
        self._sketches: dict[str, frozenset[bytes]] = {}

    def _path(self, digest: str) -> Path:
        return self.dir / f"{parse_digest(digest)}{SUFFIX}"

    def recover(self, present: Iterable[str]) -> None:
        """Drop records of layers not in the cache (evicted by an older release, a crash)."""
        keep = {parse_digest(d) for d in present}
        for p in self.dir.iterdir():
            if p.suffix != SUFFIX or p.stem not in keep:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    p.unlink()

    def save(self, digest: str, files: list[SourceFile]) -> None:
        """Record a verified layer's files (blocking; before its directory is in place)."""
        path = self._path(digest)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encode_layer_files(files))
        os.replace(tmp, path)
        self._sketches[digest] = sketch(f.sha256 for f in files)

    def forget(self, digest: str) -> None:
        self._sketches.pop(digest, None)
        with contextlib.suppress(FileNotFoundError):
            self._path(digest).unlink()

    def _load(self, digest: str) -> LayerFiles | None:
        try:
            return decode_layer_files(self._path(digest).read_bytes())
        except (OSError, ImageError):
            return None

    def finder(self, layers: Sequence[str]) -> Callable[[FileManifest], dict[bytes, list[Source]]]:
        """`sources` over `layers` (the cache's layers now: taken on the event loop)."""
        return lambda manifest: self.sources(manifest, layers)

    def sources(self, manifest: FileManifest, layers: Sequence[str]) -> dict[bytes, list[Source]]:
        """The files of the cached `layers` most alike `manifest`, by sha256 (blocking)."""
        wanted = sketch(bytes.fromhex(e.data) for e in manifest.entries if linkable(e))
        sketches: dict[str, frozenset[bytes]] = {}
        for digest in layers:
            s = self._sketches.get(digest)
            if s is None:  # first use since the start: read once (not kept: memory)
                index = self._load(digest)
                s = sketch(f.sha256 for f in index.files) if index is not None else frozenset()
                self._sketches[digest] = s
            sketches[digest] = s
        chosen: dict[str, LayerFiles] = {}
        for digest in rank_sources(wanted, sketches):
            index = self._load(digest)
            if index is not None:
                chosen[parse_digest(digest)] = index
        return sources_by_hash(chosen)
