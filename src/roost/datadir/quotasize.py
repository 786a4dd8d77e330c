"""An app's own data quota (`roost data quota APP SIZE`): sizes as people
write them, and whether a new size may be set. Pure: no I/O.

A size is a whole number of MiB, or a number with a unit (K, M, G, T,
binary, with or without "B"/"iB": "512M", "2G", "1.5GiB"), rounded up to
whole MiB. The smallest is what an image needs to hold a file system of its
own (`quota.MIN_QUOTA_MB`); the largest, what a 32-bit column and a
`-collectionQuotaMB` hold with room to spare. A size below what the app
stores now is refused: neither ext4 nor a collection shrinks under its data,
and a quota that the app is over already would only fail its next write.
"""

from __future__ import annotations

import math
import re

MIN_MB = 4  # roost.datadir.quota.MIN_QUOTA_MB: kept equal by a test
MAX_MB = 16 * 1024 * 1024  # 16 TiB
MB = 1 << 20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT_MB = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 * 1024}


class BadSize(ValueError):
    """A size that cannot be an app's quota; its message says why."""


def parse_mb(text: str | int) -> int:
    """`text` in whole MiB (a bare number is MiB); BadSize when it is not a
    size, or out of MIN_MB..MAX_MB."""
    if isinstance(text, bool):
        raise BadSize(f"not a size: {text!r}")
    if isinstance(text, int):
        mb = text
    else:
        m = _SIZE.match(text)
        if m is None:
            raise BadSize(f"not a size: {text!r} (say e.g. 512M, 2G or 1T)")
        value = float(m.group(1)) * _UNIT_MB[m.group(2).lower()]
        if not math.isfinite(value):
            raise BadSize(f"not a size: {text!r}")
        mb = math.ceil(value)
    if not MIN_MB <= mb <= MAX_MB:
        raise BadSize(f"a data quota must be between {MIN_MB} MB and {MAX_MB // (1024 * 1024)} TB")
    return mb


def refusal(new_mb: int, used_bytes: int) -> str | None:
    """Why `new_mb` may not be set over `used_bytes` stored (None: it may).
    Growing is always allowed; shrinking only down to what is stored."""
    if used_bytes > new_mb * MB:
        return (
            f"the app stores {human(used_bytes)} in its data directory, more than "
            f"{human(new_mb * MB)}: remove files first (a quota never shrinks below its data)"
        )
    return None


def human(n: int) -> str:
    """Bytes as people read them: "1.5 GB", "300.0 MB" (binary units)."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GB"
    return f"{n / MB:.1f} MB"


def effective(own_mb: int, default_mb: int) -> int:
    """The quota an app has: its own, else the platform's (0: none)."""
    return own_mb or default_mb


def raises(old_mb: int, new_mb: int) -> bool:
    """Does going from `old_mb` to `new_mb` (effective quotas, 0: none) give
    the app more room? That is the operators' call: the quota guards the
    disk its host shares with every other app; lowering is the owner's."""
    if new_mb == 0:
        return old_mb != 0
    return old_mb != 0 and new_mb > old_mb
