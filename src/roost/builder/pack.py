"""Packing trees into the image store: tar, hashed as written, committed whole.

`pack_tree` runs in a worker thread (through `run_abortable`): GNU tar
writes an uncompressed archive into a pipe, the thread hashes and writes it
to a temporary file in the store, and the file is committed under its digest
only when complete. tar runs as the build user, who wrote the trees it
reads: it cannot archive anything that user could not read anyway (a hard
link to a root-only file, say), and it never follows symlinks.

Cancelling the awaiting task sets the thread's abort event: tar is killed,
the temporary file removed, and the await returns only once the thread is
done, so a cancelled build leaves nothing behind. `pack_tree` says whether
a blob is new: only a new blob may be deleted when a build fails (an equal
one already stored belongs to someone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from roost.builder.errors import BuildError
from roost.builder.sandbox import BuildUser
from roost.images.digest import format_digest
from roost.images.manifest import FORMAT, ImageManifest, LayerRef, encode_manifest
from roost.images.store import ImageStore

T = TypeVar("T")

# Code layers keep the upload's mtimes; names sorted, owners erased.
TAR_FLAGS = ["--format=gnu", "--owner=0", "--group=0", "--numeric-owner", "--sort=name"]
# Dependency layers are reproducible: same files, same bytes (fixed mtime;
# hard links inside the venv stored as files, so inode sharing with the uv
# cache never shows). 1980-01-02: old enough, and still valid in a zip.
# 128 KiB records: a tenth of tar's system time with its default 10 KiB
# records (reads and writes are a record at a time), for at most 128 KiB of
# end padding on a layer of tens of megabytes.
LAYER_TAR_FLAGS = ["-b", "256", *TAR_FLAGS, "--mtime=@315619200", "--hard-dereference"]
CHUNK = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


async def run_abortable(fn: Callable[[threading.Event], T]) -> T:
    """fn(abort) in a thread; on cancellation set `abort` and wait for the thread."""
    abort = threading.Event()
    fut = asyncio.ensure_future(asyncio.to_thread(fn, abort))
    try:
        return await asyncio.shield(fut)
    except BaseException:
        abort.set()
        with contextlib.suppress(BaseException):
            await fut
        raise


def pack_tree(
    store: ImageStore,
    cwd: Path,
    members: list[str],
    flags: list[str],
    user: BuildUser,
    abort: threading.Event,
) -> tuple[str, int, bool]:
    """Tar `members` of `cwd` into the store: (digest, size, newly stored)."""
    tmp = store.new_tmp_path()
    # user=/group= are applied by _posixsubprocess itself: safe from a thread,
    # unlike a preexec_fn.
    who: dict[str, Any] = (
        {"user": user.uid, "group": user.gid, "extra_groups": []} if user.dropped else {}
    )
    proc = subprocess.Popen(
        ["tar", "-c", "-f", "-", *flags, "-C", str(cwd), "--", *members],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        **who,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with contextlib.suppress(OSError):  # bigger pipe: fewer, larger reads
            fcntl.fcntl(proc.stdout.fileno(), _F_SETPIPE_SZ, CHUNK)
        h = hashlib.sha256()
        size = 0
        fd = proc.stdout.fileno()
        with open(tmp, "wb") as fh:
            while chunk := os.read(fd, CHUNK):
                if abort.is_set():
                    raise BuildError("build cancelled")
                h.update(chunk)
                fh.write(chunk)
                size += len(chunk)
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise BuildError(f"packing {cwd.name} failed: {err.decode(errors='replace')[-500:]}")
        if abort.is_set():
            raise BuildError("build cancelled")
        digest = format_digest(h.hexdigest())
        created = store.commit(tmp, digest)
        return digest, size, created
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def store_manifest(
    store: ImageStore, layers: list[tuple[str, int, str, str]]
) -> tuple[str, int, bool]:
    """Store the image manifest naming `layers` (digest, size, path, kind).

    Returns (image digest, image size: manifest and all layers, newly stored).
    """
    manifest = ImageManifest(
        roost_image=FORMAT,
        layers=[LayerRef(digest=d, size=n, path=path, kind=kind) for d, n, path, kind in layers],
    )
    data = encode_manifest(manifest)
    with store.writer() as w:
        w.write(data)
        digest = w.commit()
    return digest, len(data) + manifest.size, w.created


def store_untrusted_file(
    store: ImageStore, path: Path, limit: int, abort: threading.Event
) -> tuple[str, bool]:
    """Store a file the build user wrote, without following a planted symlink.

    Returns (digest, newly stored).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise BuildError(f"static bundle missing or not a plain file: {exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not (st.st_mode & 0o170000 == 0o100000):
            raise BuildError("static bundle is not a regular file")
        if st.st_size > limit:
            raise BuildError(f"static bundle is larger than {limit} bytes")
        with store.writer() as w:
            while chunk := fh.read(CHUNK):
                if abort.is_set():
                    raise BuildError("build cancelled")
                w.write(chunk)
            digest = w.commit()
    return digest, w.created


def read_untrusted_text(path: Path, limit: int) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not (os.fstat(fh.fileno()).st_mode & 0o170000 == 0o100000):
            raise BuildError(f"{path.name} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BuildError(f"{path.name} is larger than {limit} bytes")
    return data.decode("utf-8", "replace")
