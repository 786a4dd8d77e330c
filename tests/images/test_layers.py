"""Layered images: manifests, composing roots from shared layers, layer-level LRU,
digest checks of every blob, copies of a manifest with its layers (pull_into_store)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from roost.images.cache import CacheEntry, ImageCache, plan_eviction
from roost.images.digest import DigestMismatch, ImageError
from roost.images.fetch import fetch_image, store_fetcher
from roost.images.manifest import (
    FORMAT,
    ImageManifest,
    LayerRef,
    encode_manifest,
    parse_manifest,
    read_manifest,
)
from roost.images.pull import pull_into_store
from roost.images.store import ImageStore

from .helpers import Served, corrupt, make_tar, put_files_layered, put_layered

VENV = {"bin/tool": b"#!/bin/sh\necho tool\n", "pyvenv.cfg": b"relocatable = true\n"}
D = "sha256:" + "d" * 64


def test_manifest_is_canonical_and_strict(tmp_path: Path) -> None:
    m = ImageManifest(
        roost_image=FORMAT,
        layers=[LayerRef(digest=D, size=5, path="venv"), LayerRef(digest=D, size=7)],
    )
    data = encode_manifest(m)
    assert parse_manifest(data) == m and m.size == 12 and [x.path for x in m.rooted] == [""]
    assert data == encode_manifest(parse_manifest(data))  # same image, same digest
    bad = [
        b'{"roost_image": 1, "layers": [{"digest": "%s", "size": 1}]}' % D.encode(),
        b'{"roost_image": 2, "layers": []}',
        b'{"roost_image": 2, "layers": [{"digest": "sha256:xyz", "size": 1}]}',
        b'{"roost_image": 2, "layers": [{"digest": "%s", "size": 1, "path": "../etc"}]}'
        % D.encode(),
        b'{"roost_image": 2, "layers": [{"digest": "%s", "size": 1, "path": "a/b"}]}' % D.encode(),
        b'{"roost_image": 2, "layers": [{"digest": "%s", "size": 1, "path": "v"}, '
        b'{"digest": "%s", "size": 1, "path": "v"}]}' % (D.encode(), D.encode()),
        b'{"roost_image": 2, "layers": [], "surprise": 1}',
        b"{not json",
    ]
    for raw in bad:
        with pytest.raises(ImageError):
            parse_manifest(raw)
    (tmp_path / "plain.tar").write_bytes(make_tar({"a": b"x"}))
    assert read_manifest(tmp_path / "plain.tar") is None


def test_plan_eviction_at_layer_granularity() -> None:
    # Images a and b share layer L; c has layer M. Layers are big, roots small.
    e = [
        CacheEntry("a", 1, 1.0, ("L",)),
        CacheEntry("b", 1, 2.0, ("L",)),
        CacheEntry("c", 1, 3.0, ("M",)),
        CacheEntry("L", 50, 2.0),
        CacheEntry("M", 50, 3.0),
    ]
    # A layer goes only after the last image using it, and then by its own age.
    assert plan_eviction(e, 60, set()) == ["a", "b", "L"]
    # a pinned: L is never a candidate, so the cache evicts c's side instead.
    assert plan_eviction(e, 60, {"a"}) == ["b", "c", "M"]
    assert plan_eviction(e, 0, {"a", "c"}) == ["b"]
    # An orphan layer (no image) is evicted like any entry, oldest first.
    assert plan_eviction([CacheEntry("X", 10, 0.5), *e[2:]], 60, set()) == ["X", "L"]


async def test_layered_image_is_composed_and_its_layer_shared(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    img1, dep, _ = put_layered(store, {"app/app.py": b"one", "roost-image.json": b"{}"}, VENV)
    img2, dep2, _ = put_layered(store, {"app/app.py": b"two", "roost-image.json": b"{}"}, VENV)
    assert dep2 == dep  # same dependencies, same layer
    calls: list[str] = []
    local = store_fetcher(store)

    async def fetcher(digest: str, dest: Path) -> Path:
        calls.append(digest)
        return await local(digest, dest)

    cache = ImageCache(tmp_path / "cache", max_bytes=1 << 30)
    roots = await asyncio.gather(cache.ensure(img1, fetcher), cache.ensure(img2, fetcher))
    assert calls.count(dep) == 1 and len(calls) == 5  # 2 manifests, 2 code layers, 1 dep
    for root, text in zip(roots, (b"one", b"two"), strict=True):
        assert (root / "app" / "app.py").read_bytes() == text
        assert (root / "venv").is_symlink() and not root.is_symlink()
        assert (root / "venv" / "bin" / "tool").read_bytes() == VENV["bin/tool"]
    assert os.path.realpath(roots[0] / "venv") == os.path.realpath(roots[1] / "venv")
    assert [e.digest for e in cache.layer_entries()] == [dep]
    assert {e.layers for e in cache.entries()} == {(dep,)}
    # The index survives a restart; a root whose layer vanished is dropped.
    again = ImageCache(tmp_path / "cache", max_bytes=1 << 30)
    assert {e.digest for e in again.entries()} == {img1, img2}
    shutil.rmtree(tmp_path / "cache" / "layers" / dep[7:])
    third = ImageCache(tmp_path / "cache", max_bytes=1 << 30)
    assert third.entries() == [] and third.layer_entries() == []
    assert list((tmp_path / "cache" / "images").iterdir()) == []


async def test_layer_eviction_spares_every_layer_of_a_pinned_image(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    big = {"lib/blob": os.urandom(20_000), **VENV}
    other = {"lib/blob": os.urandom(20_000), **VENV}
    a, dep, _ = put_layered(store, {"app/a": b"a"}, big)
    b, _, _ = put_layered(store, {"app/b": b"b"}, big)
    c, dep_c, _ = put_layered(store, {"app/c": b"c"}, other)
    now = [100.0]
    cache = ImageCache(tmp_path / "cache", max_bytes=1 << 30, clock=lambda: now[0])
    fetch = store_fetcher(store)
    await cache.ensure(a, fetch, pin=True)
    for i, digest in enumerate((b, c)):
        now[0] = 200.0 + i
        await cache.ensure(digest, fetch)
    cache.max_bytes = 25_000  # room for one layer and a root or two
    evicted = cache.evict()
    # a is pinned (the oldest!), so its layer stays; b and c's side go.
    assert set(evicted) == {b, c, "layer:" + dep_c}
    assert cache.has(a) and not cache.has(b) and not cache.has(c)
    assert [e.digest for e in cache.layer_entries()] == [dep]
    assert (cache.path(a) / "venv" / "lib" / "blob").read_bytes() == big["lib/blob"]
    layers_on_disk = {p.name for p in (tmp_path / "cache" / "layers").iterdir()}
    assert layers_on_disk == {dep[7:]}
    cache.unpin(a)
    cache.max_bytes = 0
    assert cache.evict() == [a, "layer:" + dep]
    assert list((tmp_path / "cache" / "layers").iterdir()) == []
    assert list((tmp_path / "cache" / "images").iterdir()) == []


def cache_is_empty(root: Path) -> bool:
    return all(not list((root / d).iterdir()) for d in ("images", "layers", "downloads"))


async def test_cache_rejects_a_corrupted_layer_and_a_corrupted_manifest(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image, dep, _ = put_layered(store, {"app/x": b"x"}, VENV)
    corrupt(store, dep, at=600)
    cache = ImageCache(tmp_path / "cache", max_bytes=1 << 30)
    with pytest.raises(DigestMismatch, match=dep):
        await cache.ensure(image, store_fetcher(store))
    assert cache.entries() == [] and cache_is_empty(tmp_path / "cache")

    store2 = ImageStore(tmp_path / "store2")
    image2, _, _ = put_layered(store2, {"app/x": b"x"}, VENV)
    corrupt(store2, image2, at=20)  # still JSON-looking, no longer the named bytes
    with pytest.raises(DigestMismatch, match=image2):
        await cache.ensure(image2, store_fetcher(store2))
    assert cache_is_empty(tmp_path / "cache")

    # Bytes that hash right but are not a valid manifest are refused too.
    bogus = store2.put_bytes(b'{"roost_image": 2, "layers": []}')
    with pytest.raises(ImageError, match="no layers"):
        await cache.ensure(bogus, store_fetcher(store2))
    assert cache_is_empty(tmp_path / "cache")


async def test_layered_image_over_curve_and_copied(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    image, dep, code = put_layered(store, {"app/x": b"x", "roost-image.json": b"{}"}, VENV)
    async with Served(store) as client:
        cache = ImageCache(tmp_path / "cache", max_bytes=1 << 30)

        async def over_the_wire(digest: str, dest: Path) -> Path:
            return await fetch_image(client, digest, dest)

        root = await cache.ensure(image, over_the_wire)
        assert (root / "venv" / "bin" / "tool").exists() and (root / "app" / "x").exists()
        second = ImageStore(tmp_path / "second")
        assert await pull_into_store(client, image, second) == image
        assert set(second.list()) == {image, dep, code}
        assert all(second.verify(d) for d in second.list())

        # A corrupted layer at the source: the manifest is not stored without it.
        corrupt(store, code, at=600)
        broken = ImageStore(tmp_path / "broken")
        with pytest.raises(DigestMismatch):
            await pull_into_store(client, image, broken)
        assert image not in broken.list() and list(broken.tmp_dir.iterdir()) == []
        fresh = ImageCache(tmp_path / "cache2", max_bytes=1 << 30)
        with pytest.raises(DigestMismatch):
            await fresh.ensure(image, over_the_wire)
        assert cache_is_empty(tmp_path / "cache2")


def files_venv(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(VENV["bin/tool"])
    os.chmod(root / "bin" / "tool", 0o755)
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "pyvenv.cfg").write_bytes(VENV["pyvenv.cfg"])
    return root


async def test_a_layer_named_by_its_files_travels_checked_against_its_manifest(
    tmp_path: Path,
) -> None:
    """Over CURVE into a runner's cache (unpacked, the tree checked) and into a second
    store (every member checked before it keeps the copy); a corrupted archive at the
    source is refused by both and leaves nothing."""
    store = ImageStore(tmp_path / "store")
    image, dep, code = put_files_layered(
        store, {"app/x": b"x", "roost-image.json": b"{}"}, files_venv(tmp_path / "venv")
    )
    manifest = read_manifest(store.path(image))
    assert manifest is not None and [lr.files for lr in manifest.layers] == [True, False]
    assert store.is_files(dep) and not store.is_files(code) and store.verify(dep)
    async with Served(store) as client:

        async def over_the_wire(digest: str, dest: Path) -> Path:
            return await fetch_image(client, digest, dest)

        cache = ImageCache(tmp_path / "cache", max_bytes=1 << 30)
        root = await cache.ensure(image, over_the_wire)
        assert (root / "venv" / "bin" / "tool").read_bytes() == VENV["bin/tool"]
        assert os.readlink(root / "venv" / "bin" / "python") == "/usr/bin/python3"
        assert not (root / "venv" / ".roost-files").exists()
        second = ImageStore(tmp_path / "second")
        assert await pull_into_store(client, image, second) == image
        assert set(second.list()) == {image, dep, code} and second.is_files(dep)
        assert all(second.verify(d) for d in second.list())

        # One byte of a file's contents flipped at the source (a bad disk, a liar).
        corrupt(store, dep, at=store.path(dep).read_bytes().index(b"echo tool"))
        broken = ImageStore(tmp_path / "broken")
        with pytest.raises(DigestMismatch, match="'bin/tool' differs from its manifest"):
            await pull_into_store(client, image, broken)
        assert broken.list() == [] and list(broken.tmp_dir.iterdir()) == []
        fresh = ImageCache(tmp_path / "cache2", max_bytes=1 << 30)
        with pytest.raises(ImageError, match="'bin/tool' differs from its manifest"):
            await fresh.ensure(image, over_the_wire)
        assert cache_is_empty(tmp_path / "cache2")


def test_a_layer_named_by_its_files_must_be_shared() -> None:
    with pytest.raises(ImageError, match="named by its files but has no path"):
        encode_manifest(ImageManifest(
            roost_image=FORMAT, layers=[LayerRef(digest=D, size=1, files=True)]
        ))  # fmt: skip
    # Left out when false: a manifest without such a layer reads as it always did.
    plain = encode_manifest(ImageManifest(roost_image=FORMAT, layers=[LayerRef(digest=D, size=1)]))
    assert b"files" not in plain and b'"path"' not in plain
