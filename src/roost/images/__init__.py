"""Content-addressed images: the store, fetching over the wire, the host's cache.

Shared by the builder (which writes images and serves them), runners (which
fetch, verify, unpack and cache them) and routers (which fetch static bundles
the same way). Every blob is named by `sha256:<hex>` of its bytes, but for a
dependency layer named by its file manifest (roost.images.layerarchive),
whose archive is checked against that manifest. An image is a small
manifest naming its layers by digest (roost.images.manifest): the
dependency layer (a relocatable virtualenv, shared by every release built
from the same lock) and the code layer; a static bundle is a single tar.
"""

from roost.images.digest import (
    ArchiveRefused,
    DigestMismatch,
    ImageError,
    format_digest,
    parse_digest,
)
from roost.images.manifest import ImageManifest, LayerRef
from roost.images.store import ImageStore

__all__ = [
    "ArchiveRefused",
    "DigestMismatch",
    "ImageError",
    "ImageManifest",
    "ImageStore",
    "LayerRef",
    "format_digest",
    "parse_digest",
]
