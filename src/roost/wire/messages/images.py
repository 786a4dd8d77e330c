"""Image store and image copies: chunks, sources, retention.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

import msgspec

from roost.wire.messages.base import Msg

# ---------------------------------------------------------------- image store


class ImageChunkRequest(Msg, frozen=True, kw_only=True):
    digest: str
    offset: int = 0
    length: int = 1 << 20


class ImageChunk(Msg, frozen=True, kw_only=True):
    digest: str
    offset: int
    total: int
    data: bytes


class ImageCopy(Msg, frozen=True, kw_only=True):
    """Controller -> runner: hold a verified copy of an image (manifest and
    layers) or a static bundle: asked of a second host before a release is
    made, so losing the builder's store never loses the image of a serving
    release."""

    digest: str


class ImageSource(msgspec.Struct, frozen=True, kw_only=True):
    """A runner that holds a copy: its RPC endpoint and CURVE key (z85)."""

    host_id: str
    endpoint: str
    key: str


class ImageSourcesRequest(Msg, frozen=True, kw_only=True):
    """Runner -> controller: which live hosts hold a copy of `digest`
    (asked when the builders' stores cannot serve it); `host_id` is the
    asker, left out of the answer."""

    digest: str
    host_id: str = ""


class ImageSources(Msg, frozen=True, kw_only=True):
    digest: str
    sources: list[ImageSource] = []


class ImageRetainRequest(Msg, frozen=True, kw_only=True):
    """Runner or builder -> controller: of the images this host's store
    holds, which must it keep? For a runner's copy store the controller also
    forgets the copies no longer `held`; a builder's store (`builder`) holds
    no recorded copies, so only the answer changes."""

    host_id: str
    held: list[str] = []
    builder: bool = False  # a builder's store asks (only a builder may say so)


class ImageRetain(Msg, frozen=True, kw_only=True):
    # The held digests a current, pending or rollback release still uses.
    digests: list[str] = []
