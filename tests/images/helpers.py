"""Shared by the image tests and the builder's: a real CURVE image server, fake images."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from roost.images.manifest import FORMAT, ImageManifest, LayerRef, encode_manifest
from roost.images.serve import handle_image_request
from roost.images.store import ImageStore
from roost.wire.cluster import Endpoint
from roost.wire.keys import generate_keypair
from roost.wire.messages import ImageChunkRequest, Msg
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put_layered(
    store: ImageStore, code: dict[str, bytes], venv: dict[str, bytes]
) -> tuple[str, str, str]:
    """Store a two-layer image; returns (image, dependency layer, code layer) digests."""
    venv_tar, code_tar = make_tar(venv), make_tar(code)
    dep = store.put_bytes(venv_tar)
    cod = store.put_bytes(code_tar)
    manifest = ImageManifest(
        roost_image=FORMAT,
        layers=[
            LayerRef(digest=dep, size=len(venv_tar), path="venv", kind="dependencies"),
            LayerRef(digest=cod, size=len(code_tar), kind="code"),
        ],
    )
    return store.put_bytes(encode_manifest(manifest)), dep, cod


def corrupt(store: ImageStore, digest: str, at: int = 0) -> None:
    """Flip one byte of a stored blob, as a bad disk on the source would."""
    p = store.path(digest)
    p.chmod(0o644)
    raw = bytearray(p.read_bytes())
    raw[at] ^= 0x01
    p.write_bytes(bytes(raw))
    assert not store.verify(digest)


class Served:
    """A real CURVE RPC image server over a store, and a client for it."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    async def __aenter__(self) -> RpcClient:
        skp, ckp = generate_keypair(), generate_keypair()
        self.sn = await Node(skp, [ckp.public]).__aenter__()
        self.cn = await Node(ckp, []).__aenter__()

        async def handler(msg: Msg) -> Msg:
            assert isinstance(msg, ImageChunkRequest)
            return handle_image_request(self.store, msg)

        server = RpcServer(self.sn, "tcp://127.0.0.1:*", handler)
        self.task = asyncio.create_task(server.serve())
        self.client = RpcClient(self.cn, [Endpoint(server.address, skp.public_text)])
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.cn.__aexit__()
        await self.sn.__aexit__()


def put_files_layered(
    store: ImageStore, code: dict[str, bytes], venv: Path
) -> tuple[str, str, str]:
    """Store an image whose dependency layer (the tree at `venv`) is named by its
    files, as a builder makes it; returns (image, layer, code layer) digests."""
    from roost.builder.layerpack import name_by_files, pack_named
    from roost.builder.sandbox import BuildUser
    from roost.images.treescan import HashCache

    me = BuildUser(name="me", uid=os.geteuid(), gid=os.getegid(), dropped=False)
    named = name_by_files(venv, HashCache())
    dep, size, _ = pack_named(store, venv, named, me, threading.Event())
    code_tar = make_tar(code)
    cod = store.put_bytes(code_tar)
    manifest = ImageManifest(
        roost_image=FORMAT,
        layers=[
            LayerRef(digest=dep, size=size, path="venv", kind="dependencies", files=True),
            LayerRef(digest=cod, size=len(code_tar), kind="code"),
        ],
    )
    return store.put_bytes(encode_manifest(manifest)), dep, cod
