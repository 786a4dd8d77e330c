"""Pull an image over the wire in chunks, verify its digest, land it atomically.

Theory of operation: chunks are requested in order with a small window of
requests in flight (the RpcClient spreads and retries them across the image
stores it knows); each reply is checked against what was asked (digest, offset,
length, a constant total), hashed and written in order. The file appears under
its final name only after the whole thing hashes to the digest asked for;
on any failure the partial file is removed, so a caller never finds a
corrupted image where it expects a verified one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from roost.images.digest import DigestMismatch, ImageError, format_digest, parse_digest
from roost.images.layerarchive import check_head
from roost.images.store import ImageStore
from roost.wire.messages import ImageChunk, ImageChunkRequest
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

CHUNK = 4 << 20
WINDOW = 4
CHUNK_TIMEOUT_S = 15.0


async def iter_chunks(
    client: RpcClient, digest: str, chunk: int = CHUNK, window: int = WINDOW
) -> AsyncIterator[bytes]:
    """The image's bytes in order, chunk by chunk (not yet verified)."""
    parse_digest(digest)

    async def get(offset: int) -> ImageChunk:
        try:
            reply = await client.call(
                ImageChunkRequest(digest=digest, offset=offset, length=chunk),
                timeout=CHUNK_TIMEOUT_S,
                tries=3,
            )
        except (RemoteError, RpcTimeout) as exc:
            raise ImageError(f"cannot fetch {digest} at offset {offset}: {exc}") from exc
        if not isinstance(reply, ImageChunk) or reply.digest != digest or reply.offset != offset:
            raise ImageError(f"image source sent an unexpected reply for {digest}@{offset}")
        return reply

    first = await get(0)
    total = first.total
    offsets = list(range(0, total, chunk))
    pending: dict[int, asyncio.Task[ImageChunk]] = {}
    try:
        for i, offset in enumerate(offsets):
            for ahead in offsets[i + 1 : i + 1 + window]:
                if ahead not in pending:
                    pending[ahead] = asyncio.create_task(get(ahead))
            piece = first if offset == 0 else await pending.pop(offset)
            expected_len = min(chunk, total - offset)
            if piece.total != total or len(piece.data) != expected_len:
                raise ImageError(f"image source sent a short or inconsistent chunk of {digest}")
            yield piece.data
    finally:
        for task in pending.values():
            task.cancel()
        for task in pending.values():
            with contextlib.suppress(BaseException):
                await task


async def fetch_image(client: RpcClient, digest: str, dest_dir: Path) -> Path:
    """Download `digest` to `dest_dir/<hex>` (verified); returns that path.

    Raises DigestMismatch when the bytes neither hash to `digest` nor are a
    layer archive beginning with the file manifest `digest` names (nothing
    is left behind; such an archive's members are checked where it is
    stored or unpacked: roost.images.layerarchive), ImageError when no
    source can serve it.
    """
    hexd = parse_digest(digest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / hexd
    if final.exists():
        return final
    fd, name = tempfile.mkstemp(dir=dest_dir, prefix=f".part-{hexd[:12]}-")
    tmp = Path(name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as fh:
            async for data in iter_chunks(client, digest):
                h.update(data)
                await asyncio.to_thread(fh.write, data)
        got = format_digest(h.hexdigest())
        if got != digest and not await asyncio.to_thread(_files_archive, tmp, digest):
            raise DigestMismatch(f"image {digest} arrived corrupted (its bytes hash to {got})")
        os.replace(tmp, final)
        return final
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _files_archive(path: Path, digest: str) -> bool:
    try:
        check_head(path, digest)
    except ImageError:
        return False
    return True


def store_fetcher(store: ImageStore) -> Callable[[str, Path], Awaitable[Path]]:
    """A cache fetcher reading a local store (a cache on the store's own host; tests).

    Hard-links the stored file when it can (same filesystem): no copy.
    """

    async def fetch(digest: str, dest_dir: Path) -> Path:
        src = store.path(digest)
        dest = dest_dir / parse_digest(digest)
        try:
            os.link(src, dest)
        except OSError:
            await asyncio.to_thread(shutil.copyfile, src, dest)
        return dest

    return fetch
