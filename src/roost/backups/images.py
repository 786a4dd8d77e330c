"""The images of the releases the platform serves, pulled into its backup.

A platform brought back on a fresh machine (`roost restore`) must serve its
apps' releases without building them again: a rebuild would install other
versions of their dependencies, or none at all when an index is down. So
each platform backup carries, beside the state database, the image (its
manifest and every layer) and the static bundle of every release that
serves or is rolling out, and of those `roost rollback` may go back to,
under `images/sha256/<hex>` (a dependency layer named by its files under
`images/files/<hex>`), as the builder's store keeps them.

Which: those the controller says its releases keep (the current and
pending releases' and the rollback ones', its own retention rule), read
with the state copy and kept beside it (roost.backups.platformindex), so
the images are those of the state that comes back with them. Only a
snapshot `roost restore` can bring back (a SQLite state) carries them; a
cluster's (PostgreSQL, a pg_dump, which `roost restore` refuses) does
not, nor one from a controller older than the index (none said which).

How: pulled like a runner pulls a copy (`roost.images`: the builders'
stores first, then the runners a controller names as holders), verified
digest by digest, into backupd's own store (DATA/backupd/images), which
keeps what the last backup needed so a nightly backup pulls only what is
new; the staged tree is hard links into it. restic deduplicates the rest.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from roost.backups.layout import Layout
from roost.backups.platformindex import PlatformIndexError, read_index
from roost.backups.sources import SourceError
from roost.images.digest import ImageError, parse_digest
from roost.images.manifest import read_manifest
from roost.images.sources import RemoteStore, SourcePlan, ask_holders
from roost.images.store import ImageStore
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.node import Node
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.backups")

# Inside a platform snapshot, as in a builder's store (DATA/builder/store).
IMAGES_DIR = "images"


class ImagesError(SourceError):
    """The images could not be read or pulled (the message says which and why):
    the platform's backup fails, since it could not bring its releases back."""


def store_root(layout: Layout) -> Path:
    return layout.root / "images"


def index_digests(platform_root: Path) -> list[str] | None:
    """The digests the staged snapshot's index names; None without an index
    or for a state `roost restore` cannot bring back. Blocking."""
    if not (platform_root / "state.sqlite").exists():
        return None
    try:
        index = read_index(platform_root)
    except PlatformIndexError as exc:
        raise ImagesError(f"the snapshot does not say which images serve: {exc}") from None
    if index is None:
        return None
    for digest in index.images:
        try:
            parse_digest(digest)
        except ImageError as exc:  # the controller's error, said so
            raise ImagesError(f"the controller named image {digest!r}: {exc}") from None
    return index.images


def _blobs(store: ImageStore, digest: str) -> list[str]:
    """`digest` and, for an image, every layer its manifest names."""
    manifest = read_manifest(store.path(digest))
    return [digest, *(layer.digest for layer in (manifest.layers if manifest else []))]


def stage_tree(store: ImageStore, digests: list[str], into: Path) -> list[str]:
    """Hard-link (copy across disks) every blob of `digests` from `store` into
    `into/sha256/` (a layer archive named by its files into `into/files/`, as
    the store keeps it); the blobs staged. Blocking."""
    staged: list[str] = []
    for digest in digests:
        for blob in _blobs(store, digest):
            if blob in staged:
                continue
            dest = into / ("files" if store.is_files(blob) else "sha256")
            dest.mkdir(parents=True, exist_ok=True)
            src, target = store.path(blob), dest / parse_digest(blob)
            try:
                os.link(src, target)
            except OSError:
                target.write_bytes(src.read_bytes())
            staged.append(blob)
    return staged


def forget_others(store: ImageStore, keep: Iterable[str]) -> int:
    """Drop from backupd's store what no longer serves; how many. Blocking."""
    kept = set(keep)
    gone = [d for d in store.list() if d not in kept]
    for d in gone:
        store.delete(d)
    return len(gone)


async def pull(node: Node, cluster: ClusterConfig, digests: list[str], store: ImageStore) -> None:
    """Every digest (manifest, layers; or a bundle) into `store`, verified."""
    images = cluster.of("images")
    controllers = cluster.of("controller")
    fixed: list[RemoteStore] = []
    clients: list[RpcClient] = []
    if images:
        clients.append(RpcClient(node, images))
        fixed.append(RemoteStore("builders", clients[-1]))
    asker = RpcClient(node, controllers) if controllers else None

    def client_for(ep: Endpoint) -> RpcClient:
        return RpcClient(node, [ep])

    try:
        for digest in digests:
            if store.has(digest):
                continue

            async def more(digest: str = digest) -> list[RemoteStore]:
                if asker is None:
                    return []
                return await ask_holders(asker, digest, "", client_for)

            async with SourcePlan(fixed, more) as plan:
                try:
                    await plan.pull(digest, store)
                except ImageError as exc:
                    raise ImagesError(f"image {digest} could not be pulled: {exc}") from None
    finally:
        for c in clients:
            await c.close()
        if asker is not None:
            await asker.close()


async def stage_images(
    node: Node, cluster: ClusterConfig, layout: Layout, platform_root: Path
) -> int:
    """Pull the images the staged snapshot's index names and stage them
    beside it; how many blobs (`index_digests` says when none)."""
    digests = await asyncio.to_thread(index_digests, platform_root)
    if digests is None:
        return 0
    store = await asyncio.to_thread(ImageStore, store_root(layout))
    await pull(node, cluster, digests, store)
    staged = await asyncio.to_thread(stage_tree, store, digests, platform_root / IMAGES_DIR)
    dropped = await asyncio.to_thread(forget_others, store, staged)
    log.info("platform: %d images of %d blobs staged (%d dropped)", len(digests), len(staged),
             dropped)  # fmt: skip
    return len(staged)
