"""Packing trees into the image store: tar, hashed as written, committed whole.

`pack_tree` runs in a worker thread (through `run_abortable`): GNU tar
writes an uncompressed archive into a temporary file in the store, the
thread hashes it as it grows, and the file is committed under its digest
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
import hashlib
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from roost.builder.errors import BuildError
from roost.builder.sandbox import BuildUser
from roost.images.digest import format_digest
from roost.images.layerarchive import RECORD_BLOCKS, ArchiveCheck, ArchiveRefused
from roost.images.manifest import FORMAT, ImageManifest, LayerRef, encode_manifest
from roost.images.store import ImageStore

T = TypeVar("T")

# Code layers keep the upload's mtimes; names sorted, owners erased. No
# setuid, setgid or sticky bit, nor group/other write, is ever recorded: the
# build user may set them on its own files, and runners unpack as root (they
# strip them too: roost.images.archive).
TAR_FLAGS = [
    "--format=gnu", "--owner=0", "--group=0", "--numeric-owner", "--sort=name",
    "--mode=a-st,go-w",
]  # fmt: skip
# Dependency layers are reproducible: same files, same bytes (fixed mtime;
# hard links inside the venv stored as files, so inode sharing with the uv
# cache never shows). 1980-01-02: old enough, and still valid in a zip.
# 128 KiB records: a tenth of tar's system time with its default 10 KiB
# records (reads and writes are a record at a time), for at most 128 KiB of
# end padding on a layer of tens of megabytes.
FIXED_MTIME_EPOCH = "315619200"
FIXED_MTIME = f"--mtime=@{FIXED_MTIME_EPOCH}"
LAYER_TAR_FLAGS = ["-b", str(RECORD_BLOCKS), *TAR_FLAGS, FIXED_MTIME, "--hard-dereference"]
CHUNK = 1 << 20
# pack_tree hashes up to this much per read, and waits this long for tar to
# write more (it writes 128 KiB records, ~1 GB/s from a tmpfs).
HASH_CHUNK = 4 << 20
FOLLOW_WAIT_S = 0.0005


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


def end_process(proc: subprocess.Popen[bytes]) -> None:
    """Kill `proc` if it still runs, reap it, close its output (a blocking helper)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def pack_tree(
    store: ImageStore,
    cwd: Path,
    members: list[str],
    flags: list[str],
    user: BuildUser,
    abort: threading.Event,
    writing: Callable[[Path], None] | None = None,
    files: tuple[str, bytes] | None = None,
    check_members: bool = True,
) -> tuple[str, int, bool]:
    """Tar `members` of `cwd` into the store: (digest, size, newly stored).

    `writing(tmp)` is told the temporary file tar fills (roost.builder.layerpack
    serves what is written of it before the blob is committed). With `files`
    (the file manifest's digest and the archive's head, roost.images.layerarchive)
    the archive begins with that head, is stored under that digest and only once
    every member is checked against the manifest, as tar writes it; or, with
    `check_members` False, unchecked: the caller vouches for it (the builder's
    layer pack, which finds the tree unchanged since it was named instead:
    roost.builder.layers).
    """
    tmp = store.new_tmp_path()
    if writing is not None:
        writing(tmp)
    # user=/group= are applied by _posixsubprocess itself: safe from a thread,
    # unlike a preexec_fn.
    who: dict[str, Any] = (
        {"user": user.uid, "group": user.gid, "extra_groups": []} if user.dropped else {}
    )
    # tar writes the temporary file itself (an inherited descriptor: the build
    # user cannot open the store) and this thread hashes (or, for a layer
    # archive, checks against its manifest) what it has written so far,
    # reading it back from the page cache. Through a pipe, every byte
    # was copied twice more (out of the pipe, into the file); tar is the
    # slower of the two, so the hash is done soon after tar is.
    fd = os.open(tmp, os.O_RDWR | os.O_TRUNC | os.O_CLOEXEC)
    proc: subprocess.Popen[bytes] | None = None
    # A file, not a pipe, for tar's complaints: a pipe this thread does not
    # read until tar exits would stall tar once full.
    with tempfile.TemporaryFile() as complaints:
        try:
            if files is not None:
                _write_all(fd, files[1])  # tar writes on from here: one file offset
            proc = subprocess.Popen(
                ["tar", "-c", "-f", "-", *flags, "-C", str(cwd), "--", *members],
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=complaints,
                cwd="/",
                **who,
            )
            h = hashlib.sha256()
            check = ArchiveCheck(files[0]) if files is not None else None
            sink: Callable[[bytes], None] = h.update if check is None else check.feed
            if files is not None and not check_members:
                check, sink = None, _ignore
            try:
                size = _follow_growing(fd, proc, abort, sink)
                if proc.returncode != 0:
                    complaints.seek(0)
                    err = complaints.read().decode(errors="replace")
                    raise BuildError(f"packing {cwd.name} failed: {err[-500:]}")
                if files is None:
                    digest = format_digest(h.hexdigest())
                    return digest, size, store.commit(tmp, digest)
                if check is not None:
                    check.finish()
            except ArchiveRefused as exc:
                raise BuildError(
                    f"the dependency layer changed after it was named: {exc}"
                ) from None
            return files[0], size, store.commit_files(tmp, files[0], checked=True)
        finally:
            os.close(fd)
            if proc is not None:
                end_process(proc)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _ignore(data: bytes) -> None:
    pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _follow_growing(
    fd: int, proc: subprocess.Popen[bytes], abort: threading.Event, sink: Callable[[bytes], None]
) -> int:
    """Hand `sink` the file `proc` is writing at `fd`, in order, until it exits: its size."""
    size = 0
    while True:
        if abort.is_set():
            raise BuildError("build cancelled")
        # Read only below the file's size: a write extends the size only past
        # bytes already copied in, so what is read is what tar wrote. Whether
        # tar has exited is asked first, so nothing written before is missed.
        exited = proc.poll() is not None
        end = os.fstat(fd).st_size
        if end > size:
            chunk = os.pread(fd, min(end - size, HASH_CHUNK), size)
            sink(chunk)
            size += len(chunk)
        elif exited:
            return size
        else:
            time.sleep(FOLLOW_WAIT_S)


def store_manifest(store: ImageStore, layers: list[LayerRef]) -> tuple[str, int, bool]:
    """Store the image manifest naming `layers`.

    Returns (image digest, image size: manifest and all layers, newly stored).
    """
    manifest = ImageManifest(roost_image=FORMAT, layers=layers)
    data = encode_manifest(manifest)
    with store.writer() as w:
        w.write(data)
        digest = w.commit()
    return digest, len(data) + manifest.size, w.created


def read_untrusted_text(path: Path, limit: int) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not (os.fstat(fh.fileno()).st_mode & 0o170000 == 0o100000):
            raise BuildError(f"{path.name} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BuildError(f"{path.name} is larger than {limit} bytes")
    return data.decode("utf-8", "replace")
