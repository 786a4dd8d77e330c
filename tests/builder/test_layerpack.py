"""A dependency layer named by its files before it is stored (issue 21,
builder/layerpack.py): the name is the stored archive's, the image store serves an
archive being stored as far as it is written, and a layer whose stored archive is not
the one named is not kept."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from roost.builder import layerpack
from roost.builder.daemon import images_handlers
from roost.builder.errors import BuildError
from roost.builder.manager import BuildManager
from roost.builder.pack import LAYER_TAR_FLAGS, pack_tree
from roost.builder.pipeline import Build, BuildOutcome
from roost.builder.sandbox import BuildUser
from roost.builder.workspace import Workspace
from roost.images.archive import unpack_layer_archive
from roost.images.digest import format_digest
from roost.images.layerarchive import ArchiveRefused
from roost.images.manifest import LayerRef, read_manifest
from roost.images.store import ImageStore
from roost.images.treescan import HashCache
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


def test_the_name_is_the_stored_archive_s(tmp_path: Path) -> None:
    root = tmp_path / "venv"
    members = venv_like(root)
    cache = HashCache()
    named = layerpack.name_by_files(root, cache)
    assert named.stats.hashed == 3  # a.py and b.py are one inode: read once
    store = ImageStore(tmp_path / "store")
    stored = pack_tree(
        store, root, members, LAYER_TAR_FLAGS, ME, threading.Event(),
        files=(named.digest, named.head),
    )  # fmt: skip
    assert stored == (named.digest, named.size, True) and store.verify(named.digest)
    assert store.is_files(named.digest) and named.size == store.size(named.digest)
    # Named again, unchanged: the same name, and no file read again.
    again = layerpack.name_by_files(root, cache)
    assert again.digest == named.digest and again.stats.hashed == 0
    (root / "pyvenv.cfg").write_text("relocatable = false\n")
    assert layerpack.name_by_files(root, cache).digest != named.digest


def test_a_pack_that_fails_or_is_cancelled_says_so_and_stores_nothing(tmp_path: Path) -> None:
    root = tmp_path / "venv"
    members = venv_like(root)
    named = layerpack.name_by_files(root, HashCache())
    store = ImageStore(tmp_path / "store")
    head = (named.digest, named.head)
    with pytest.raises(BuildError, match=r"packing venv failed: .*missing"):
        pack_tree(store, root, [*members, "missing"], LAYER_TAR_FLAGS, ME, threading.Event(),
                  files=head)  # fmt: skip
    stop = threading.Event()
    stop.set()
    with pytest.raises(BuildError, match="cancelled"):
        pack_tree(store, root, members, LAYER_TAR_FLAGS, ME, stop, files=head)
    # Changed after it was named: the archive is not the manifest's, so not kept.
    (root / "lib" / "pkg" / "a.py").write_bytes(os.urandom(300_000))
    with pytest.raises(BuildError, match=r"changed after it was named.*differs from its manifest"):
        pack_tree(store, root, members, LAYER_TAR_FLAGS, ME, threading.Event(), files=head)
    assert store.list() == [] and not list(store.tmp_dir.iterdir())


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


def _change_before_pack(monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None]) -> None:
    """`change` the venv between its naming and its pack."""
    real = layerpack.pack_tree

    def changed_first(*args: object, **kw: object) -> tuple[str, int, bool]:
        change(Path(str(args[1])))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(layerpack, "pack_tree", changed_first)


def _a_module(venv: Path) -> Path:
    return next(p for p in sorted(venv.rglob("*.py")) if p.is_file() and not p.is_symlink())


async def test_a_layer_whose_archive_is_not_the_size_named_is_not_kept(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file added after the naming: the archive is not the size its manifest makes
    (what a copy asked for as the build ended was told), so the layer is not kept."""
    first, _ = await build(ws, "lp1", tar_dir(EXAMPLES / "hello"))
    shutil.rmtree(ws.layers / first.layer_key)  # a fresh layer again, from cached wheels
    before = set(ws.store.list())
    _change_before_pack(
        monkeypatch, lambda venv: (venv / "lib" / "added").write_bytes(bytes(200_000))
    )
    with pytest.raises(BuildError, match="changed after it was named"):
        await build(ws, "lp2", tar_dir(EXAMPLES / "hello"), previous_lock_text=first.lock)
    assert not (ws.layers / first.layer_key / "ready").exists()
    assert set(ws.store.list()) == before and not ws.storing
    monkeypatch.undo()  # named rightly, the layer is made and kept again
    again, _ = await build(ws, "lp3", tar_dir(EXAMPLES / "hello"), previous_lock_text=first.lock)
    assert again.installed and again.layer_digest == first.layer_digest
    assert (ws.layers / first.layer_key / "ready").exists()


async def test_a_layer_changed_in_place_after_its_naming_is_refused_by_every_receiver(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The same size, other bytes (what no build user can do: none runs code once its
    install is done): the builder does not read the archive back, so the proof is the
    receivers': a second store refuses the copy, and a runner's unpack refuses it."""
    first, _ = await build(ws, "lc1", tar_dir(EXAMPLES / "hello"))
    shutil.rmtree(ws.layers / first.layer_key)
    ws.store.delete(first.layer_digest)

    def rewrite(venv: Path) -> None:
        target = _a_module(venv)
        data = target.read_bytes()
        target.unlink()  # a new file: the uv cache's, hard-linked here, stays as it was
        target.write_bytes(data[:-1] + (b"#" if data[-1:] != b"#" else b"!"))

    _change_before_pack(monkeypatch, rewrite)
    made, _ = await build(ws, "lc2", tar_dir(EXAMPLES / "hello"), previous_lock_text=first.lock)
    assert made.layer_digest == first.layer_digest  # named before the change
    archive = ws.store.path(made.layer_digest)
    with pytest.raises(ArchiveRefused, match="differs from its manifest"):
        ImageStore(tmp_path / "second").put_files_archive(archive, made.layer_digest)
    with pytest.raises(ArchiveRefused, match="differs from its manifest"):
        unpack_layer_archive(archive, tmp_path / "unpacked", made.layer_digest)
    assert not (tmp_path / "unpacked").exists()
    # Not left for the next test's builds (the store and layers outlive a workspace).
    shutil.rmtree(ws.layers / made.layer_key)
    ws.store.delete(made.layer_digest)


async def test_the_daemon_sends_the_result_before_the_layer_is_stored(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build's result goes once the layer is named; the build's task ends once it
    is stored (the layer made ready, nothing left storing)."""
    first, _ = await build(ws, "lr1", tar_dir(EXAMPLES / "hello"))
    ready = ws.layers / first.layer_key / "ready"
    shutil.rmtree(ready.parent)
    release = threading.Event()
    real = layerpack.pack_tree

    def held_pack(*args: object, **kw: object) -> tuple[str, int, bool]:
        assert release.wait(120)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(layerpack, "pack_tree", held_pack)
    sent: list[Msg] = []

    async def send(msg: Msg) -> None:
        sent.append(msg)

    manager = BuildManager(ws, send)
    running = asyncio.create_task(manager.run())
    try:
        manager.submit(BuildRequest(
            build_id="lr2", app="hello", archive=tar_dir(EXAMPLES / "hello"),
            previous_lock_text=first.lock, app_id=APP_ID, layer_files=True,
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


async def test_a_layer_is_named_by_its_tar_until_every_runner_reads_files(ws: Workspace) -> None:
    """BuildRequest.layer_files False (an older controller, a rolling upgrade): the layer
    is stored, then named by its tar's sha256, as every release reads; such a ready layer
    serves a later build by files too, but a layer named by its files is made again for
    a build that may not use one."""

    async def build_as(build_id: str, files: bool, lock: str = "") -> BuildOutcome:
        return await Build(
            ws, build_id, "hello", tar_dir(EXAMPLES / "hello"), lambda line: None,
            previous_lock_text=lock, app_id=APP_ID, layer_files=files,
        ).run()  # fmt: skip

    def layer_ref(image: str) -> LayerRef:
        manifest = read_manifest(ws.store.path(image))
        assert manifest is not None
        return next(lr for lr in manifest.layers if lr.path == "venv")

    tar = await build_as("lt1", files=False)
    assert not layer_ref(tar.image_digest).files and not ws.store.is_files(tar.layer_digest)
    assert ws.store.verify(tar.layer_digest)  # the tar's own sha256
    reused = await build_as("lt2", files=True, lock=tar.lock)
    assert not reused.installed and reused.layer_digest == tar.layer_digest
    shutil.rmtree(ws.layers / tar.layer_key)
    files = await build_as("lt3", files=True, lock=tar.lock)
    assert files.installed and layer_ref(files.image_digest).files
    assert ws.store.is_files(files.layer_digest)
    again = await build_as("lt4", files=False, lock=tar.lock)
    assert again.installed and again.layer_digest == tar.layer_digest  # the same tar
