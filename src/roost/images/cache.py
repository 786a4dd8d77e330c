"""A runner's cache of unpacked images, bounded in size, LRU, pinned while in use.

Theory of operation: `ensure(digest, fetcher)` returns `root/images/<hex>/`,
the unpacked image. The first caller for a digest downloads it (through the
`fetcher` it passes), verifies the archive's sha256, unpacks into a temporary
directory and renames that into place; concurrent callers for the same digest
wait on a per-digest lock and reuse the result, so each image is downloaded
and unpacked once. A directory under `images/` named by a digest is therefore
always complete.

Pinned images (pin/unpin count users: instances running from them) are never
evicted, nor are images being ensured. `evict()` removes the least recently
used of the others until the total is within `max_bytes`; the choice is the
pure `plan_eviction`. Last use and size persist in `meta/<hex>.json`, so the
LRU order survives a restart. Eviction renames a directory out of `images/`
before deleting it, so a half-deleted image is never mistaken for a whole one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from roost.images.archive import tree_size, unpack_async
from roost.images.digest import DigestMismatch, format_digest, parse_digest, sha256_file

# fetcher(digest, download_dir) -> path of the downloaded archive (e.g. fetch_image).
Fetcher = Callable[[str, Path], Awaitable[Path]]


@dataclass(frozen=True)
class CacheEntry:
    digest: str
    size: int
    last_used: float


def plan_eviction(entries: list[CacheEntry], max_bytes: int, keep: set[str]) -> list[str]:
    """Digests to evict, least recently used first, to fit `max_bytes`.

    Never chooses a digest in `keep` (pinned or busy); when the kept images
    alone exceed the limit, the cache stays over it rather than break them.
    """
    total = sum(e.size for e in entries)
    out: list[str] = []
    for e in sorted(entries, key=lambda e: (e.last_used, e.digest)):
        if total <= max_bytes:
            break
        if e.digest in keep:
            continue
        out.append(e.digest)
        total -= e.size
    return out


class ImageCache:
    def __init__(self, root: Path, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._clock = clock
        self.images = root / "images"
        self.meta = root / "meta"
        self.downloads = root / "downloads"
        for d in (self.images, self.meta, self.downloads):
            d.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._busy: set[str] = set()
        self._pins: dict[str, int] = {}
        self._entries: dict[str, CacheEntry] = {}
        self._recover()

    # ------------------------------------------------------------ state on disk

    def _recover(self) -> None:
        """Rebuild the index from disk; drop leftovers of interrupted work."""
        for p in self.downloads.iterdir():
            _remove(p)
        for p in self.images.iterdir():
            if len(p.name) != 64 or not p.is_dir():
                _remove(p)  # an unpack or an eviction that never finished
                continue
            digest = format_digest(p.name)
            entry = self._read_meta(digest)
            if entry is None:
                entry = CacheEntry(digest, tree_size(p), p.stat().st_mtime)
                self._write_meta(entry)
            self._entries[digest] = entry
        for p in self.meta.iterdir():
            if not (self.images / p.stem).is_dir():
                _remove(p)

    def _read_meta(self, digest: str) -> CacheEntry | None:
        try:
            raw = json.loads((self.meta / f"{parse_digest(digest)}.json").read_text())
            return CacheEntry(digest, int(raw["size"]), float(raw["last_used"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_meta(self, entry: CacheEntry) -> None:
        path = self.meta / f"{parse_digest(entry.digest)}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"size": entry.size, "last_used": entry.last_used}))
        os.replace(tmp, path)

    # ------------------------------------------------------------ public API

    def path(self, digest: str) -> Path:
        return self.images / parse_digest(digest)

    def has(self, digest: str) -> bool:
        return digest in self._entries

    def entries(self) -> list[CacheEntry]:
        return list(self._entries.values())

    def total_bytes(self) -> int:
        return sum(e.size for e in self._entries.values())

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
        entry = self._entries.get(digest)
        if entry is not None:
            entry = CacheEntry(digest, entry.size, self._clock())
            self._entries[digest] = entry
            self._write_meta(entry)

    async def ensure(self, digest: str, fetcher: Fetcher, *, pin: bool = False) -> Path:
        """The unpacked image, downloading and unpacking it first if needed.

        With pin=True the image is pinned before this returns, so no eviction
        can slip in between "ensured" and "in use".
        """
        hexd = parse_digest(digest)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        self._busy.add(digest)
        try:
            async with lock:
                if digest not in self._entries:
                    await self._fetch_and_unpack(digest, hexd, fetcher)
                if pin:
                    self.pin(digest)
                self.touch(digest)
        finally:
            self._busy.discard(digest)
        await self.evict_async()
        return self.images / hexd

    async def _fetch_and_unpack(self, digest: str, hexd: str, fetcher: Fetcher) -> None:
        work = Path(tempfile.mkdtemp(dir=self.downloads, prefix=f"{hexd[:12]}-"))
        unpack_dir = Path(tempfile.mkdtemp(dir=self.images, prefix=f".unpack-{hexd[:12]}-"))
        try:
            archive = await fetcher(digest, work)
            got = await asyncio.to_thread(sha256_file, archive)
            if got != digest:
                raise DigestMismatch(f"image {digest} is corrupted (its bytes hash to {got})")
            await unpack_async(archive, unpack_dir)
            size = await asyncio.to_thread(tree_size, unpack_dir)
            os.chmod(unpack_dir, 0o755)
            os.replace(unpack_dir, self.images / hexd)
            entry = CacheEntry(digest, size, self._clock())
            self._entries[digest] = entry
            self._write_meta(entry)
        finally:
            _remove(work)
            _remove(unpack_dir)

    def evict(self) -> list[str]:
        """Remove least recently used, unpinned images past max_bytes; returns them."""
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

    def _detach_victims(self) -> tuple[list[str], list[Path]]:
        keep = set(self._pins) | self._busy
        victims = plan_eviction(list(self._entries.values()), self.max_bytes, keep)
        return victims, [t for t in (self._detach(d) for d in victims) if t is not None]

    def remove(self, digest: str) -> None:
        """Drop one image now (callers must not hold it pinned)."""
        trash = self._detach(digest)
        if trash is not None:
            _remove(trash)

    def _detach(self, digest: str) -> Path | None:
        """Forget an image and move its directory out of images/ (instant)."""
        hexd = parse_digest(digest)
        self._entries.pop(digest, None)
        with contextlib.suppress(FileNotFoundError):
            (self.meta / f"{hexd}.json").unlink()
        src = self.images / hexd
        if not src.exists():
            return None
        trash = self.images / f".evict-{hexd[:12]}-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(src, trash)
        return trash


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
