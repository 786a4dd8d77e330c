"""The store, chunked fetch over CURVE, copies between stores, and the cache
with plain-tar images."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from roost.images.cache import CacheEntry, ImageCache, plan_eviction
from roost.images.digest import DigestMismatch, ImageError, format_digest
from roost.images.fetch import fetch_image
from roost.images.pull import pull_into_store
from roost.images.serve import handle_image_request
from roost.images.store import ImageStore
from roost.wire.messages import Error, ImageChunk, ImageChunkRequest

from .helpers import Served, make_tar


def test_store_put_read_verify_delete(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    data = os.urandom(3000)
    digest = store.put_bytes(data)
    assert digest == format_digest(hashlib.sha256(data).hexdigest())
    assert store.has(digest) and store.list() == [digest] and store.verify(digest)
    assert store.read_chunk(digest, 1000, 500) == (3000, data[1000:1500])
    assert store.put_bytes(data) == digest  # idempotent
    with pytest.raises(ImageError):
        store.path("sha256:../../etc/passwd")
    store.delete(digest)
    assert store.list() == [] and list(store.tmp_dir.iterdir()) == []


def test_store_writer_with_wrong_expectation_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    with pytest.raises(DigestMismatch), store.writer(expected="sha256:" + "0" * 64) as w:
        w.write(b"something else")
        w.commit()
    assert store.list() == [] and list(store.tmp_dir.iterdir()) == []


def test_serve_refuses_unknown_and_bad_requests(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    digest = store.put_bytes(b"abc")
    ok = handle_image_request(store, ImageChunkRequest(digest=digest, offset=1, length=10))
    assert ok == ImageChunk(digest=digest, offset=1, total=3, data=b"bc")
    assert isinstance(
        handle_image_request(store, ImageChunkRequest(digest="sha256:" + "1" * 64)), Error
    )
    assert isinstance(handle_image_request(store, ImageChunkRequest(digest="nope")), Error)
    assert isinstance(
        handle_image_request(store, ImageChunkRequest(digest=digest, offset=-1)), Error
    )


async def test_fetch_over_the_wire_in_chunks(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    data = os.urandom(9 * (1 << 20) + 123)  # several chunks, a ragged end
    digest = store.put_bytes(data)
    async with Served(store) as client:
        path = await fetch_image(client, digest, tmp_path / "dl")
        assert path.read_bytes() == data
        second = ImageStore(tmp_path / "second")
        assert await pull_into_store(client, digest, second) == digest
        assert second.verify(digest)


async def test_fetch_rejects_a_corrupted_image_and_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    digest = store.put_bytes(os.urandom(100_000))
    p = store.path(digest)
    os.chmod(p, 0o644)
    raw = bytearray(p.read_bytes())
    raw[5000] ^= 0xFF  # one flipped bit on the source's disk
    p.write_bytes(bytes(raw))
    assert not store.verify(digest)
    async with Served(store) as client:
        with pytest.raises(DigestMismatch, match="corrupted"):
            await fetch_image(client, digest, tmp_path / "dl")
        assert list((tmp_path / "dl").iterdir()) == []
        second = ImageStore(tmp_path / "second")
        with pytest.raises(DigestMismatch):
            await pull_into_store(client, digest, second)
        assert second.list() == [] and list(second.tmp_dir.iterdir()) == []


async def test_fetch_of_unknown_image_is_a_clear_error(tmp_path: Path) -> None:
    async with Served(ImageStore(tmp_path / "store")) as client:
        with pytest.raises(ImageError, match="not in this store"):
            await fetch_image(client, "sha256:" + "a" * 64, tmp_path / "dl")


def test_plan_eviction_is_lru_and_spares_kept() -> None:
    e = [CacheEntry("a", 40, 1.0), CacheEntry("b", 40, 2.0), CacheEntry("c", 40, 3.0)]
    assert plan_eviction(e, 100, set()) == ["a"]
    assert plan_eviction(e, 50, set()) == ["a", "b"]
    assert plan_eviction(e, 50, {"a"}) == ["b", "c"]
    assert plan_eviction(e, 10, {"a", "b", "c"}) == []
    assert plan_eviction(e, 120, set()) == []


async def test_cache_fetches_once_pins_and_evicts_lru(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    images = [store.put_bytes(make_tar({f"f{i}.txt": bytes([i]) * 4000})) for i in range(3)]
    now = [100.0]
    calls: list[str] = []

    async def fetcher(digest: str, dest: Path) -> Path:
        calls.append(digest)
        await asyncio.sleep(0.01)
        out = dest / "img.tar"
        out.write_bytes(store.path(digest).read_bytes())
        return out

    cache = ImageCache(tmp_path / "cache", max_bytes=9000, clock=lambda: now[0])
    a, b, c = images
    paths = await asyncio.gather(*(cache.ensure(a, fetcher) for _ in range(5)))
    assert calls == [a] and len(set(paths)) == 1
    assert (paths[0] / "f0.txt").read_bytes() == b"\0" * 4000
    cache.pin(a)
    now[0] = 200.0
    await cache.ensure(b, fetcher)
    now[0] = 300.0
    await cache.ensure(c, fetcher)  # over 9000 bytes: b is LRU among unpinned
    assert cache.has(a) and not cache.has(b) and cache.has(c)
    cache.unpin(a)
    now[0] = 400.0
    cache.touch(c)
    cache.max_bytes = 5000
    assert cache.evict() == [a]
    # The index survives a restart.
    again = ImageCache(tmp_path / "cache", max_bytes=5000)
    assert [e.digest for e in again.entries()] == [c]


async def test_cache_rejects_corrupted_download(tmp_path: Path) -> None:
    async def bad_fetcher(digest: str, dest: Path) -> Path:
        out = dest / "img.tar"
        out.write_bytes(make_tar({"evil": b"x"}))
        return out

    cache = ImageCache(tmp_path / "cache", max_bytes=1 << 30)
    with pytest.raises(DigestMismatch):
        await cache.ensure("sha256:" + "b" * 64, bad_fetcher)
    assert cache.entries() == []
    assert [p.name for p in (tmp_path / "cache" / "images").iterdir()] == []
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []
