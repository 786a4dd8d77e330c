"""What the controller answers runners about image replicas.

Any replica answers (no lease needed): holders come from the state database
(`image_replicas`, written when a runner confirms an ImageReplicate) and
liveness and endpoints from this replica's soft state, which every
controller rebuilds from heartbeats.
"""

from __future__ import annotations

from roost.controller.core import Controller
from roost.controller.replicas import needed_images, replica_sources
from roost.images.digest import ImageError, parse_digest
from roost.wire.messages import (
    Error,
    ImageRetain,
    ImageRetainRequest,
    ImageSources,
    ImageSourcesRequest,
    Msg,
)

IMAGE_MESSAGES = (ImageSourcesRequest, ImageRetainRequest)


class ImageRpc:
    def __init__(self, controller: Controller) -> None:
        self.c = controller

    async def handle(self, msg: Msg) -> Msg:
        if isinstance(msg, ImageSourcesRequest):
            try:
                parse_digest(msg.digest)
            except ImageError as exc:
                return Error(message=str(exc))
            holders = await self.c.store.replica_hosts(msg.digest)
            alive = {s.heartbeat.host_id: s.heartbeat for s in self.c.soft.alive_hosts()}
            return ImageSources(
                digest=msg.digest, sources=replica_sources(holders, alive, msg.host_id)
            )
        if isinstance(msg, ImageRetainRequest):
            keep = await self._retain(msg.host_id, set(msg.held))
            return ImageRetain(digests=sorted(keep))
        return Error(message=f"controller does not handle {type(msg).__name__}")

    async def _retain(self, host_id: str, held: set[str]) -> set[str]:
        """The held images the host must keep; forgets the copies it no longer holds."""
        store = self.c.store
        await store.forget_replicas(host_id, await store.host_replicas(host_id) - held)
        releases, current = await store.release_images()
        return held & needed_images(releases, current)
