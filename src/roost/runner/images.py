"""The runner's images: `roost.images`' cache, filled from the image stores.

`ImageCache.ensure` downloads, verifies, unpacks and pins each image once;
the supervisor releases it when no instance uses it any more, and the cache
evicts unpinned images past its size limit. A blob is taken from this
host's own replica store when it is there (a hard link, after checking its
digest), else over the wire from the builders' stores or, when none of them
can serve it, from other runners holding a replica (roost.runner.replicas,
roost.images.sources).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from roost.images.cache import ImageCache
from roost.images.digest import ImageError
from roost.images.fetch import store_fetcher
from roost.images.sources import SourcePlan
from roost.runner.replicas import Replicas

log = logging.getLogger("roost.runner")


class CachedImages:
    def __init__(self, cache: ImageCache, replicas: Replicas) -> None:
        self.cache = cache
        self.replicas = replicas
        self._local = store_fetcher(replicas.store)

    async def ensure(self, app: str, digest: str) -> Path:
        async with self.replicas.plan(digest) as plan:

            async def fetch(blob: str, dest_dir: Path) -> Path:
                return await self._download(plan, blob, dest_dir)

            return await self.cache.ensure(digest, fetch, pin=True)

    async def _download(self, plan: SourcePlan, blob: str, dest_dir: Path) -> Path:
        store = self.replicas.store
        if store.has(blob):
            try:
                if await asyncio.to_thread(store.verify, blob):
                    return await self._local(blob, dest_dir)
                log.warning("replica blob %s is corrupted: dropped, fetching it again", blob)
                store.delete(blob)
            except (ImageError, OSError):
                pass  # pruned meanwhile: fetch it over the wire
        return await plan.fetch(blob, dest_dir)

    async def replicate(self, digest: str) -> None:
        """A verified copy in this host's store (a second home for a new image)."""
        await self.replicas.replicate(digest)

    def release(self, digest: str) -> None:
        self.cache.unpin(digest)
