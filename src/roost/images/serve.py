"""The image store's side of the wire: answer ImageChunkRequest from a store."""

from __future__ import annotations

from roost.images.digest import ImageError
from roost.images.store import ImageStore
from roost.wire.messages import Error, ImageChunk, ImageChunkRequest

# Largest chunk one reply carries; clients ask for less (see fetch.CHUNK).
MAX_CHUNK = 8 << 20


def handle_image_request(store: ImageStore, msg: ImageChunkRequest) -> ImageChunk | Error:
    """One chunk of a stored file. Unknown or malformed digests get an Error."""
    if msg.offset < 0 or msg.length <= 0:
        return Error(message=f"bad chunk request: offset={msg.offset} length={msg.length}")
    try:
        total, data = store.read_chunk(msg.digest, msg.offset, min(msg.length, MAX_CHUNK))
    except ImageError as exc:
        return Error(message=str(exc))
    return ImageChunk(digest=msg.digest, offset=msg.offset, total=total, data=data)
