"""The images of the releases the platform serves, pulled into its backup.

A platform brought back on a fresh machine (`roost restore`) must serve its
apps' releases without building them again: a rebuild would install other
versions of their dependencies, or none at all when an index is down. So
each platform backup carries, beside the state database, the image (its
manifest and every layer) and the static bundle of every release that
serves or is rolling out, and of those `roost rollback` may go back to,
under `images/sha256/<hex>`, as the builder's store keeps them.

Which releases: read from the copy of the state database in the same
snapshot (`served_digests`, pure over its rows), so the images are those of
exactly the state that comes back with them. Only a SQLite state database
is read so; a cluster's (PostgreSQL, a pg_dump) is not, and its backup
carries no image (its controllers' own replicas hold two copies anyway).

How: pulled like a runner pulls a copy (`roost.images`: the builders'
stores first, then the runners a controller names as holders), verified
digest by digest, into backupd's own store (DATA/backupd/images), which
keeps what the last backup needed so a nightly backup pulls only what is
new; the staged tree is hard links into it. restic deduplicates the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from roost.backups.layout import Layout
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
# The releases whose images come back (`served_digests` picks among them).
RELEASES_SQL = """
SELECT r.app_id, r.version, r.status, a.current_release, r.image_digest, r.static_digest
FROM releases r JOIN apps a ON a.id = r.app_id
ORDER BY r.app_id, r.version DESC
"""
# Images per app kept for `roost rollback` besides the current one: the
# controller's own retention (controller/copies.py, ROLLBACK_IMAGES).
ROLLBACK_IMAGES = 3


class ImagesError(SourceError):
    """The images could not be read or pulled (the message says which and why):
    the platform's backup fails, since it could not bring its releases back."""


def store_root(layout: Layout) -> Path:
    return layout.root / "images"


# (app id, version, status, the app's current version, image, static bundle)
Row = tuple[int, int, str, int | None, str | None, str | None]


def served_digests(rows: Iterable[Row], rollback: int = ROLLBACK_IMAGES) -> list[str]:
    """The images and bundles a restored platform needs, in order (pure): of
    each app (rows newest first), its current and pending releases', and
    those of the `rollback` newest distinct images that served before, the
    rule the controller keeps copies by."""
    out: list[str] = []
    older: dict[int, list[str]] = {}
    for app_id, version, status, current, image, static in rows:
        if not image:
            continue
        if version == current or status == "pending":
            pass
        elif status in ("active", "superseded"):
            seen = older.setdefault(app_id, [])
            if image in seen or len(seen) >= rollback:
                continue
            seen.append(image)
        else:
            continue
        for digest in (image, static):
            if digest and digest not in out:
                parse_digest(digest)  # a malformed one is the state's error, said so
                out.append(digest)
    return out


def read_served(state_sqlite: Path) -> list[str]:
    """`served_digests` of the releases in a state copy. Blocking."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state_sqlite}?mode=ro", uri=True)) as db:
            rows = db.execute(RELEASES_SQL).fetchall()
    except sqlite3.Error as exc:
        raise ImagesError(f"the state copy does not say which images serve: {exc}") from None
    try:
        return served_digests(rows)
    except ImageError as exc:
        raise ImagesError(str(exc)) from None


def _blobs(store: ImageStore, digest: str) -> list[str]:
    """`digest` and, for an image, every layer its manifest names."""
    manifest = read_manifest(store.path(digest))
    return [digest, *(layer.digest for layer in (manifest.layers if manifest else []))]


def stage_tree(store: ImageStore, digests: list[str], into: Path) -> list[str]:
    """Hard-link (copy across disks) every blob of `digests` from `store` into
    `into/sha256/`; the blobs staged. Blocking."""
    dest = into / "sha256"
    dest.mkdir(parents=True, exist_ok=True)
    staged: list[str] = []
    for digest in digests:
        for blob in _blobs(store, digest):
            if blob in staged:
                continue
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
    """Pull the images the staged state copy serves and stage them beside
    it; how many blobs. A snapshot without a SQLite state stages none."""
    state = platform_root / "state.sqlite"
    if not state.exists():
        return 0
    digests = await asyncio.to_thread(read_served, state)
    store = await asyncio.to_thread(ImageStore, store_root(layout))
    await pull(node, cluster, digests, store)
    staged = await asyncio.to_thread(stage_tree, store, digests, platform_root / IMAGES_DIR)
    dropped = await asyncio.to_thread(forget_others, store, staged)
    log.info("platform: %d images of %d blobs staged (%d dropped)", len(digests), len(staged),
             dropped)  # fmt: skip
    return len(staged)
