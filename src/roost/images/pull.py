"""Copy an image from another host's store into this one.

What is done: `pull_into_store` copies one image by digest from any image
store endpoint into a local ImageStore, verified, atomically; for a layered
image it copies every layer the manifest names first and the manifest last,
so a store that holds a manifest holds its layers too. A layer named by
its files is checked member by member against its file manifest
(roost.images.layerarchive) rather than hashed whole. A second builder or a
runner with a store calls it. What is not done here: deciding *which* host
holds the second copy and marking a release ready only once two copies
exist — that is the controller's bookkeeping, which asks a host to pull.
"""

from __future__ import annotations

from collections.abc import Callable

from roost.images.digest import DigestMismatch
from roost.images.fetch import iter_chunks
from roost.images.layerarchive import ArchiveRefused
from roost.images.manifest import LayerRef, read_manifest
from roost.images.store import ImageStore, ImageWriter
from roost.wire.rpc import RpcClient


async def pull_into_store(client: RpcClient, digest: str, store: ImageStore) -> str:
    """Ensure `store` holds `digest` (and every layer it names), pulling what is missing."""
    if store.has(digest):
        manifest = read_manifest(store.path(digest))
        for layer in manifest.layers if manifest is not None else []:
            await _pull_blob(client, layer, store)  # repair a store missing one
        return digest
    with store.writer(expected=digest) as w:
        await _fill(client, digest, w, w.finish)
        # The manifest is committed last: a store holding it holds its layers.
        manifest = read_manifest(w.tmp_path)
        for layer in manifest.layers if manifest is not None else []:
            await _pull_blob(client, layer, store)
        w.commit()
    return digest


async def _pull_blob(client: RpcClient, layer: LayerRef, store: ImageStore) -> None:
    digest = layer.digest
    if store.has(digest):
        return
    if not layer.files:
        with store.writer(expected=digest) as w:
            await _fill(client, digest, w, w.commit)
        return
    # Named by its files: every member checked against the manifest it
    # begins with, as the chunks come, before the store keeps it.
    try:
        with store.writer(files=digest) as w:
            async for data in iter_chunks(client, digest):
                w.write(data)
            w.commit_files()
    except ArchiveRefused as exc:
        raise ArchiveRefused(f"copy of {digest} arrived corrupted: {exc}") from None


async def _fill(client: RpcClient, digest: str, w: ImageWriter, check: Callable[[], str]) -> None:
    """Write `digest`'s chunks into `w`, then `check` it (finish or commit) against the digest."""
    async for data in iter_chunks(client, digest):
        w.write(data)
    try:
        check()
    except DigestMismatch as exc:
        raise DigestMismatch(f"copy of {digest} arrived corrupted: {exc}") from None
