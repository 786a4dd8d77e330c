"""Bounding a store of image copies: which blobs go when it is over its size.

Entries are the store's blobs; a manifest lists the layers it names, so a
layer goes only after the last manifest naming it, and every layer of a
kept image stays (roost.images.eviction.plan_eviction, as in the cache).
Last use is the file's modification time: when it was committed, or last
copied again (`touch`). Kept are the images the caller names (those the
controller still relies on) and every blob younger than `recent_s`: an
image pulled a moment ago may not be recorded by the controller yet, and
the layers of a pull still in progress have no manifest naming them yet.
`plan_prune` is pure; `store_entries` and `prune` are the thin I/O around it.
"""

from __future__ import annotations

import contextlib
import os

from roost.images.digest import ImageError
from roost.images.eviction import CacheEntry, plan_eviction
from roost.images.manifest import read_manifest
from roost.images.store import ImageStore


def store_entries(store: ImageStore) -> list[CacheEntry]:
    """One entry per stored blob; a manifest's entry lists its layers."""
    out: list[CacheEntry] = []
    for digest in store.list():
        try:
            path = store.path(digest)
            st = path.stat()
            manifest = read_manifest(path)
        except (OSError, ImageError):
            continue  # deleted meanwhile, or a blob that only looks like a manifest
        layers = tuple(dict.fromkeys(lr.digest for lr in manifest.layers)) if manifest else ()
        out.append(CacheEntry(digest, st.st_size, st.st_mtime, layers))
    return out


def top_level(entries: list[CacheEntry]) -> list[str]:
    """Blobs no manifest names: images, static bundles, orphaned layers."""
    named = {layer for e in entries for layer in e.layers}
    return sorted(e.digest for e in entries if e.digest not in named)


def plan_prune(
    entries: list[CacheEntry], max_bytes: int, keep: set[str], now: float, recent_s: float
) -> list[str]:
    """Digests to delete, in order, until the store fits `max_bytes`."""
    young = {e.digest for e in entries if now - e.last_used < recent_s}
    return plan_eviction(entries, max_bytes, keep | young)


def prune(store: ImageStore, victims: list[str]) -> None:
    """Delete in plan order (an image before the layers only it named)."""
    for digest in victims:
        store.delete(digest)


def touch(store: ImageStore, digest: str, now: float) -> None:
    """Mark a blob used now (it was copied again)."""
    with contextlib.suppress(OSError, ImageError):
        os.utime(store.path(digest), (now, now))
