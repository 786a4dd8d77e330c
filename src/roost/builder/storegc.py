"""Collecting the builder's image store: what no release keeps goes.

Theory of operation: every image a builder makes lands in its store
(DATA/builder/store), which serves it to runners; without collection every
image ever built stayed there until the disk was full. After each build,
and every COLLECT_EVERY_S, the builder asks a controller which of the
images and static bundles it holds a release still keeps
(`ImageRetainRequest` with `builder=True`; the rule is the runners' copies'
one, `controller/copies.py`: each app's current and pending releases and
its newest ROOST_KEEP_RELEASES served images) and deletes every other blob
(`images/retention.py`: an image, then the layers only it named) except:

- the blobs of the dependency layers the builder keeps ready: a build that
  reuses a layer names its stored blob without writing it again;
- anything younger than RECENT_S: an image whose deploy has not made its
  release yet (building, copying, the release phase), a layer being packed.

No answer from a controller, nothing deleted. The deletion itself runs
while no build does (`BuildManager.collect_store`), so no build names a
blob as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from roost.builder.layers import read_ready
from roost.builder.workspace import Workspace
from roost.images import retention
from roost.images.eviction import CacheEntry
from roost.images.store import ImageStore
from roost.wire.messages import ImageRetain, ImageRetainRequest, Msg

log = logging.getLogger("roost.builder")

# Blobs younger than this stay: their release may not exist yet (a deploy
# copies, runs its release phase, up to ROOST_RELEASE_TIMEOUT_S, an hour by
# default, and then makes it).
RECENT_S = 7200.0
COLLECT_EVERY_S = 600.0

Ask = Callable[[Msg], Awaitable[Msg]]


def ready_layer_blobs(ws: Workspace) -> set[str]:
    """The stored blobs of the dependency layers this builder keeps ready."""
    out: set[str] = set()
    for root in ws.layer_roots():
        with contextlib.suppress(FileNotFoundError):
            for p in root.iterdir():
                if p.name.startswith("."):
                    continue
                blob = read_ready(ws, p)
                if blob is not None:
                    out.add(blob.digest)
    return out


def plan_collect(
    entries: list[CacheEntry], keep: set[str], now: float, recent_s: float = RECENT_S
) -> list[str]:
    """Blobs to delete, in order: all that neither `keep` nor youth spares
    (a kept image's layers stay with it)."""
    return retention.plan_prune(entries, 0, keep, now, recent_s)


class StoreCollector:
    def __init__(
        self,
        store: ImageStore,
        ask: Ask,
        host_id: str,
        ready_blobs: Callable[[], set[str]],
    ) -> None:
        self.store = store
        self.ask = ask
        self.host_id = host_id
        self.ready_blobs = ready_blobs

    async def retained(self) -> set[str] | None:
        """What a release keeps of what the store holds; None without an answer."""
        entries = await asyncio.to_thread(retention.store_entries, self.store)
        held = retention.top_level(entries)
        if not held:
            return set()
        msg = ImageRetainRequest(host_id=self.host_id, held=held, builder=True)
        try:
            reply = await self.ask(msg)
        except Exception as exc:
            log.warning("no controller said which images to keep: %s", exc)
            return None
        if not isinstance(reply, ImageRetain):
            log.warning("asked which images to keep, a controller answered %s", reply)
            return None
        return set(reply.digests)

    async def collect(self, keep: set[str], now: float) -> list[str]:
        """Delete what `keep` (an answer of `retained`) and the ready layers
        leave; the digests deleted."""
        return await asyncio.to_thread(self._collect, keep, now)

    def _collect(self, keep: set[str], now: float) -> list[str]:
        entries = retention.store_entries(self.store)
        victims = plan_collect(entries, keep | self.ready_blobs(), now)
        if victims:
            retention.prune(self.store, victims)
            log.info("image store: collected %d blobs no release keeps", len(victims))
        return victims
