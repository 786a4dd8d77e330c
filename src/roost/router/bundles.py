"""Static bundles: fetched from the image store in the background, never on a request.

The route table names each app's bundle by digest. When a table arrives with
digests this worker does not have, they are queued; a background task fetches
them through `roost.images` (download, verify, unpack into a local cache;
from the builders' stores, else from runners holding a copy) a few at a
time, retrying failures with backoff, and publishes each ready
directory in `ctx.bundles`. Until then requests under a static prefix go to
the app. Bundles the table no longer names are unpinned (the cache may evict
them) and forgotten.

A bundle is unpacked by roost.router.unpack, not GNU tar: regular files and
directories only, so no link a build planted reaches the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from roost import aio
from roost.proc.backoff import Backoff
from roost.router.context import Context
from roost.router.table import RouteTable

if TYPE_CHECKING:
    from roost.images.sources import RemoteStore
    from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.router.bundles")

# A bundle that could not be fetched is tried again after 1 s, doubling to a minute.
BUNDLE_BACKOFF = Backoff(base_s=1.0, max_s=60.0)

# ensure(digest) -> unpacked directory; raises on failure.
Ensure = Callable[[str], Awaitable[Path]]


class BundleKeeper:
    def __init__(self, ctx: Context, ensure: Ensure | None, *, parallel: int = 2) -> None:
        self.ctx = ctx
        self.ensure = ensure
        self.parallel = parallel
        self.wanted: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._inflight: set[str] = set()
        self._wake = asyncio.Event()
        self.on_release: Callable[[str], None] | None = None

    def update(self, table: RouteTable) -> None:
        wanted = {e.route.static_bundle for e in table.apps.values() if e.route.static_bundle}
        for digest in list(self.ctx.bundles):
            if digest not in wanted:
                del self.ctx.bundles[digest]
                if self.on_release is not None:
                    self.on_release(digest)
        self.wanted = wanted
        if any(d not in self.ctx.bundles for d in wanted):
            self._wake.set()

    def _due(self, now: float) -> list[str]:
        return sorted(
            d
            for d in self.wanted
            if d not in self.ctx.bundles
            and d not in self._inflight
            and self._retry_at.get(d, 0.0) <= now
        )

    async def run(self) -> None:
        if self.ensure is None:
            await asyncio.Event().wait()  # nothing can be fetched; idle until cancelled
        async with asyncio.TaskGroup() as tg:
            while True:
                due = self._due(time.monotonic())
                for digest in due[: max(0, self.parallel - len(self._inflight))]:
                    self._inflight.add(digest)
                    tg.create_task(self._fetch(digest))
                self._wake.clear()
                try:
                    await aio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass

    async def _fetch(self, digest: str) -> None:
        assert self.ensure is not None
        try:
            path = await self.ensure(digest)
        except Exception as exc:  # any failure: retry later, keep serving
            n = self._failures.get(digest, 0) + 1
            self._failures[digest] = n
            delay = BUNDLE_BACKOFF.delay(n)
            self._retry_at[digest] = time.monotonic() + delay
            log.warning(
                "static bundle %s not fetched (%s); retrying in %.0fs", digest[:19], exc, delay
            )
        else:
            self._failures.pop(digest, None)
            self._retry_at.pop(digest, None)
            if digest in self.wanted:
                self.ctx.bundles[digest] = path
                log.info("static bundle %s ready", digest[:19])
        finally:
            self._inflight.discard(digest)
            self._wake.set()


def image_cache_ensure(
    cache_dir: Path,
    max_bytes: int,
    client: RpcClient | None,
    holders: Callable[[str], Awaitable[list[RemoteStore]]] | None = None,
) -> tuple[Ensure, Callable[[str], None]]:
    """An `Ensure` backed by roost.images (cache + chunked fetch over the wire),
    and the matching release callback (unpin).

    `client` reaches the builders' image stores; `holders(digest)`, when
    given, names further sources (roost.images.sources.RemoteStore: runners
    holding a copy, as a controller says), tried when no builder can
    serve the bundle (roost.images.sources.SourcePlan)."""
    from roost.images.cache import ImageCache
    from roost.images.sources import RemoteStore, SourcePlan
    from roost.router.unpack import unpack_bundle_async

    cache = ImageCache(cache_dir, max_bytes, unpack_plain=unpack_bundle_async)
    fixed = [RemoteStore("builders", client)] if client is not None else []

    async def fetcher(digest: str, dest: Path) -> Path:
        more = None
        if holders is not None:
            ask = holders

            async def more_sources() -> list[RemoteStore]:
                return await ask(digest)

            more = more_sources
        async with SourcePlan(fixed, more) as plan:
            return await plan.fetch(digest, dest)

    async def ensure(digest: str) -> Path:
        if cache.has(digest) and digest in cache.pinned():
            return cache.path(digest)
        return await cache.ensure(digest, fetcher, pin=True)

    return ensure, cache.unpin
