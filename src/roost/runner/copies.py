"""The runner's copy store: verified copies of images it serves to other hosts.

Theory of operation: when the controller asks for a second copy of a new
image (ImageCopy), the runner pulls its manifest and layers, verified,
into its own ImageStore (DATA/runner/store), from the builders or, failing
them, from other hosts holding a copy. A release's static bundle, asked
for the same way, is a plain blob: pulled alone. Other runners fetch from it with
ImageChunkRequest on this runner's RPC endpoint (the one its heartbeats
advertise, which the controller hands out as a source). The runner's own
image cache is filled from this store by hard links, without the network.

Retention: after each pull the runner asks a controller which of its images
a release still uses (ImageRetainRequest; see roost.controller.copies for
the rule) and, when the store is over its size bound, deletes least
recently copied images (and layers nothing kept names) outside that
set, sparing anything younger than RECENT_S (see roost.images.retention).
When no controller answers, nothing is deleted: a copy the controller
relies on never disappears on a guess. Pulls and pruning take turns (one
lock), so a prune never removes a layer a pull just found present.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from roost.images import retention
from roost.images.serve import handle_image_request
from roost.images.sources import RemoteStore, SourcePlan, ask_holders
from roost.images.store import ImageStore
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    ImageChunkRequest,
    ImageRetain,
    ImageRetainRequest,
    Msg,
)
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.runner")

ASK_TIMEOUT_S = 3.0
# A copy younger than this is never pruned: the controller records it only
# after this runner confirms it.
RECENT_S = 600.0


class CopyDirectory:
    """Asks the controllers where copies are and which ones must stay."""

    def __init__(
        self,
        controllers: RpcClient,
        host_id: str,
        client_for: Callable[[Endpoint], RpcClient],
    ) -> None:
        self.controllers = controllers
        self.host_id = host_id
        self.client_for = client_for

    async def holders(self, digest: str) -> list[RemoteStore]:
        """Other live hosts holding `digest` (a client each, owned by the caller)."""
        return await ask_holders(
            self.controllers, digest, self.host_id, self.client_for, ASK_TIMEOUT_S
        )

    async def retained(self, held: list[str]) -> set[str] | None:
        """The held images a release still uses; None when no controller answered."""
        try:
            reply = await self.controllers.call(
                ImageRetainRequest(host_id=self.host_id, held=held), timeout=ASK_TIMEOUT_S
            )
        except (RpcTimeout, RemoteError) as exc:
            log.warning("no controller said which image copies to keep: %s", exc)
            return None
        return set(reply.digests) if isinstance(reply, ImageRetain) else None


class Copies:
    """This host's copies: pulled when the controller asks, served, bounded."""

    def __init__(
        self,
        store: ImageStore,
        max_bytes: int,
        builders: Sequence[RemoteStore],
        directory: CopyDirectory | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.builders = list(builders)
        self.directory = directory
        self._clock = clock
        self._lock = asyncio.Lock()
        store.clean_tmp()  # leftovers of pulls a crash interrupted

    def plan(self, digest: str) -> SourcePlan:
        """Where to get `digest` from: the builders, then other hosts holding a copy."""
        more = None
        if self.directory is not None:
            directory = self.directory

            async def more_sources() -> list[RemoteStore]:
                return await directory.holders(digest)

            more = more_sources
        return SourcePlan(self.builders, more)

    async def hold(self, digest: str) -> None:
        """Hold a verified copy of `digest` and its layers, then bound the store."""
        async with self._lock:
            async with self.plan(digest) as plan:
                await plan.pull(digest, self.store)
            retention.touch(self.store, digest, self._clock())
            await self._prune()

    async def prune(self) -> list[str]:
        async with self._lock:
            return await self._prune()

    async def _prune(self) -> list[str]:
        entries = await asyncio.to_thread(retention.store_entries, self.store)
        if sum(e.size for e in entries) <= self.max_bytes or self.directory is None:
            return []
        keep = await self.directory.retained(retention.top_level(entries))
        if keep is None:
            return []
        victims = retention.plan_prune(entries, self.max_bytes, keep, self._clock(), RECENT_S)
        if victims:
            log.info("image store over its bound: dropping %d blobs", len(victims))
            await asyncio.to_thread(retention.prune, self.store, victims)
            # Tell the controller what is left, so it stops handing out this host
            # as a source of what went.
            left = await asyncio.to_thread(retention.store_entries, self.store)
            await self.directory.retained(retention.top_level(left))
        return victims

    async def serve(self, msg: ImageChunkRequest) -> Msg:
        return await asyncio.to_thread(handle_image_request, self.store, msg)
