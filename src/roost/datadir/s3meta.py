"""An object's metadata through a bucket's backup (pure: no I/O).

What is kept: the content type, the headers S3 gives back as they were put
(Cache-Control, Content-Disposition, Content-Encoding, Content-Language,
Expires), the user metadata (X-Amz-Meta-*) and the tags (X-Amz-Tagging-*,
one per tag). Never the filer's own (ETag, owner, checksums): the gateway
makes them again on the write.

Where it is read: the filer's JSON listing gives each entry's "Mime" and
"Extended" (values base64), measured on weed 4.48. Where it is kept: PAX
headers of the object's member in the bucket's tar.gz, one per name,
`ROOST.s3.<name>` (the value as the object has it). Where it goes back: a
PutObject through the gateway (x-amz-meta-* headers and x-amz-tagging):
the filer's own HTTP keeps the plain headers but drops the metadata and
tags (measured), so a restore writes through S3.

A restore's archive is hostile input: a name must be one of the kept kinds
made of HTTP token characters, a value must hold no control character
(a header's value cannot), and sizes are bounded; anything else refuses the
member, hence the archive. A pull keeps only what a restore would take, so
a bucket's own backup always restores (what it drops is logged).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

PAX_PREFIX = "ROOST.s3."
CONTENT_TYPE = "Content-Type"
# Headers kept by name (as the filer's Extended spells them).
PLAIN = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")
META_PREFIX = "X-Amz-Meta-"
TAG_PREFIX = "X-Amz-Tagging-"
# Bounds well above S3's own (2 KB of user metadata, 10 tags of 128/256).
MAX_NAMES = 64
MAX_VALUE = 8192
MAX_TOTAL = 32768

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# No control character (CR and LF above all: a header's end); tab is allowed.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class BadMetadata(ValueError):
    """A name or value an object's metadata cannot hold (the message says which)."""


def _kind(name: str) -> str:
    """The kept spelling of header `name`, or "" when it is not kept."""
    low = name.lower()
    if low == CONTENT_TYPE.lower():
        return CONTENT_TYPE
    for plain in PLAIN:
        if low == plain.lower():
            return plain
    for prefix in (META_PREFIX, TAG_PREFIX):
        if low.startswith(prefix.lower()) and len(name) > len(prefix):
            return prefix + name[len(prefix) :]
    return ""


def check(meta: dict[str, str]) -> None:
    """BadMetadata unless every name is a kept kind of HTTP token characters
    and every value a header's, within the bounds."""
    if len(meta) > MAX_NAMES:
        raise BadMetadata(f"{len(meta)} metadata names (at most {MAX_NAMES})")
    total = 0
    for name, value in meta.items():
        if not _TOKEN.match(name) or _kind(name) != name:
            raise BadMetadata(f"metadata name {name!r} is not one kept")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadMetadata(f"metadata {name} is not UTF-8") from None
        total += size + len(name)
        if size > MAX_VALUE:
            raise BadMetadata(f"metadata {name} has {size} bytes (at most {MAX_VALUE})")
        if _BAD_VALUE.search(value):
            raise BadMetadata(f"metadata {name} holds a control character")
        if not name.startswith(TAG_PREFIX) and not value.isascii():
            # Sent as a header's value as it is: ASCII only (a tag goes URL-encoded).
            raise BadMetadata(f"metadata {name} is not ASCII")
    if total > MAX_TOTAL:
        raise BadMetadata(f"metadata of {total} bytes (at most {MAX_TOTAL})")


def of_entry(entry: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The kept metadata of one entry of the filer's JSON listing, and the
    names of those dropped because a restore could not put them back."""
    found: dict[str, str] = {}
    dropped: list[str] = []
    mime = entry.get("Mime")
    if isinstance(mime, str) and mime:
        found[CONTENT_TYPE] = mime
    extended = entry.get("Extended") or {}
    for name, raw in extended.items() if isinstance(extended, dict) else ():
        kept = _kind(str(name))
        if not kept:
            continue  # the filer's own: ETag, owner, checksums
        try:
            found[kept] = base64.b64decode(str(raw), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            dropped.append(kept)
    out: dict[str, str] = {}
    for name, value in found.items():
        try:
            check({name: value})
        except BadMetadata:
            dropped.append(name)
            continue
        out[name] = value
    try:
        check(out)
    except BadMetadata:
        return {}, sorted(out)  # too much altogether: bytes kept, metadata not
    return out, dropped


def to_pax(meta: dict[str, str]) -> dict[str, str]:
    return {PAX_PREFIX + name: value for name, value in sorted(meta.items())}


def of_pax(pax: Mapping[str, str]) -> dict[str, str]:
    """The metadata an archive member's PAX headers hold (none: an archive
    from before metadata was kept), checked (BadMetadata)."""
    meta = {k[len(PAX_PREFIX) :]: v for k, v in pax.items() if k.startswith(PAX_PREFIX)}
    check(meta)
    return meta


def put_headers(meta: dict[str, str]) -> dict[str, str]:
    """The headers of a PutObject that gives an object `meta` (checked
    already): the plain ones and x-amz-meta-* as they are, the tags as one
    URL-encoded x-amz-tagging."""
    headers: dict[str, str] = {}
    tags: list[tuple[str, str]] = []
    for name, value in sorted(meta.items()):
        if name.startswith(TAG_PREFIX):
            tags.append((name[len(TAG_PREFIX) :], value))
        elif name.startswith(META_PREFIX):
            headers[name.lower()] = value
        else:
            headers[name] = value
    if tags:
        headers["x-amz-tagging"] = urllib.parse.urlencode(tags, quote_via=urllib.parse.quote)
    return headers
