"""A file only its owner reads, replaced whole.

Every writer gets a temporary file of its own (mkstemp: a new name, O_EXCL,
0600 from the start) beside the target and renames it over the target, so
a reader sees the old content or the new, never half, and two writers of
one file at once (two controllers sharing a DATA directory on their first
start) each rename their own: with one fixed temporary name, the first
rename took the other's file away and the second failed.

`made_once` serialises "make it if it is missing" across processes, for
files whose content must be the one every process goes on to use (a key
that data gets sealed with, a key and the certificate made for it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def replace_private(path: Path, data: bytes | str, *, fsync: bool = False) -> None:
    """`path` now holds `data` (text as UTF-8), mode 0600; its directory is
    made 0700 when missing. `fsync`: on disk before the rename (a key that
    must survive a power cut)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def made_once(directory: Path) -> Iterator[None]:
    """Held by one process at a time, for the files of `directory` (made 0700
    when missing). Inside it, a check that a file exists and the writing of
    it are one step: two controllers starting at once on a fresh DATA would
    otherwise each make a different key, and the one renamed last replaces
    the key the other already uses. flock, so a holder that dies releases it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / ".made-once.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
