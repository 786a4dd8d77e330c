"""Runners hold the image copies they confirm and serve them to other runners.

Real CURVE nodes and sockets throughout: a builder's image store, a real
controller service (its state database on SQLite, soft state fed with the
runners' heartbeats) and runners made of the daemon's own parts (copy
store, image cache, RPC handlers). No processes are started.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import update

from roost.images.digest import DigestMismatch
from roost.images.sources import RemoteStore, ask_holders
from roost.router.bundles import image_cache_ensure
from roost.runner.copies import RECENT_S
from roost.state import tables as t
from roost.wire.rpc import RpcClient
from tests.images.helpers import corrupt, make_tar, put_layered
from tests.releases import go_live
from tests.runner.copieskit import VENV, World, finished_build, hold_lease, world


def _outlive(w: World, dead: str, at: float) -> None:
    """Every runner but `dead` heartbeats at `at`; `dead`, silent, is marked down."""
    for host, seen in list(w.controller.soft.hosts.items()):
        if host != dead:
            w.controller.soft.record(seen.heartbeat, at)
    assert w.controller.soft.mark_down(at) == [dead]


async def test_a_runner_fetches_from_the_copy_holder_when_the_builder_is_gone(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, ("a", "b", "c")) as w:
        image, dep, code = put_layered(
            w.builder_store, {"app/x.py": b"print('x')\n", "roost-image.json": b"{}"}, VENV
        )
        a = w.runner("a")
        # 1. The controller's release path: a second copy on a runner, recorded.
        await w.service.build_finished(finished_build(w, image, "b1"))
        store = w.store
        assert store.build("b1").status == "rolling-out"
        assert store.copy_hosts(image) == ["a"]
        assert set(a.copies.store.list()) == {image, dep, code}
        assert all(a.copies.store.verify(x) for x in (image, dep, code))

        # 2. The builder dies. The holder's own cache fills from its store, with
        # no network (no other source could serve it now).
        await w.stop("builder")
        root = await a.images.ensure("rep", image)
        assert (root / "app" / "x.py").read_text() == "print('x')\n"
        assert (root / "venv" / "bin" / "tool").exists()
        # Its cache may evict the image: the copy is in the store, not the cache.
        a.images.release(image)
        a.cache.max_bytes = 0
        a.cache.evict()
        assert not a.cache.has(image) and a.cache.layer_entries() == []
        assert set(a.copies.store.list()) == {image, dep, code}

        # 3. Another runner needs the image: the builder is silent, the
        # controller names the holder, the bytes come from it, verified.
        b = w.runner("b")
        root_b = await b.images.ensure("rep", image)
        assert (root_b / "app" / "x.py").read_text() == "print('x')\n"
        assert (root_b / "venv" / "bin" / "tool").exists()
        assert b.copies.store.list() == []  # running an image does not make b a holder

        # 4. A corrupted copy: the fetching side refuses it, keeps nothing.
        corrupt(a.copies.store, code, at=600)
        c = w.runner("c")
        with pytest.raises(DigestMismatch, match="host a"):
            await c.images.ensure("rep", image)
        assert not c.cache.has(image) and c.cache.entries() == []
        assert list((tmp_path / "c" / "cache" / "images").iterdir()) == []


async def test_copy_retention_follows_the_releases(tmp_path: Path) -> None:
    async with world(tmp_path, ("a",)) as w:
        store = w.store
        old, dep, code_old = put_layered(w.builder_store, {"app/x": b"old"}, VENV)
        new, _, code_new = put_layered(w.builder_store, {"app/x": b"new"}, VENV)
        now = [time.time()]
        a = w.runner("a", max_bytes=1, clock=lambda: now[0])  # always over its bound
        await w.service.build_finished(finished_build(w, old, "b1"))
        app_id = store.app("rep").id
        go_live(store, app_id, 1)
        await w.service.build_finished(finished_build(w, new, "b2"))
        # Both young: nothing goes, though the store is over its bound.
        assert set(a.copies.store.list()) == {old, new, dep, code_old, code_new}

        # Later, v2 is current and v1 a rollback target: both stay.
        now[0] += 2 * RECENT_S
        go_live(store, app_id, 2)
        assert await a.copies.prune() == []

        # The controller unreachable: nothing is dropped on a guess, though v1
        # is no rollback target any more (written as data: no deploy fails a
        # release that served, so no move of roost.controller.deployflow can).
        await w.stop("controller")
        with store.engine.begin() as c:
            c.execute(
                update(t.releases)
                .where(t.releases.c.app_id == app_id, t.releases.c.version == 1)
                .values(status="failed")
            )
        assert await a.copies.prune() == []
        assert set(a.copies.store.list()) == {old, new, dep, code_old, code_new}

        # Back: v1 no longer served (failed), so its image goes; the shared
        # dependency layer stays with v2; the controller forgets the copy.
        w.serve("controller", w.service.handle)
        a.copies.directory.controllers = w.client("a", w.endpoints["controller"])  # type: ignore[union-attr]
        assert await a.copies.prune() == [old, code_old]
        assert set(a.copies.store.list()) == {new, dep, code_new}
        assert store.host_copies("a") == {new}


async def test_a_lost_copy_is_replaced_and_routers_fetch_bundles_from_holders(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, ("a", "b", "c")) as w:
        store = w.store
        image, dep, code = put_layered(w.builder_store, {"app/x.py": b"x = 1\n"}, VENV)
        static = w.builder_store.put_bytes(make_tar({"css/site.css": b"body{}"}))
        a = w.runner("a")
        # 1. The bundle travels with the image: same host, both recorded.
        await w.service.build_finished(finished_build(w, image, "b1", static=static))
        go_live(store, store.app("rep").id, 1)
        assert store.all_copies() == {image: {"a"}, static: {"a"}}
        assert set(a.copies.store.list()) == {image, dep, code, static}
        assert a.copies.store.verify(static)

        # 2. Only the lease holder copies again; and while a holder is alive
        # there is nothing to do.
        b, c = w.runner("b"), w.runner("c")
        assert await w.service.keep_copies() == []  # not the lease holder
        hold_lease(w.controller)
        assert await w.service.keep_copies() == []  # a is alive

        # 3. a's host dies: another live runner gets both, from the builder.
        await w.stop("a")
        _outlive(w, "a", time.monotonic() + 100)
        done = await w.service.keep_copies()
        assert sorted(d for d, _, _ in done) == sorted([image, static])
        assert all(ok for _, _, ok in done)
        new = {h for _, h, _ in done}
        assert new <= {"b", "c"}
        for digest, host, _ in done:
            assert store.copy_hosts(digest) == sorted({"a", host})
            held = (b if host == "b" else c).copies.store
            assert held.verify(digest)
        assert await w.service.keep_copies() == []  # held by a live host again
        copied = [e.message for e in store.events() if e.kind == "image-copied"]
        assert sorted(m.split(": ")[0] for m in copied) == sorted([image[:19], static[:19]])

        # 4. The builder is gone too: a router that starts now fetches the
        # bundle from a live holder, as a controller names it.
        await w.stop("builder")
        (static_host,) = {h for d, h, _ in done if d == static}
        router_node = w.nodes["controller"]  # any admitted key will do for a client
        controllers = w.client("controller", w.endpoints["controller"])

        async def holders(digest: str) -> list[RemoteStore]:
            return await ask_holders(
                controllers, digest, "", lambda ep: RpcClient(router_node, [ep])
            )

        builders = w.client("controller", w.endpoints["builder"])  # silent now
        ensure, release = image_cache_ensure(tmp_path / "router", 1 << 30, builders, holders)
        root = await ensure(static)
        assert (root / "css" / "site.css").read_bytes() == b"body{}"
        release(static)
        assert static_host in {"b", "c"}


async def test_copying_again_backs_off_when_no_source_is_left(tmp_path: Path) -> None:
    async with world(tmp_path, ("a", "b")) as w:
        store = w.store
        image, _, _ = put_layered(w.builder_store, {"app/x.py": b"x = 2\n"}, VENV)
        w.runner("a")
        await w.service.build_finished(finished_build(w, image, "b1"))
        go_live(store, store.app("rep").id, 1)
        assert store.copy_hosts(image) == ["a"]
        w.runner("b")
        hold_lease(w.controller)
        # The holder and the builder both gone: b cannot get the image anywhere.
        await w.stop("a")
        await w.stop("builder")
        _outlive(w, "a", time.monotonic() + 100)
        assert await w.service.keep_copies() == [(image, "b", False)]
        # Backing off: the next pass asks nobody.
        assert await w.service.keep_copies() == []
        failed = [e.message for e in store.events() if e.kind == "image-copy-failed"]
        assert len(failed) == 1 and failed[0].startswith(f"{image[:19]}: ")
        assert store.copy_hosts(image) == ["a"]
