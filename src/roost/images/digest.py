"""Digest strings (`sha256:<64 hex>`) and the errors of the image library.

A digest is also a file name in the store and the cache, so it is validated
strictly before it touches a path: nothing else may reach the filesystem.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


class ImageError(Exception):
    """An image operation failed; the message says why."""


class DigestMismatch(ImageError):
    """Bytes received or stored do not hash to the digest that names them."""


class ArchiveRefused(DigestMismatch):
    """A layer named by its files is not what its file manifest lists (an archive
    or the tree unpacked from it; roost.images.layerarchive): bytes that are not
    what their name says."""


class ImageNotFound(ImageError):
    """No image with this digest here."""


def parse_digest(digest: str) -> str:
    """The hex part of a well-formed digest; ImageError otherwise."""
    m = _DIGEST.fullmatch(digest)
    if m is None:
        raise ImageError(f"malformed image digest {digest!r} (expected sha256:<64 hex digits>)")
    return m.group(1)


def format_digest(hexdigest: str) -> str:
    return f"sha256:{hexdigest}"


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    """`sha256:<hex>` of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return format_digest(h.hexdigest())
