"""A host's cache of unpacked images and layers, bounded in size, LRU, pinned while in use.

Theory of operation: `ensure(digest, fetcher)` returns `root/images/<hex>/`,
the image root. The first caller for a digest downloads it (through the
`fetcher` it passes) and verifies its sha256. A plain tar is unpacked into
a temporary directory renamed into place. A manifest (roost.images.manifest)
is composed: every shared layer it names is ensured under `layers/<hex>/`
(downloaded, verified and unpacked once per host, under a per-layer lock;
a layer named by its files is verified as it is unpacked, its tree
against its file manifest: roost.images.archive.unpack_layer_archive,
hard-linking the files earlier such layers of this cache hold, as their
records in `meta/files/` say, roost.images.layerindex and linkunpack),
every root layer is downloaded, verified and unpacked into a temporary root,
the root gets `<path> -> ../../layers/<hex>` symlinks to its shared layers,
and the root is renamed into place. Concurrent callers for one digest wait
on a per-digest lock and reuse the result. A directory under `images/` or
`layers/` named by a digest is therefore always complete, and an image
root's layers are present whenever the root is (recovery drops a root whose
layer is missing).

Image roots are real per-image directories (the runner adds a `data` link
to each); only the layers are shared. Shared layers are not write-protected:
app processes run as the runner's own user, who owns the whole cache anyway.

Eviction is at layer granularity (roost.images.eviction): pinned images
(pin/unpin count users: instances running from them) and images being
ensured are never evicted, nor is any layer an image still in the cache
uses; least recently used images, then layers no image uses any more, go
until the total is within `max_bytes`. Last use, size and layers persist in
`meta/`, so the LRU order survives a restart. Eviction renames a directory
out of the way before deleting it, so a half-deleted one is never mistaken
for a whole one; a layer others linked files from goes like any other
(hard links: they keep their files), and its record goes with it. A
layer's size is its whole tree's, linked files included: the total
over-counts the disk, so eviction may start early, never late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from roost.images.archive import tree_size, unpack_async, unpack_layer_archive
from roost.images.digest import (
    DigestMismatch,
    ImageError,
    format_digest,
    parse_digest,
    sha256_file,
)
from roost.images.eviction import CacheEntry, plan_eviction
from roost.images.layerindex import LayerIndex
from roost.images.manifest import ImageManifest, read_manifest

__all__ = ["CacheEntry", "Fetcher", "ImageCache", "plan_eviction"]

# fetcher(digest, download_dir) -> path of the downloaded file (e.g. fetch_image).
# Called once per blob: a manifest, then each layer it names.
Fetcher = Callable[[str, Path], Awaitable[Path]]

_LAYER = "layer:"  # prefix of layer ids in eviction plans (images use bare digests)
_LAYER_LINK = re.compile(r"\.\./\.\./layers/([0-9a-f]{64})")


def _is_hex_name(p: Path) -> bool:
    return len(p.name) == 64 and all(c in "0123456789abcdef" for c in p.name)


class ImageCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
        unpack_plain: Callable[[Path, Path], Awaitable[None]] = unpack_async,
    ) -> None:
        self.root = root
        # How a plain tar (not a manifest) is unpacked: a router unpacks static
        # bundles with its own, which keeps regular files and directories only.
        self._unpack_plain = unpack_plain
        self.max_bytes = max_bytes
        self._clock = clock
        self.images = root / "images"
        self.layers = root / "layers"
        self.meta = root / "meta"
        self.layer_meta = root / "meta" / "layers"
        self.downloads = root / "downloads"
        for d in (self.images, self.layers, self.meta, self.layer_meta, self.downloads):
            d.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._layer_locks: dict[str, asyncio.Lock] = {}
        self._busy: set[str] = set()
        self._busy_layers: dict[str, int] = {}
        self._pins: dict[str, int] = {}
        self._entries: dict[str, CacheEntry] = {}
        self._layers: dict[str, CacheEntry] = {}
        # The verified files of layers named by their files, lent to later ones.
        self._files = LayerIndex(self.meta / "files")
        self._recover()

    # ------------------------------------------------------------ state on disk

    def _recover(self) -> None:
        """Rebuild the index from disk; drop leftovers of interrupted work."""
        for p in self.downloads.iterdir():
            _remove(p)
        for p in self.layers.iterdir():
            if not _is_hex_name(p) or not p.is_dir() or p.is_symlink():
                _remove(p)  # an unpack or an eviction that never finished
                continue
            digest = format_digest(p.name)
            entry = self._read_meta(self.layer_meta, digest)
            if entry is None:
                entry = CacheEntry(digest, tree_size(p), p.stat().st_mtime)
                self._write_meta(self.layer_meta, entry)
            self._layers[digest] = entry
        self._files.recover(self._layers)
        for p in self.images.iterdir():
            if not _is_hex_name(p) or not p.is_dir() or p.is_symlink():
                _remove(p)
                continue
            digest = format_digest(p.name)
            entry = self._read_meta(self.meta, digest)
            if entry is None:
                layers = _linked_layers(p)
                entry = CacheEntry(digest, tree_size(p), p.stat().st_mtime, layers)
                self._write_meta(self.meta, entry)
            if any(layer not in self._layers for layer in entry.layers):
                _remove(p)  # its layer went (a crash mid-eviction): fetch again when needed
                continue
            self._entries[digest] = entry
        for meta_dir, index in ((self.meta, self._entries), (self.layer_meta, self._layers)):
            for p in meta_dir.iterdir():
                if p.is_dir():
                    continue
                if p.suffix != ".json" or format_digest(p.stem) not in index:
                    _remove(p)

    def _read_meta(self, meta_dir: Path, digest: str) -> CacheEntry | None:
        try:
            raw = json.loads((meta_dir / f"{parse_digest(digest)}.json").read_text())
            layers = tuple(str(d) for d in raw.get("layers", []))
            for d in layers:
                parse_digest(d)
            return CacheEntry(digest, int(raw["size"]), float(raw["last_used"]), layers)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ImageError):
            return None

    def _write_meta(self, meta_dir: Path, entry: CacheEntry) -> None:
        path = meta_dir / f"{parse_digest(entry.digest)}.json"
        tmp = path.with_suffix(".tmp")
        body = {"size": entry.size, "last_used": entry.last_used, "layers": list(entry.layers)}
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)

    # ------------------------------------------------------------ public API

    def path(self, digest: str) -> Path:
        return self.images / parse_digest(digest)

    def has(self, digest: str) -> bool:
        return digest in self._entries

    def entries(self) -> list[CacheEntry]:
        """Cached image roots (each listing the shared layers it uses)."""
        return list(self._entries.values())

    def layer_entries(self) -> list[CacheEntry]:
        """Cached shared layers."""
        return list(self._layers.values())

    def total_bytes(self) -> int:
        return sum(e.size for e in self._entries.values()) + sum(
            e.size for e in self._layers.values()
        )

    def pin(self, digest: str) -> None:
        self._pins[digest] = self._pins.get(digest, 0) + 1

    def unpin(self, digest: str) -> None:
        n = self._pins.get(digest, 0) - 1
        if n <= 0:
            self._pins.pop(digest, None)
        else:
            self._pins[digest] = n

    def pinned(self) -> set[str]:
        return set(self._pins)

    def touch(self, digest: str) -> None:
        """Mark an image (and the layers it uses) as used now."""
        entry = self._entries.get(digest)
        if entry is None:
            return
        now = self._clock()
        self._entries[digest] = CacheEntry(digest, entry.size, now, entry.layers)
        self._write_meta(self.meta, self._entries[digest])
        for layer in entry.layers:
            le = self._layers.get(layer)
            if le is not None:
                self._layers[layer] = CacheEntry(layer, le.size, now)
                self._write_meta(self.layer_meta, self._layers[layer])

    async def ensure(self, digest: str, fetcher: Fetcher, *, pin: bool = False) -> Path:
        """The image root, downloading, verifying and unpacking what is missing first.

        With pin=True the image is pinned before this returns, so no eviction
        can slip in between "ensured" and "in use".
        """
        hexd = parse_digest(digest)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        self._busy.add(digest)
        try:
            async with lock:
                if digest not in self._entries:
                    await self._install_image(digest, hexd, fetcher)
                if pin:
                    self.pin(digest)
                self.touch(digest)
        finally:
            self._busy.discard(digest)
        await self.evict_async()
        return self.images / hexd

    # ------------------------------------------------------------ filling

    async def _download(
        self, digest: str, fetcher: Fetcher, work: Path, *, files: bool = False
    ) -> Path:
        """Fetch one blob into its own directory under `work` and verify it (a layer
        archive named by its files is checked where it is unpacked)."""
        d = Path(tempfile.mkdtemp(dir=work, prefix=f"{parse_digest(digest)[:12]}-"))
        blob = await fetcher(digest, d)
        if files:
            return blob
        got = await asyncio.to_thread(sha256_file, blob)
        if got != digest:
            raise DigestMismatch(f"{digest} is corrupted (its bytes hash to {got})")
        return blob

    async def _install_image(self, digest: str, hexd: str, fetcher: Fetcher) -> None:
        work = Path(tempfile.mkdtemp(dir=self.downloads, prefix=f"{hexd[:12]}-"))
        unpack_dir = Path(tempfile.mkdtemp(dir=self.images, prefix=f".unpack-{hexd[:12]}-"))
        layers: tuple[str, ...] = ()
        try:
            blob = await self._download(digest, fetcher, work)
            manifest = await asyncio.to_thread(read_manifest, blob)
            if manifest is None:
                await self._unpack_plain(blob, unpack_dir)
            else:
                # Busy before the next await: no eviction can take a layer
                # between its arrival and this image naming it.
                layers = tuple(dict.fromkeys(lr.digest for lr in manifest.shared))
                for layer in layers:
                    self._busy_layers[layer] = self._busy_layers.get(layer, 0) + 1
                await self._compose(manifest, unpack_dir, fetcher, work)
            _remove(work)
            size = await asyncio.to_thread(tree_size, unpack_dir)
            os.chmod(unpack_dir, 0o755)
            entry = CacheEntry(digest, size, self._clock(), layers)
            self._write_meta(self.meta, entry)
            os.replace(unpack_dir, self.images / hexd)
            self._entries[digest] = entry
        finally:
            for layer in layers:
                self._release_layer(layer)
            _remove(work)
            _remove(unpack_dir)

    async def _compose(
        self, manifest: ImageManifest, root: Path, fetcher: Fetcher, work: Path
    ) -> None:
        """Fill `root` from a manifest: root layers unpacked, shared ones linked."""
        try:
            async with asyncio.TaskGroup() as tg:
                for lr in manifest.shared:
                    tg.create_task(self._ensure_layer(lr.digest, fetcher, files=lr.files))
                downloads = [
                    tg.create_task(self._download(lr.digest, fetcher, work))
                    for lr in manifest.rooted
                ]
        except BaseExceptionGroup as eg:
            # Callers handle ImageError/OSError/RPC errors, not groups: the first cause.
            raise _first_cause(eg) from None
        for task in downloads:
            await unpack_async(task.result(), root)
            task.result().unlink()
        for lr in manifest.shared:
            link = root / lr.path
            if os.path.lexists(link):
                raise ImageError(f"image layer path {lr.path!r} is also in the image's code layer")
            os.symlink(f"../../layers/{parse_digest(lr.digest)}", link)

    async def _ensure_layer(self, digest: str, fetcher: Fetcher, *, files: bool = False) -> None:
        hexd = parse_digest(digest)
        lock = self._layer_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if digest in self._layers:
                return
            work = Path(tempfile.mkdtemp(dir=self.downloads, prefix=f"layer-{hexd[:12]}-"))
            unpack_dir = Path(tempfile.mkdtemp(dir=self.layers, prefix=f".unpack-{hexd[:12]}-"))
            try:
                blob = await self._download(digest, fetcher, work, files=files)
                if files:
                    os.rmdir(unpack_dir)  # made anew, then checked, by the unpack
                    # Which layers may lend files: those cached now (eviction
                    # may take one meanwhile: its links then fail, tar writes).
                    find = self._files.finder(list(self._layers))
                    checked = await asyncio.to_thread(
                        unpack_layer_archive, blob, unpack_dir, digest,
                        layers=self.layers, sources=find,
                    )  # fmt: skip
                    size = checked.size
                    await asyncio.to_thread(self._files.save, digest, checked.files)
                else:
                    await unpack_async(blob, unpack_dir)
                    size = await asyncio.to_thread(tree_size, unpack_dir)
                _remove(work)
                os.chmod(unpack_dir, 0o755)
                entry = CacheEntry(digest, size, self._clock())
                self._write_meta(self.layer_meta, entry)
                os.replace(unpack_dir, self.layers / hexd)
                self._layers[digest] = entry
            finally:
                _remove(work)
                _remove(unpack_dir)

    def _release_layer(self, digest: str) -> None:
        n = self._busy_layers.get(digest, 0) - 1
        if n <= 0:
            self._busy_layers.pop(digest, None)
        else:
            self._busy_layers[digest] = n

    # ------------------------------------------------------------ eviction

    def evict(self) -> list[str]:
        """Remove least recently used, unused images and layers past max_bytes.

        Returns the evicted image digests and `layer:<digest>` for layers.
        """
        victims, trash = self._detach_victims()
        for p in trash:
            _remove(p)
        return victims

    async def evict_async(self) -> list[str]:
        """evict(), with the deletions done off the event loop."""
        victims, trash = self._detach_victims()
        for p in trash:
            await asyncio.to_thread(_remove, p)
        return victims

    def _plan_entries(self) -> list[CacheEntry]:
        images = [
            CacheEntry(e.digest, e.size, e.last_used, tuple(_LAYER + d for d in e.layers))
            for e in self._entries.values()
        ]
        layers = [CacheEntry(_LAYER + e.digest, e.size, e.last_used) for e in self._layers.values()]
        return images + layers

    def _detach_victims(self) -> tuple[list[str], list[Path]]:
        keep = set(self._pins) | self._busy | {_LAYER + d for d in self._busy_layers}
        victims = plan_eviction(self._plan_entries(), self.max_bytes, keep)
        trash: list[Path] = []
        for v in victims:
            t = self._detach_layer(v[len(_LAYER) :]) if v.startswith(_LAYER) else self._detach(v)
            if t is not None:
                trash.append(t)
        return victims, trash

    def remove(self, digest: str) -> None:
        """Drop one image root now (callers must not hold it pinned); its
        layers stay until eviction finds them unused."""
        trash = self._detach(digest)
        if trash is not None:
            _remove(trash)

    def _detach(self, digest: str) -> Path | None:
        """Forget an image and move its root out of images/ (instant)."""
        self._entries.pop(digest, None)
        return self._detach_dir(self.images, self.meta, digest)

    def _detach_layer(self, digest: str) -> Path | None:
        self._layers.pop(digest, None)
        self._files.forget(digest)
        return self._detach_dir(self.layers, self.layer_meta, digest)

    def _detach_dir(self, parent: Path, meta_dir: Path, digest: str) -> Path | None:
        hexd = parse_digest(digest)
        with contextlib.suppress(FileNotFoundError):
            (meta_dir / f"{hexd}.json").unlink()
        src = parent / hexd
        if not src.exists():
            return None
        trash = parent / f".evict-{hexd[:12]}-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(src, trash)
        return trash


def _first_cause(eg: BaseExceptionGroup) -> BaseException:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_cause(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return eg.exceptions[0]


def _linked_layers(root: Path) -> tuple[str, ...]:
    """The shared layers an image root links to (recovery without meta)."""
    out = []
    for child in root.iterdir():
        if child.is_symlink():
            m = _LAYER_LINK.fullmatch(os.readlink(child))
            if m:
                out.append(format_digest(m.group(1)))
    return tuple(dict.fromkeys(out))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
