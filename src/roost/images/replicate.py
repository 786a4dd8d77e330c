"""Copy an image from another host's store into this one (replication).

What is done: `pull_into_store` copies one image by digest from any image
store endpoint into a local ImageStore, verified, atomically; a second builder
or a runner with a store calls it. What is not done here: deciding *which*
host holds the second copy and marking a release ready only once two copies
exist — that is the controller's bookkeeping, which asks a host to pull.
"""

from __future__ import annotations

from roost.images.digest import DigestMismatch
from roost.images.fetch import iter_chunks
from roost.images.store import ImageStore
from roost.wire.rpc import RpcClient


async def pull_into_store(client: RpcClient, digest: str, store: ImageStore) -> str:
    """Ensure `store` holds `digest`, pulling it over the wire if needed."""
    if store.has(digest):
        return digest
    with store.writer(expected=digest) as w:
        async for data in iter_chunks(client, digest):
            w.write(data)
        try:
            return w.commit()
        except DigestMismatch as exc:
            raise DigestMismatch(f"replica of {digest} arrived corrupted: {exc}") from None
