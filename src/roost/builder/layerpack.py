"""A dependency layer named by its files, stored behind (issue 21).

Theory of operation: a warm build waited for its layer's whole pack, GNU
tar writing some 110 MB into the store while a Python thread hashed the
file as it grew, though an image needs only the layer's name. Naming it
by the tar's bytes still meant tar and a hash over all of them (`tar |
openssl dgst`, 0.17-0.21 s measured on a quiet machine: tar is the slower
half, ~1 GB/s).

So the layer is named by its file manifest (roost.images.filemanifest,
roost.images.layerarchive): `name_by_files` scans the venv
(`treescan.scan_tree`) with the builder's `HashCache`, which knows the
hashes of the files hard-linked from uv's cache and the bytecode store by
their inodes, so only the files new to this layer are read (130 of 7,880
in the bench's warm layer: 0.10 s where tar and openssl took 0.19). The
build names its image with the manifest's digest and ends; the layer's
archive (the manifest, then the tree as tar writes it) is then stored by
the usual pack (`pack.pack_tree`), and kept, and the layer made ready, once
it is the size the manifest makes (roost.builder.layers says why the
builder reads it no further); every host it is copied to checks it member
by member against the manifest.

While it is stored, the copy streams (`Workspace.storing`, `Storing`):
the archive's size is known from the manifest (`layerarchive.archive_size`),
and the builder's image store answers a chunk request for it from the part
of the store's temporary file tar has written (`serve_while_storing`; a
write extends the file's size only past bytes already in it), and from
the store once it is committed, so a copy to a second host asked for as the
build ends starts at once and never outruns the pack. The receiver checks
the whole archive against the manifest as for any copy: a release is still
made only once a second host holds a verified copy of its image.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.builder.pack import LAYER_TAR_FLAGS, pack_tree
from roost.builder.sandbox import BuildUser
from roost.images.filemanifest import encode_file_manifest, file_manifest_digest
from roost.images.layerarchive import archive_head, archive_size
from roost.images.serve import MAX_CHUNK
from roost.images.store import ImageStore
from roost.images.treescan import HashCache, ScanStats, scan_tree
from roost.wire.messages import ImageChunk, ImageChunkRequest

# How long a chunk request waits for its bytes while the blob is stored, and
# how often it looks at what tar has written.
STORING_WAIT_S = 10.0
_LOOK_S = 0.005


@dataclass(frozen=True)
class Named:
    """A layer's name by its files, the size its archive will have, and the
    archive's head (the manifest as its first member)."""

    digest: str
    size: int
    head: bytes
    stats: ScanStats


def name_by_files(tree: Path, cache: HashCache) -> Named:
    """Name the tree at `tree` by its file manifest (blocking; reads only unseen files)."""
    manifest, stats = scan_tree(tree, cache)
    data = encode_file_manifest(manifest, check=False)  # scan_tree's: checked as made
    head = archive_head(data)
    return Named(file_manifest_digest(data), archive_size(manifest, len(head)), head, stats)


def pack_named(
    store: ImageStore,
    tree: Path,
    named: Named,
    user: BuildUser,
    abort: threading.Event,
    *,
    writing: Callable[[Path], None] | None = None,
    check_members: bool = True,
) -> tuple[str, int, bool]:
    """Store the archive of the layer at `tree`, named `named`: its manifest, then GNU
    tar of the tree as `user` (blocking): (digest, size, newly stored). The builder's
    pack (roost.builder.layers), and a layer packed as a builder packs it elsewhere."""
    return pack_tree(
        store, tree, sorted(os.listdir(tree)), LAYER_TAR_FLAGS, user, abort,
        writing=writing, files=(named.digest, named.head), check_members=check_members,
    )  # fmt: skip


@dataclass
class Storing:
    """A blob named and being stored: its size, the temporary file tar fills
    (set once it exists), and `done`, resolved when it is committed or failed."""

    size: int
    done: asyncio.Future[None]
    tmp: Path | None = field(default=None)


async def serve_while_storing(entry: Storing, msg: ImageChunkRequest) -> ImageChunk | None:
    """The chunk from what is written of the blob so far, once that far; None when the
    blob is stored (or failed) first, or after STORING_WAIT_S: the store answers then."""
    if msg.offset < 0 or msg.length <= 0 or msg.offset >= entry.size:
        end = -1  # nothing to serve early: the store's answer, once it can give one
    else:
        end = min(msg.offset + min(msg.length, MAX_CHUNK), entry.size)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STORING_WAIT_S
    while not entry.done.done() and (left := deadline - loop.time()) > 0:
        tmp = entry.tmp
        if end > 0 and tmp is not None:
            data = await asyncio.to_thread(_written, tmp, msg.offset, end)
            if data is not None:
                return ImageChunk(digest=msg.digest, offset=msg.offset, total=entry.size, data=data)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(entry.done), min(_LOOK_S, left))
    return None


def _written(tmp: Path, start: int, end: int) -> bytes | None:
    """Bytes [start, end) of the growing file, once it holds them; None before (or gone)."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # committed (or failed) meanwhile
    try:
        if os.fstat(fd).st_size < end:
            return None
        return os.pread(fd, end - start, start)
    finally:
        os.close(fd)
