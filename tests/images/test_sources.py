"""Several image sources tried in turn (roost.images.sources) and the bound on a
store of copies (roost.images.retention), over real CURVE servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roost.images.digest import DigestMismatch, ImageError
from roost.images.eviction import CacheEntry
from roost.images.retention import plan_prune, prune, store_entries, top_level, touch
from roost.images.sources import RemoteStore, SourcePlan
from roost.images.store import ImageStore

from .helpers import Served, corrupt, put_layered

VENV = {"bin/tool": b"#!/bin/sh\necho tool\n", "pyvenv.cfg": b"relocatable = true\n"}


async def test_a_source_without_the_image_hands_over_to_the_next(tmp_path: Path) -> None:
    empty = ImageStore(tmp_path / "empty")
    holder = ImageStore(tmp_path / "holder")
    image, dep, code = put_layered(holder, {"app/x": b"x" * 5000}, VENV)
    asked: list[int] = []
    async with Served(empty) as builder, Served(holder) as holder_client:

        async def more() -> list[RemoteStore]:
            asked.append(1)
            return [RemoteStore("host r", holder_client)]

        async with SourcePlan([RemoteStore("builder", builder)], more) as plan:
            got = await plan.fetch(image, tmp_path / "dl")
            assert got.read_bytes() == holder.path(image).read_bytes()
            for layer in (dep, code):  # the builder is not asked again
                await plan.fetch(layer, tmp_path / "dl")
            assert set(plan.bad) == {"builder"} and "not in this store" in plan.bad["builder"]
            assert asked == [1]  # copy holders are looked up once, and only when needed
        store = ImageStore(tmp_path / "store")
        async with SourcePlan([RemoteStore("builder", builder)], more) as plan:
            assert await plan.pull(image, store) == image
        assert set(store.list()) == {image, dep, code} and all(
            store.verify(d) for d in store.list()
        )


async def test_corrupted_bytes_from_one_source_are_refused(tmp_path: Path) -> None:
    good = ImageStore(tmp_path / "good")
    bad = ImageStore(tmp_path / "bad")
    image, _, code = put_layered(good, {"app/x": b"x" * 5000}, VENV)
    put_layered(bad, {"app/x": b"x" * 5000}, VENV)
    corrupt(bad, code, at=700)
    async with Served(bad) as bad_client, Served(good) as good_client:
        async with SourcePlan([RemoteStore("bad", bad_client)]) as plan:
            with pytest.raises(DigestMismatch, match="no image source could serve"):
                await plan.fetch(code, tmp_path / "dl")
            assert plan.corrupted == {"bad"}
        assert list((tmp_path / "dl").iterdir()) == []  # nothing partial left behind
        async with SourcePlan(
            [RemoteStore("bad", bad_client), RemoteStore("good", good_client)]
        ) as plan:
            path = await plan.fetch(code, tmp_path / "dl")
            assert path.read_bytes() == good.path(code).read_bytes()
            assert plan.corrupted == {"bad"}
        store = ImageStore(tmp_path / "store")
        async with SourcePlan([RemoteStore("bad", bad_client)]) as plan:
            with pytest.raises(DigestMismatch):
                await plan.pull(image, store)
        assert image not in store.list()


async def test_no_source_at_all_is_a_clear_error(tmp_path: Path) -> None:
    async def nobody() -> list[RemoteStore]:
        return []

    async with SourcePlan([], nobody) as plan:
        with pytest.raises(ImageError, match="no source known"):
            await plan.fetch("sha256:" + "a" * 64, tmp_path)


def test_plan_prune_keeps_what_is_relied_on_young_and_shared() -> None:
    now = 10_000.0
    entries = [
        CacheEntry("img1", 10, 100.0, ("dep", "code1")),
        CacheEntry("img2", 10, 200.0, ("dep", "code2")),
        CacheEntry("img3", 10, now - 5, ("code3",)),
        CacheEntry("dep", 500, 100.0),
        CacheEntry("code1", 50, 100.0),
        CacheEntry("code2", 50, 200.0),
        CacheEntry("code3", 50, now - 5),
        CacheEntry("stray", 50, 50.0),
    ]
    assert top_level(entries) == ["img1", "img2", "img3", "stray"]
    # Everything may go but what the controller keeps (img2) and the young img3.
    victims = plan_prune(entries, 0, {"img2"}, now, recent_s=600)
    assert victims == ["stray", "img1", "code1"]  # oldest first; the shared dep stays
    # Under the bound: nothing goes, whatever is kept.
    assert plan_prune(entries, 10_000, set(), now, recent_s=600) == []
    everything = plan_prune(entries, 0, set(), now + 1000, 600)
    assert sorted(everything) == sorted(e.digest for e in entries)
    assert everything.index("dep") > max(everything.index("img1"), everything.index("img2"))


def test_store_entries_prune_and_touch(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    image, dep, code = put_layered(store, {"app/x": b"x"}, VENV)
    other = store.put_bytes(os.urandom(100))
    entries = {e.digest: e for e in store_entries(store)}
    assert entries[image].layers == (dep, code) and entries[other].layers == ()
    assert top_level(list(entries.values())) == sorted([image, other])
    touch(store, other, 5.0)
    assert store.path(other).stat().st_mtime == 5.0
    victims = plan_prune(list(entries.values()), 0, set(), 1e12, 600)
    prune(store, victims)
    assert store.list() == []
