"""Unpacking images and static bundles (tar archives made by the builder).

Images are verified against their digest before they are unpacked, so they
are known to be what a builder produced; still, unpacking refuses members
that would land outside the destination. GNU tar does the work when present
(an image is tens of megabytes in thousands of files; Python's tarfile is
about four times slower at it); tarfile with the "tar" filter otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tarfile
from pathlib import Path

from roost.images.digest import ImageError

IMAGE_MANIFEST = "roost-image.json"
STATIC_MANIFEST = "roost-static.json"


def _tar_argv(archive: Path, dest: Path) -> list[str] | None:
    tar = shutil.which("tar")
    if tar is None:
        return None
    # --no-same-owner: files belong to whoever unpacks; GNU tar already refuses
    # members with ".." and strips leading "/" from names.
    return [tar, "-x", "-f", str(archive), "-C", str(dest), "--no-same-owner"]


def _unpack_with_tarfile(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(dest, filter="tar")
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(f"cannot unpack {archive.name}: {exc}") from exc


def unpack(archive: Path, dest: Path) -> None:
    """Unpack `archive` into the existing directory `dest` (blocking)."""
    argv = _tar_argv(archive, dest)
    if argv is None:
        _unpack_with_tarfile(archive, dest)
        return
    import subprocess

    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"cannot unpack {archive.name}: {proc.stderr.strip()[-2000:]}")


async def unpack_async(archive: Path, dest: Path) -> None:
    argv = _tar_argv(archive, dest)
    if argv is None:
        await asyncio.to_thread(_unpack_with_tarfile, archive, dest)
        return
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled: tar must not write on behind our back
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise ImageError(f"cannot unpack {archive.name}: {err.decode(errors='replace')[-2000:]}")


def tree_size(root: Path) -> int:
    """Bytes used by the files under `root` (symlinks counted as themselves)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total
