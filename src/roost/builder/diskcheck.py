"""Refusing to write when the builder's disk is nearly full.

The talk's war story: a host at 10% free was not safe. A build first checks
that, after what it is about to write, at least `min_free_fraction` of the
filesystem stays free, and refuses with the numbers otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from roost.builder.errors import BuildError


def refusal(free: int, total: int, needed: int, min_free_fraction: float) -> str | None:
    """Why a write of `needed` bytes is refused, or None when it may proceed."""
    if total <= 0:
        return None
    after = (free - needed) / total
    if after >= min_free_fraction:
        return None
    return (
        f"builder disk too full: {free / total:.1%} free of {total / 2**30:.1f} GiB, and this "
        f"build needs about {needed / 2**20:.0f} MiB; builds need {min_free_fraction:.0%} to "
        "stay free (ROOST_MIN_FREE_DISK). Free some space on the builder and deploy again."
    )


def ensure_free_disk(path: Path, needed: int, min_free_fraction: float) -> None:
    usage = shutil.disk_usage(path)
    why = refusal(usage.free, usage.total, needed, min_free_fraction)
    if why is not None:
        raise BuildError(why)
