"""What the controller answers runners (and routers) about image copies.

Any controller replica answers (no lease needed): holders come from the
state database (`image_copies`, written when a runner confirms an
ImageCopy) and liveness and endpoints from this replica's soft state,
which every controller rebuilds from heartbeats.
"""

from __future__ import annotations

from roost.controller.copies import copy_sources, needed_images
from roost.controller.core import Controller
from roost.images.digest import ImageError, parse_digest
from roost.wire.dispatch import Entry, on
from roost.wire.messages import (
    Error,
    ImageRetain,
    ImageRetainRequest,
    ImageSources,
    ImageSourcesRequest,
    Msg,
)


class ImageRpc:
    def __init__(self, controller: Controller) -> None:
        self.c = controller

    def entries(self) -> list[Entry]:
        """The image questions, for the controller's table."""
        return [on(ImageSourcesRequest, self.sources), on(ImageRetainRequest, self.retain)]

    async def sources(self, msg: ImageSourcesRequest) -> Msg:
        try:
            parse_digest(msg.digest)
        except ImageError as exc:
            return Error(message=str(exc))
        holders = await self.c.store.copy_hosts(msg.digest)
        alive = {s.heartbeat.host_id: s.heartbeat for s in self.c.soft.alive_hosts()}
        return ImageSources(digest=msg.digest, sources=copy_sources(holders, alive, msg.host_id))

    async def retain(self, msg: ImageRetainRequest) -> Msg:
        keep = await self._retain(msg.host_id, set(msg.held), copies=not msg.builder)
        return ImageRetain(digests=sorted(keep))

    async def _retain(self, host_id: str, held: set[str], copies: bool = True) -> set[str]:
        """The held images the host must keep; for a runner's copy store
        (`copies`), forgets the copies it no longer holds."""
        store = self.c.store
        if copies:
            await store.forget_copies(host_id, await store.host_copies(host_id) - held)
        releases, current = await store.release_images()
        return held & needed_images(releases, current, self.c.settings.keep_releases)
