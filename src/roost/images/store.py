"""A directory of immutable, content-addressed files (images, static bundles).

Theory of operation: a file is written under `tmp/` (hashing as it goes) and
renamed to `sha256/<hex>` only once complete and named by its own digest, so a
reader never sees a partial file under a digest, and a crash leaves at worst
a stray file under `tmp/` that `clean_tmp()` removes at the next start.
Committed files are made read-only; `verify()` re-hashes one on demand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from roost.images.digest import (
    DigestMismatch,
    ImageNotFound,
    format_digest,
    parse_digest,
    sha256_file,
)


class ImageWriter:
    """Streams bytes into the store; `commit()` names them by their digest."""

    def __init__(self, store: ImageStore, expected: str | None) -> None:
        self._store = store
        self._expected = expected
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="w-")
        self.tmp_path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        # Set by commit: False when the store already held these bytes.
        self.created = False

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._fh.write(data)
        self.size += len(data)

    def finish(self) -> str:
        """Close and check the bytes (DigestMismatch discards them); not yet stored.

        Between finish() and commit() the complete bytes can be read at
        `tmp_path` (a pull reads a manifest there before its layers).
        """
        self._fh.close()
        digest = format_digest(self._hash.hexdigest())
        if self._expected is not None and digest != self._expected:
            self.abort()
            raise DigestMismatch(f"expected {self._expected}, received bytes hash to {digest}")
        return digest

    def commit(self) -> str:
        digest = self.finish()
        self.created = self._store.commit(self.tmp_path, digest)
        return digest

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "sha256"
        self.tmp_dir = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def writer(self, expected: str | None = None) -> Iterator[ImageWriter]:
        """`with store.writer() as w: w.write(...)`; then `w.commit()` inside the block.

        Leaving the block without committing (or with an exception) discards
        everything written.
        """
        w = ImageWriter(self, expected)
        try:
            yield w
        finally:
            w.abort()  # no-op after commit: the temp file was renamed away

    def put_bytes(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit()

    def put_file(self, path: Path, *, move: bool = False) -> str:
        """Store a copy of `path` (or move it in, when on the same filesystem)."""
        digest = sha256_file(path)
        if self.has(digest):
            if move:
                path.unlink()
            return digest
        tmp = self.new_tmp_path()
        if move:
            os.replace(path, tmp)
        else:
            shutil.copyfile(path, tmp)
        self.commit(tmp, digest)
        return digest

    def new_tmp_path(self) -> Path:
        """A fresh path under tmp/ for a writer that hashes on its own (see commit)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="t-")
        os.close(fd)
        return Path(name)

    def commit(self, tmp_path: Path, digest: str) -> bool:
        """Rename a complete temp file into place under `digest` (computed by the caller).

        Returns False when the store already held it (the temp file is dropped):
        whoever cleans up after a failure must only delete what it created.
        """
        dest = self.objects / parse_digest(digest)
        os.chmod(tmp_path, 0o444)
        if dest.exists():
            tmp_path.unlink()  # same bytes already stored: content addressing
            return False
        os.replace(tmp_path, dest)
        return True

    # ------------------------------------------------------------ reading

    def path(self, digest: str) -> Path:
        p = self.objects / parse_digest(digest)
        if not p.exists():
            raise ImageNotFound(f"image {digest} is not in this store")
        return p

    def has(self, digest: str) -> bool:
        return (self.objects / parse_digest(digest)).exists()

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read_chunk(self, digest: str, offset: int, length: int) -> tuple[int, bytes]:
        """(total size, bytes at offset); an offset past the end gives b""."""
        with self.open(digest) as fh:
            total = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, offset))
            return total, fh.read(max(0, length))

    def verify(self, digest: str) -> bool:
        """True when the stored bytes still hash to their name."""
        return sha256_file(self.path(digest)) == digest

    def list(self) -> list[str]:
        return sorted(format_digest(p.name) for p in self.objects.iterdir() if len(p.name) == 64)

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.objects / parse_digest(digest)).unlink()

    def clean_tmp(self) -> int:
        """Remove leftovers of writes that never committed (a crash); returns the count."""
        n = 0
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n
