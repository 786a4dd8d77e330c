"""Rotating a log file that several processes append to (the router's workers).

Theory of operation: every writer holds the file open with O_APPEND. The one
that finds it past its size limit takes an flock on `<name>.lock`, checks the
file is still the one it measured (another writer may have rotated it in
between), shifts `<name>.1` .. `<name>.<keep-1>` up by one (the oldest
beyond `keep` is overwritten) and renames the file to `<name>.1`. Every
writer then notices that the path names a different inode than the file it
holds, and reopens it: lines are never written into a rotated file for long,
and none are lost (a write lands whole in one file or the other).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def shifts(path: Path, keep: int) -> list[tuple[Path, Path]]:
    """The renames of one rotation, in order (pure): oldest first, the file last."""
    if keep < 1:
        return []
    moves = [
        (path.with_name(f"{path.name}.{i}"), path.with_name(f"{path.name}.{i + 1}"))
        for i in range(keep - 1, 0, -1)
    ]
    return [*moves, (path, path.with_name(f"{path.name}.1"))]


def rotate(path: Path, keep: int, inode: int) -> bool:
    """Rotate `path` if it still is the file `inode`; False when someone else did."""
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != inode:
                return False
        except FileNotFoundError:
            return False
        for src, dst in shifts(path, keep):
            with contextlib.suppress(FileNotFoundError):
                os.replace(src, dst)
        if keep < 1:
            os.unlink(path)
        return True
    finally:
        os.close(fd)  # (releases the lock)


def moved(fd: int, path: Path) -> bool:
    """Whether `path` no longer names the file open as `fd` (rotated, or removed)."""
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return True
