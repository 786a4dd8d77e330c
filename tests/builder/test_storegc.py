"""The builder's image store is collected: the images of each app's five
newest releases stay (and the layers they name, the ready dependency
layers, what is young), older ones go. Real image stores, a real state
database and the controller's own answer (ImageRpc)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.images.helpers import put_layered
from tests.releases import go_live, sqlite_controller

from roost.appspec.model import AppSpec
from roost.builder.manager import BuildManager
from roost.builder.storegc import StoreCollector
from roost.controller.core import Controller
from roost.controller.image_rpc import ImageRpc
from roost.controller.store import Store
from roost.images.store import ImageStore
from roost.wire.messages import ImageRetain, Msg

HOURS_AGO = time.time() - 3 * 3600


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[tuple[Controller, Store]]:
    with sqlite_controller(tmp_path) as both:
        yield both


def _age(images: ImageStore, when: float) -> None:
    for digest in images.list():
        os.utime(images.path(digest), (when, when))


async def test_the_five_newest_releases_images_stay_older_ones_go(
    tmp_path: Path, ctl: tuple[Controller, Store]
) -> None:
    c, store = ctl
    images = ImageStore(tmp_path / "store")
    venv = {"lib/site.py": b"shared dependencies"}
    app = store.create_app("shop", store.create_account("o@example.com"))
    made: list[tuple[str, str]] = []  # (image, code layer) of v1..v7
    for v in range(1, 8):
        img, _, code = put_layered(images, {"app.py": f"v{v}".encode()}, venv)
        bundle = images.put_bytes(f"static of v{v}".encode())
        version = store.create_release(app.id, "", img, bundle, AppSpec(), "", f"v{v}")
        go_live(store, app.id, version)
        made.append((img, code))
    failed, _, failed_code = put_layered(images, {"app.py": b"never released"}, venv)
    ready_dep = images.put_bytes(b"a dependency layer the builder keeps ready")
    store.add_copy(made[0][0], "b1")  # a runner of the same host name holds a copy
    _age(images, HOURS_AGO)
    young, _, _ = put_layered(images, {"app.py": b"its deploy is copying"}, venv)

    async def ask(msg: Msg) -> Msg:
        return await ImageRpc(c).retain(msg)  # type: ignore[arg-type]

    gc = StoreCollector(images, ask, "b1", lambda: {ready_dep})
    keep = await gc.retained()
    assert keep is not None
    gone = set(await gc.collect(keep, time.time()))
    # v1 and v2 (their images, code layers and bundles) and the failed build go.
    old = [made[0][0], made[0][1], made[1][0], made[1][1], failed, failed_code]
    assert set(old) <= gone
    assert not any(images.has(dg) for dg in old)
    # The five newest (v3..v7, v7 current) stay whole, and so does the shared layer.
    for img, code in made[2:]:
        assert images.has(img) and images.has(code)
    assert len(gone) == len(old) + 2  # and v1's and v2's static bundles
    assert images.has(young) and images.has(ready_dep)
    # A builder's question forgets no runner's recorded copy.
    assert store.host_copies("b1") == {made[0][0]}
    # A second round finds nothing more.
    assert await gc.collect(await gc.retained() or set(), time.time()) == []


async def test_no_collection_beside_a_build_or_without_an_answer(tmp_path: Path) -> None:
    images = ImageStore(tmp_path / "store")
    old = images.put_bytes(b"an image no release keeps")
    _age(images, HOURS_AGO)

    async def silent(msg: Msg) -> Msg:
        raise TimeoutError("no controller answered")

    silent_gc = StoreCollector(images, silent, "b1", set)
    assert await silent_gc.retained() is None
    assert images.has(old)

    async def keeps_nothing(msg: Msg) -> Msg:
        return ImageRetain(digests=[])

    async def send(msg: Msg) -> None:
        pass

    gc = StoreCollector(images, keeps_nothing, "b1", set)
    m = BuildManager(None, send, collector=gc)  # type: ignore[arg-type]  # (no build runs)
    m.running.add("b-under-way")
    assert await m.collect_store() == []
    assert images.has(old)
    m.running.clear()
    assert await m.collect_store() == [old]
    assert not images.has(old)
