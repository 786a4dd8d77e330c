"""A directory of immutable, content-addressed files (images, static bundles).

Theory of operation: a file is written under `tmp/` (hashing as it goes) and
renamed to `sha256/<hex>` only once complete and named by its own digest, so a
reader never sees a partial file under a digest, and a crash leaves at worst
a stray file under `tmp/` that `clean_tmp()` removes at the next start.
Committed files are made read-only; `verify()` re-hashes one on demand.

A dependency layer named by its files (roost.images.layerarchive) is an
archive whose bytes do not hash to its name: it lives under `files/<hex>`,
named by its file manifest, and is committed only once every member is
checked against that manifest (`commit_files`; a copy checks as it is
written), except the builder's own pack of a tree it has just named, which
it vouches for (roost.builder.layers). Reading is the same for
both (`path`, `has`, `read_chunk`): one name, one file.
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
    ImageError,
    ImageNotFound,
    format_digest,
    parse_digest,
    sha256_file,
)
from roost.images.layerarchive import ArchiveCheck, verify_archive


class ImageWriter:
    """Streams bytes into the store; `commit()` names them by their digest."""

    def __init__(self, store: ImageStore, expected: str | None, files: str | None = None) -> None:
        self._store = store
        self._expected = expected
        # A layer archive named by its files: checked as it is written.
        self._check = ArchiveCheck(files) if files is not None else None
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="w-")
        self.tmp_path = Path(name)
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        # Set by commit: False when the store already held these bytes.
        self.created = False

    def write(self, data: bytes) -> None:
        if self._check is not None:
            self._check.feed(data)
        else:
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

    def commit_files(self) -> str:
        """Store the bytes as the layer archive the writer was opened for (named by
        its file manifest) once every member is what that manifest lists;
        ImageError (the bytes discarded) otherwise."""
        self._fh.close()
        if self._check is None:
            raise ImageError("internal: commit_files on a writer not opened for a layer archive")
        try:
            self._check.finish()
            self.created = self._store.commit_files(self.tmp_path, self._check.digest, checked=True)
        except BaseException:
            self.abort()
            raise
        return self._check.digest

    def abort(self) -> None:
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "sha256"
        self.files = root / "files"
        self.tmp_dir = root / "tmp"
        for d in (self.objects, self.files, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ writing

    @contextlib.contextmanager
    def writer(
        self, expected: str | None = None, *, files: str | None = None
    ) -> Iterator[ImageWriter]:
        """`with store.writer() as w: w.write(...)`; then `w.commit()` inside the block
        (`w.commit_files()` for `files`, the layer archive that digest names, checked
        member by member as it is written).

        Leaving the block without committing (or with an exception) discards
        everything written.
        """
        w = ImageWriter(self, expected, files)
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

    def commit_files(self, tmp_path: Path, digest: str, *, checked: bool = False) -> bool:
        """Rename a complete layer archive into place under `digest`, its file
        manifest's name, once `verify_archive` passes (or the caller just ran
        it: `checked`). Returns False when the store already held one."""
        hexd = parse_digest(digest)
        if not checked:
            verify_archive(tmp_path, digest)
        dest = self.files / hexd
        os.chmod(tmp_path, 0o444)
        if dest.exists():
            tmp_path.unlink()
            return False
        os.replace(tmp_path, dest)
        return True

    def put_files_archive(self, path: Path, digest: str) -> bool:
        """Store a copy of the layer archive at `path`, checked against `digest`."""
        if self.has(digest):
            return False
        tmp = self.new_tmp_path()
        try:
            shutil.copyfile(path, tmp)
            return self.commit_files(tmp, digest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    # ------------------------------------------------------------ reading

    def path(self, digest: str) -> Path:
        hexd = parse_digest(digest)
        for where in (self.objects, self.files):
            p = where / hexd
            if p.exists():
                return p
        raise ImageNotFound(f"image {digest} is not in this store")

    def has(self, digest: str) -> bool:
        hexd = parse_digest(digest)
        return (self.objects / hexd).exists() or (self.files / hexd).exists()

    def is_files(self, digest: str) -> bool:
        """Whether `digest` is held as a layer archive named by its files."""
        return (self.files / parse_digest(digest)).exists()

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
        """True when the stored bytes still hash to their name (or, for a layer
        archive, still hold exactly what its file manifest lists)."""
        path = self.path(digest)
        if path.parent == self.files:
            try:
                verify_archive(path, digest)
            except ImageError:
                return False
            return True
        return sha256_file(path) == digest

    def list(self) -> list[str]:
        names = {p.name for d in (self.objects, self.files) for p in d.iterdir()}
        return sorted(format_digest(n) for n in names if len(n) == 64)

    def delete(self, digest: str) -> None:
        hexd = parse_digest(digest)
        for where in (self.objects, self.files):
            with contextlib.suppress(FileNotFoundError):
                (where / hexd).unlink()

    def clean_tmp(self) -> int:
        """Remove leftovers of writes that never committed (a crash); returns the count."""
        n = 0
        for p in self.tmp_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
        return n
