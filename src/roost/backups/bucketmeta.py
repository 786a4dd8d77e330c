"""Objects' metadata through backupd's snapshot of a bucket (datadir/s3meta).

The servicehost's bucket archive keeps each object's metadata (content
type, headers, user metadata, tags) in its member's PAX headers. backupd
unpacks the archive into files for the repository, which would drop them,
so they go beside the objects: `bucket-meta.json` in the snapshot (key ->
metadata, objects with none left out), and the facts record a digest per
object (`bucket_meta`) that the drill compares with the restored file. A
restore packs the objects again with their metadata as PAX headers
(`pack`), which the servicehost puts back through the gateway. A snapshot
from before has no such file: its objects come back without metadata.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from roost.datadir import s3meta

FILE = "bucket-meta.json"

Meta = dict[str, dict[str, str]]


class BadBucketMeta(ValueError):
    """A pulled archive or a restored metadata file that does not read."""


def of_archive(archive: bytes) -> Meta:
    """key -> metadata of each object of a bucket's tar.gz that has some."""
    out: Meta = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for m in tar.getmembers():
                if m.isfile():
                    meta = s3meta.of_pax(m.pax_headers)
                    if meta:
                        out[m.name] = meta
    except (tarfile.TarError, EOFError, OSError, UnicodeError, s3meta.BadMetadata) as exc:
        raise BadBucketMeta(f"the bucket archive's metadata does not read: {exc}") from None
    return out


def facts(meta: Meta) -> dict[str, str]:
    """key -> digest of its metadata: what the drill compares."""
    return {
        key: hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()
        for key, m in sorted(meta.items())
    }


def write(into: Path, meta: Meta) -> None:
    (into / FILE).write_text(json.dumps(meta, sort_keys=True, indent=0))


def read(restored: Path) -> Meta:
    """The metadata file of a restored snapshot ({} when it has none),
    each object's checked as a restore's input is (s3meta.check)."""
    path = restored / FILE
    if not path.exists():
        return {}
    try:
        raw: Any = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise BadBucketMeta(f"{FILE} is not an object")
        out: Meta = {}
        for key, meta in raw.items():
            if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
            ):
                raise BadBucketMeta(f"{FILE}: {key!r} is not names and values")
            s3meta.check(meta)
            out[str(key)] = meta
    except (ValueError, OSError) as exc:
        if isinstance(exc, BadBucketMeta):
            raise
        raise BadBucketMeta(f"{FILE} does not read: {exc}") from None
    return out


def pack(tree: Path, meta: Mapping[str, Mapping[str, str]]) -> bytes:
    """The restored objects under `tree` as the servicehost takes them: a
    tar.gz of the files (relative names), each with its metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(tree.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue  # S3 has no directories; the snapshot holds no other kind
            name = path.relative_to(tree).as_posix()
            info = tar.gettarinfo(path, arcname=name)
            info.pax_headers = s3meta.to_pax(dict(meta.get(name, {})))
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()
