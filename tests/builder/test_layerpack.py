"""A dependency layer's blob named before it is stored (issue 21, builder/layerpack.py):
the name is the stored blob's, the image store serves a blob being stored as far as it
is written, and a layer whose stored blob is not the one named is not kept."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import threading
from pathlib import Path

import pytest

from roost.builder import layerpack
from roost.builder import layers as layers_mod
from roost.builder.daemon import images_handlers
from roost.builder.errors import BuildError
from roost.builder.manager import BuildManager
from roost.builder.pack import LAYER_TAR_FLAGS, pack_tree
from roost.builder.sandbox import BuildUser
from roost.builder.workspace import Workspace
from roost.images.digest import format_digest
from roost.images.store import ImageStore
from roost.wire.messages import BuildRequest, BuildResult, Error, ImageChunk, ImageChunkRequest, Msg

from .conftest import EXAMPLES, tar_dir
from .test_build import APP_ID, build

ME = BuildUser(name="me", uid=os.geteuid(), gid=os.getegid(), dropped=False)


def venv_like(root: Path) -> list[str]:
    """A small tree with what a venv holds (dirs, a script, a symlink, a hard link)."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "pkg").mkdir(parents=True)
    (root / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / "lib" / "pkg" / "a.py").write_bytes(os.urandom(300_000))
    os.link(root / "lib" / "pkg" / "a.py", root / "lib" / "pkg" / "b.py")
    (root / "pyvenv.cfg").write_text("relocatable = true\n")
    return sorted(os.listdir(root))


def test_the_name_is_the_stored_blobs(tmp_path: Path) -> None:
    assert layerpack.OPENSSL is not None  # scripts/install's machines have it
    root = tmp_path / "venv"
    members = venv_like(root)
    digest, size = layerpack.name_tree(root, members, LAYER_TAR_FLAGS, ME, threading.Event())
    store = ImageStore(tmp_path / "store")
    stored = pack_tree(store, root, members, LAYER_TAR_FLAGS, ME, threading.Event())
    assert stored == (digest, size, True) and store.verify(digest)
    assert size == store.size(digest) and size % (256 * 512) == 0  # -b 256 records
    (root / "pyvenv.cfg").write_text("relocatable = false\n")
    assert layerpack.name_tree(root, members, LAYER_TAR_FLAGS, ME, threading.Event())[0] != digest


def test_a_naming_that_fails_or_is_cancelled_says_so(tmp_path: Path) -> None:
    root = tmp_path / "venv"
    members = venv_like(root)
    with pytest.raises(BuildError, match=r"packing venv failed: .*missing"):
        layerpack.name_tree(root, [*members, "missing"], LAYER_TAR_FLAGS, ME, threading.Event())
    stop = threading.Event()
    stop.set()
    with pytest.raises(BuildError, match="cancelled"):
        layerpack.name_tree(root, members, LAYER_TAR_FLAGS, ME, stop)


async def test_a_blob_being_stored_is_served_as_far_as_it_is_written(tmp_path: Path) -> None:
    """The copy streams while the pack goes on: a chunk is answered from the store's
    temporary file once tar has written that far, and from the store once committed."""
    store = ImageStore(tmp_path / "store")
    data = os.urandom(5000)
    digest = format_digest(hashlib.sha256(data).hexdigest())
    entry = layerpack.Storing(len(data), asyncio.get_running_loop().create_future())
    handlers = images_handlers(store, {digest: entry})

    def ask(offset: int, length: int) -> asyncio.Task[object]:
        msg = ImageChunkRequest(digest=digest, offset=offset, length=length)
        return asyncio.create_task(handlers(msg))

    first = ask(0, 1000)
    await asyncio.sleep(0.05)
    assert not first.done()  # no temporary file yet: not "not in this store"
    tmp = store.new_tmp_path()
    entry.tmp = tmp
    tmp.write_bytes(data[:600])
    await asyncio.sleep(0.05)
    assert not first.done()  # 600 of the 1,000 bytes asked for
    with tmp.open("ab") as fh:
        fh.write(data[600:3000])
    reply = await asyncio.wait_for(first, 5)
    assert isinstance(reply, ImageChunk) and reply.data == data[:1000] and reply.total == 5000
    last = ask(4000, 4096)
    await asyncio.sleep(0.05)
    assert not last.done()
    with tmp.open("ab") as fh:
        fh.write(data[3000:])
    store.commit(tmp, digest)  # as pack_tree does: the file moves into the store
    entry.done.set_result(None)
    reply = await asyncio.wait_for(last, 5)
    assert isinstance(reply, ImageChunk) and reply.data == data[4000:] and reply.total == 5000
    other = format_digest("0" * 64)  # nothing stores it: answered at once
    refused = await asyncio.wait_for(
        handlers(ImageChunkRequest(digest=other, offset=0, length=1)), 5
    )
    assert isinstance(refused, Error) and "not in this store" in refused.message


async def test_a_layer_stored_other_than_named_is_not_kept(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = await build(ws, "lp1", tar_dir(EXAMPLES / "hello"))
    shutil.rmtree(ws.layers / first.layer_key)  # a fresh layer again, from cached wheels
    before = set(ws.store.list())
    wrong = format_digest("1" * 64)
    monkeypatch.setattr(layerpack, "name_tree", lambda *a: (wrong, 10240))
    with pytest.raises(BuildError, match="changed after it was named"):
        await build(ws, "lp2", tar_dir(EXAMPLES / "hello"), previous_lock_text=first.lock)
    assert not (ws.layers / first.layer_key / "ready").exists()
    assert set(ws.store.list()) == before and wrong not in ws.storing
    monkeypatch.undo()  # named rightly, the layer is made and kept again
    again, _ = await build(ws, "lp3", tar_dir(EXAMPLES / "hello"), previous_lock_text=first.lock)
    assert again.installed and again.layer_digest == first.layer_digest
    assert (ws.layers / first.layer_key / "ready").exists()


async def test_the_daemon_sends_the_result_before_the_layer_is_stored(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build's result goes once the layer is named; the build's task ends once it
    is stored (the layer made ready, nothing left storing)."""
    first, _ = await build(ws, "lr1", tar_dir(EXAMPLES / "hello"))
    ready = ws.layers / first.layer_key / "ready"
    shutil.rmtree(ready.parent)
    release = threading.Event()
    real = layers_mod.pack_tree

    def held_pack(*args: object, **kw: object) -> tuple[str, int, bool]:
        assert release.wait(120)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(layers_mod, "pack_tree", held_pack)
    sent: list[Msg] = []

    async def send(msg: Msg) -> None:
        sent.append(msg)

    manager = BuildManager(ws, send)
    running = asyncio.create_task(manager.run())
    try:
        manager.submit(BuildRequest(
            build_id="lr2", app="hello", archive=tar_dir(EXAMPLES / "hello"),
            previous_lock_text=first.lock, app_id=APP_ID,
        ))  # fmt: skip
        for _ in range(1200):
            if any(isinstance(m, BuildResult) for m in sent):
                break
            await asyncio.sleep(0.1)
        result = next(m for m in sent if isinstance(m, BuildResult))
        assert result.ok, result.error
        assert not ready.exists() and first.layer_digest in ws.storing
        release.set()
        for _ in range(1200):
            if ready.exists() and not ws.storing:
                break
            await asyncio.sleep(0.1)
        assert ready.exists() and ws.store.verify(first.layer_digest) and not ws.storing
    finally:
        release.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
