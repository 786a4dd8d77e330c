"""The runner's images: `roost.images`' cache, filled from the image store.

`ImageCache.ensure` downloads (through `fetch_image` over the wire), verifies,
unpacks and pins each image once; the supervisor releases it when no instance
uses it any more, and the cache evicts unpinned images past its size limit.
"""

from __future__ import annotations

from pathlib import Path

from roost.images.cache import ImageCache
from roost.images.digest import ImageError
from roost.images.fetch import fetch_image
from roost.wire.rpc import RpcClient


class CachedImages:
    def __init__(self, cache: ImageCache, client: RpcClient | None) -> None:
        self.cache = cache
        self.client = client

    async def ensure(self, app: str, digest: str) -> Path:
        return await self.cache.ensure(digest, self._download, pin=True)

    async def _download(self, digest: str, dest_dir: Path) -> Path:
        if self.client is None:
            raise ImageError("cluster.json lists no image store ('images' role) to fetch from")
        return await fetch_image(self.client, digest, dest_dir)

    async def replicate(self, digest: str) -> Path:
        """A verified, unpinned copy (a second home for a new image)."""
        return await self.cache.ensure(digest, self._download, pin=False)

    def release(self, digest: str) -> None:
        self.cache.unpin(digest)
