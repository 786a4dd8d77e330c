"""Naming of backup files (pure): <kind>-<UTC timestamp>.<ext>, never reused."""

from __future__ import annotations

import time
from collections.abc import Container

EXTENSIONS = {"postgres": "dump", "redis": "rdb"}


def backup_name(kind: str, now: float, existing: Container[str]) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    ext = EXTENSIONS[kind]
    name = f"{kind}-{stamp}.{ext}"
    n = 1
    while name in existing:
        n += 1
        name = f"{kind}-{stamp}-{n}.{ext}"
    return name
