"""Disk space: the provisioning guard (pure) and measurements."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def refusal(free: int, total: int, min_free_fraction: float) -> str | None:
    """Why provisioning must be refused with this much free disk, or None."""
    if total <= 0:
        return None
    if free / total < min_free_fraction:
        return (
            f"servicehost disk is too full to provision: {free / 2**30:.1f} GiB free of "
            f"{total / 2**30:.1f} GiB ({100 * free / total:.1f}% < "
            f"{100 * min_free_fraction:.4g}% required); free space or raise the threshold "
            "(ROOST_MIN_FREE_DISK)"
        )
    return None


def usage(path: Path) -> tuple[int, int]:
    """(free bytes available to unprivileged users, total bytes) of path's filesystem."""
    du = shutil.disk_usage(path)
    return du.free, du.total


def tree_size(root: Path) -> int:
    """Bytes allocated to the files under `root` (0 when it is gone)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass  # removed while we walked
    return total
