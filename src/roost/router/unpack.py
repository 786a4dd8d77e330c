"""Unpacking a static bundle on the router: regular files and directories only.

A bundle's digest proves which build made it, not that its tree is harmless:
until the builder re-packed bundles itself, the untrusted collect step wrote
the archive, and a bundle of that age may still be named by a release. GNU
tar would recreate its symlinks (`root -> /`), hard links, FIFOs and device
nodes in the router's cache. So the router unpacks bundles itself: each
member is classified (`classify`, pure) and only regular files and
directories are written, each created beneath the destination through
directory descriptors opened with O_NOFOLLOW, files with O_EXCL, so no
member can write through anything already there. Everything else is skipped
and named in the log; a member whose name climbs out (`..`) makes the whole
bundle refused, as GNU tar refused it. Serving does not rely on this alone:
roost.router.static opens files without following links either.

Python's tarfile is slower than GNU tar, which matters for image layers of
thousands of files, not for a bundle of a site's static files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tarfile
import threading
from pathlib import Path

from roost.images.digest import ImageError
from roost.router.safeopen import path_parts

log = logging.getLogger("roost.router.unpack")

CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
}


def classify(info: tarfile.TarInfo) -> tuple[str, list[str]]:
    """('file' | 'dir' | why it is skipped, path components) for one member.

    Raises ImageError when the name climbs out of the bundle."""
    parts = path_parts(info.name)
    if parts is None:
        raise ImageError(f"bundle member {info.name!r} leads outside the bundle")
    if not parts:
        return "the bundle root itself", parts
    if info.isreg():
        return "file", parts
    if info.isdir():
        return "dir", parts
    what = _KINDS.get(info.type, f"of tar type {info.type!r}")
    if info.issym() or info.islnk():
        what += f" to {info.linkname}"
    return what, parts


def _open_dirs(dest_fd: int, parts: list[str]) -> int:
    """A descriptor of dest/parts, making each directory that is missing."""
    cur = dest_fd
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=cur)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
            if cur != dest_fd:
                os.close(cur)
            cur = nxt
    except BaseException:
        if cur != dest_fd:
            os.close(cur)
        raise
    return cur if cur != dest_fd else os.dup(dest_fd)


def unpack_bundle(archive: Path, dest: Path, abort: threading.Event | None = None) -> list[str]:
    """Unpack `archive` into the empty directory `dest` (blocking): its regular
    files and directories. Returns the members skipped, each with the reason."""
    skipped: list[str] = []
    dest_fd = os.open(dest, _DIR_FLAGS)
    try:
        with tarfile.open(archive, "r:*") as tf:
            for info in tf:
                if abort is not None and abort.is_set():
                    raise ImageError("unpacking cancelled")
                kind, parts = classify(info)
                if kind not in ("file", "dir"):
                    skipped.append(f"{info.name} ({kind})")
                    continue
                try:
                    if kind == "dir":
                        os.close(_open_dirs(dest_fd, parts))
                    else:
                        _write_file(tf, info, dest_fd, parts)
                except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                    skipped.append(f"{info.name} (clashes with an earlier member: {exc.strerror})")
    except tarfile.TarError as exc:
        raise ImageError(f"cannot unpack {archive.name}: {exc}") from exc
    finally:
        os.close(dest_fd)
    return skipped


def _write_file(tf: tarfile.TarFile, info: tarfile.TarInfo, dest_fd: int, parts: list[str]) -> None:
    parent = _open_dirs(dest_fd, parts[:-1])
    try:
        fd = os.open(parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
    finally:
        os.close(parent)
    with open(fd, "wb", closefd=True) as out:
        src = tf.extractfile(info)
        assert src is not None  # a regular member always has data
        shutil.copyfileobj(src, out, CHUNK)
        out.flush()
        os.fchmod(fd, 0o644)
        mtime_ns = int(info.mtime) * 1_000_000_000
        os.utime(fd, ns=(mtime_ns, mtime_ns))  # Last-Modified and ETag come from it


async def unpack_bundle_async(archive: Path, dest: Path) -> None:
    """`unpack_bundle` in a thread; a cancelled caller waits for it to stop, so
    nothing is written into `dest` once this has returned."""
    abort = threading.Event()
    fut = asyncio.ensure_future(asyncio.to_thread(unpack_bundle, archive, dest, abort))
    try:
        skipped = await asyncio.shield(fut)
    except BaseException:
        abort.set()
        with contextlib.suppress(BaseException):
            await fut
        raise
    if skipped:
        shown = "; ".join(skipped[:10]) + (
            f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        )
        log.warning(
            "static bundle %s: %d members that are not regular files or directories skipped: %s",
            archive.name[:19], len(skipped), shown,
        )  # fmt: skip
