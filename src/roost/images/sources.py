"""Fetching a blob from whichever of several image sources can serve it.

Theory of operation: a SourcePlan covers one image (its manifest and
layers). Its sources, each a `RemoteStore` (an image store reached over
RPC), are tried in order: first the fixed ones (the builders' stores),
then, asked for once and only when every fixed source failed, further ones
(runners holding a copy, from `more()`). Before a source is used the first time it is probed
with a one-byte chunk request and a short timeout, so a dead endpoint costs
PROBE_S rather than several full chunk timeouts, and a store without the
blob says so at once. A source that fails (missing blob, silence, bytes
that do not hash to their digest) is skipped for the rest of the plan and
the next is tried; verification stays where it was (fetch_image,
pull_into_store), so a corrupted source can only cost time. Clients that
came from `more()` belong to the plan and are closed with it.

`ask_holders` is the usual `more()`: it asks a controller which live hosts
hold a copy of the digest (ImageSourcesRequest). Runners and routers
both use it, so a static bundle reaches a router the way an image reaches a
runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from roost.images.digest import DigestMismatch, ImageError
from roost.images.fetch import fetch_image
from roost.images.pull import pull_into_store
from roost.images.store import ImageStore
from roost.wire.cluster import Endpoint
from roost.wire.messages import ImageChunk, ImageChunkRequest, ImageSources, ImageSourcesRequest
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.images")

PROBE_S = 3.0
ASK_TIMEOUT_S = 3.0
T = TypeVar("T")


@dataclass(frozen=True)
class RemoteStore:
    """An image store reached over RPC: a builder's, or a runner's copies."""

    name: str  # for messages: "builders", "host h2"
    client: RpcClient


MoreSources = Callable[[], Awaitable[list[RemoteStore]]]


async def ask_holders(
    controllers: RpcClient,
    digest: str,
    asker: str,
    client_for: Callable[[Endpoint], RpcClient],
    timeout: float = ASK_TIMEOUT_S,
) -> list[RemoteStore]:
    """Live hosts a controller names as holders of `digest` (but `asker`), a
    client each, owned by the caller (a SourcePlan closes them). [] when no
    controller answers: the caller then has only its fixed sources."""
    try:
        reply = await controllers.call(
            ImageSourcesRequest(digest=digest, host_id=asker), timeout=timeout
        )
    except (RpcTimeout, RemoteError) as exc:
        log.warning("no controller said where copies of %s are: %s", digest, exc)
        return []
    if not isinstance(reply, ImageSources):
        return []
    return [
        RemoteStore(f"host {s.host_id}", client_for(Endpoint(s.endpoint, s.key)))
        for s in reply.sources
    ]


async def probe(client: RpcClient, digest: str, timeout: float = PROBE_S) -> str:
    """ "" when the source answers with the blob's first byte, else why not."""
    try:
        reply = await client.call(
            ImageChunkRequest(digest=digest, offset=0, length=1),
            timeout=timeout,
            tries=len(client.endpoints),
        )
    except RemoteError as exc:
        return str(exc)
    except RpcTimeout:
        return "did not answer"
    if not isinstance(reply, ImageChunk) or reply.digest != digest:
        return "sent an unexpected reply"
    return ""


class SourcePlan:
    def __init__(
        self,
        fixed: Sequence[RemoteStore],
        more: MoreSources | None = None,
        probe_s: float = PROBE_S,
    ) -> None:
        self._sources = list(fixed)
        self._more = more
        self._owned: list[RemoteStore] = []
        self._asked = asyncio.Lock()
        self._probe_s = probe_s
        self.good: set[str] = set()
        self.bad: dict[str, str] = {}  # source name -> why it was dropped
        self.corrupted: set[str] = set()  # sources that sent bytes not matching their digest

    async def __aenter__(self) -> SourcePlan:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        owned, self._owned = self._owned, []
        for src in owned:
            await src.client.close()

    async def fetch(self, digest: str, dest_dir: Path) -> Path:
        """fetch_image from the first source that can serve `digest`."""
        return await self.run(digest, lambda client: fetch_image(client, digest, dest_dir))

    async def pull(self, digest: str, store: ImageStore) -> str:
        """pull_into_store (manifest and layers) from the first source that can."""
        return await self.run(digest, lambda client: pull_into_store(client, digest, store))

    async def run(self, digest: str, op: Callable[[RpcClient], Awaitable[T]]) -> T:
        i = 0
        while True:
            if i >= len(self._sources):
                await self._ask_more()
                if i >= len(self._sources):
                    break
            src = self._sources[i]
            i += 1
            if src.name in self.bad:
                continue
            if src.name not in self.good:
                why = await probe(src.client, digest, self._probe_s)
                if why:
                    self._drop(src, digest, why)
                    continue
                self.good.add(src.name)
            try:
                return await op(src.client)
            except DigestMismatch as exc:
                self.corrupted.add(src.name)
                self._drop(src, digest, str(exc))
            except ImageError as exc:
                self._drop(src, digest, str(exc))
        reasons = "; ".join(f"{name}: {why}" for name, why in self.bad.items())
        text = f"no image source could serve {digest} ({reasons or 'no source known'})"
        if self.corrupted:
            raise DigestMismatch(text)
        raise ImageError(text)

    def _drop(self, src: RemoteStore, digest: str, why: str) -> None:
        self.good.discard(src.name)
        self.bad[src.name] = why
        log.warning("image source %s cannot serve %s: %s", src.name, digest, why)

    async def _ask_more(self) -> None:
        """Append the further sources, once (concurrent callers wait for it)."""
        async with self._asked:
            if self._more is None:
                return
            more, self._more = self._more, None
            known = {s.name for s in self._sources}
            for src in await more():
                self._owned.append(src)
                if src.name not in known:
                    known.add(src.name)
                    self._sources.append(src)
