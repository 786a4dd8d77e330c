"""Content-addressed images: the store, fetching over the wire, the runner's cache.

Shared by the builder (which writes images and serves them), runners (which
fetch, verify, unpack and cache them) and routers (which fetch static bundles
the same way). Every image is named by `sha256:<hex>` of its archive bytes.
"""

from roost.images.digest import DigestMismatch, ImageError, format_digest, parse_digest
from roost.images.store import ImageStore

__all__ = ["DigestMismatch", "ImageError", "ImageStore", "format_digest", "parse_digest"]
