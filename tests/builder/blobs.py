"""What an image store's blob holds, readable: for tests that look for a secret in it."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path


def blob_bytes(path: Path) -> bytes:
    """A stored blob's bytes, with the members of a tar (and their .gz) opened."""
    raw = path.read_bytes()
    out = [raw]
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            for m in tf.getmembers():
                f = tf.extractfile(m) if m.isfile() else None
                data = f.read() if f is not None else b""
                out.append(gzip.decompress(data) if m.name.endswith(".gz") else data)
    except tarfile.ReadError:
        pass  # a manifest: JSON
    return b"".join(out)
