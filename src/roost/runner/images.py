"""The runner's images: `roost.images`' cache, filled from the image stores.

`ImageCache.ensure` downloads, verifies, unpacks and pins each image once;
the supervisor releases it when no instance uses it any more, and the cache
evicts unpinned images past its size limit. A blob is taken from this
host's own copy store when it is there (a hard link, after checking its
digest), else over the wire from the builders' stores or, when none of them
can serve it, from other runners holding a copy (roost.runner.copies,
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
from roost.runner.copies import Copies

log = logging.getLogger("roost.runner")


class CachedImages:
    def __init__(self, cache: ImageCache, copies: Copies) -> None:
        self.cache = cache
        self.copies = copies
        self._local = store_fetcher(copies.store)

    async def ensure(self, app: str, digest: str) -> Path:
        async with self.copies.plan(digest) as plan:

            async def fetch(blob: str, dest_dir: Path) -> Path:
                return await self._download(plan, blob, dest_dir)

            return await self.cache.ensure(digest, fetch, pin=True)

    async def _download(self, plan: SourcePlan, blob: str, dest_dir: Path) -> Path:
        store = self.copies.store
        if store.has(blob):
            try:
                if await asyncio.to_thread(store.verify, blob):
                    return await self._local(blob, dest_dir)
                log.warning("copied blob %s is corrupted: dropped, fetching it again", blob)
                store.delete(blob)
            except (ImageError, OSError):
                pass  # pruned meanwhile: fetch it over the wire
        return await plan.fetch(blob, dest_dir)

    def release(self, digest: str) -> None:
        self.cache.unpin(digest)
