"""Layered images: a small JSON manifest naming its layers by digest.

An image digest names the sha256 of its manifest's bytes; the manifest names
each layer by the sha256 of the layer's own bytes (an uncompressed tar), or,
for a dependency layer named by its files (`LayerRef.files`), by the sha256
of its file manifest, which every copy and unpack checks the layer against
(roost.images.layerarchive); so verifying the manifest and then every layer
it names verifies the whole image. A layer is either unpacked into the image root (`path == ""`: the
code layer, a checkout plus `roost-image.json`) or mounted at `root/<path>`
(`path == "venv"`: the dependency layer), which a host unpacks once and
shares, through a symlink, between every image that names it.

Digests that do not name a manifest are plain single tars (static bundles,
and images made before layers existed); `read_manifest` tells them apart
by their first byte (a tar starts with a member name, a manifest with "{")
and refuses a file that starts like a manifest but is not a valid one.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from roost.images.digest import ImageError, parse_digest

FORMAT = 2
# Far more than any real manifest (a few hundred bytes); bounds what is parsed.
MAX_MANIFEST_BYTES = 64 << 10
_MOUNT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class LayerRef(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    digest: str
    size: int
    # "" = unpacked into the image root; else the name the shared layer
    # appears under in the root.
    path: str = ""
    # What the layer holds ("dependencies", "code"); informative only.
    kind: str = ""
    # True: `digest` names the layer's file manifest, and the layer travels
    # as an archive that begins with it (roost.images.layerarchive); False:
    # `digest` is the sha256 of the layer's tar. Left out when False, so a
    # manifest without such a layer reads as it always did, and a host too
    # old to unpack one refuses the manifest rather than misreading it.
    files: bool = False


class ImageManifest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    roost_image: int
    layers: list[LayerRef]

    @property
    def shared(self) -> list[LayerRef]:
        return [layer for layer in self.layers if layer.path]

    @property
    def rooted(self) -> list[LayerRef]:
        return [layer for layer in self.layers if not layer.path]

    @property
    def size(self) -> int:
        """Bytes of all layers (what a host with none of them downloads)."""
        return sum(layer.size for layer in self.layers)


# The first release whose hosts read a layer named by its files; a builder
# names layers so only when every runner does (the controller says so:
# BuildRequest.layer_files), since a host of an older release refuses a
# manifest with such a layer.
FILES_LAYERS_SINCE = (0, 3, 0)


def reads_files_layers(release: str) -> bool:
    """Whether a host of Roost `release` ("0.3.0.dev0"; "" from 0.1.0) reads
    layers named by their files (pure)."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", release)
    return m is not None and tuple(int(g) for g in m.groups()) >= FILES_LAYERS_SINCE


def encode_manifest(manifest: ImageManifest) -> bytes:
    """Canonical bytes (sorted keys, no whitespace): the same image, the same digest."""
    check_manifest(manifest)
    return msgspec.json.encode(manifest, order="sorted")


def check_manifest(m: ImageManifest) -> None:
    if m.roost_image != FORMAT:
        raise ImageError(f"image manifest format {m.roost_image} is not supported (want {FORMAT})")
    if not m.layers:
        raise ImageError("image manifest names no layers")
    seen: set[str] = set()
    for layer in m.layers:
        parse_digest(layer.digest)
        if layer.size < 0:
            raise ImageError(f"image manifest: layer {layer.digest} has a negative size")
        if layer.files and not layer.path:
            raise ImageError(
                f"image manifest: layer {layer.digest} is named by its files "
                "but has no path (only a shared layer may be)"
            )
        if layer.path:
            if not _MOUNT.fullmatch(layer.path) or layer.path in (".", ".."):
                raise ImageError(f"image manifest: layer path {layer.path!r} is not a plain name")
            if layer.path in seen:
                raise ImageError(f"image manifest: two layers at {layer.path!r}")
            seen.add(layer.path)


def parse_manifest(data: bytes) -> ImageManifest:
    """The manifest in `data`; ImageError when it is not a valid one."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ImageError(f"image manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        m = msgspec.json.decode(data, type=ImageManifest)
    except msgspec.DecodeError as exc:
        raise ImageError(f"malformed image manifest: {exc}") from None
    check_manifest(m)
    return m


def looks_like_manifest(head: bytes) -> bool:
    return head[:1] == b"{"


def read_manifest(path: Path) -> ImageManifest | None:
    """The manifest in the file at `path`, or None when it is a plain tar."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if not looks_like_manifest(data):
        return None
    return parse_manifest(data)
