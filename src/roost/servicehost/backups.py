"""Naming of backup files (pure): <kind>-<UTC timestamp>.<ext>, never reused."""

from __future__ import annotations

import os
import tarfile
import time
from collections.abc import Container
from pathlib import Path

EXTENSIONS = {"postgres": "dump", "redis": "rdb", "s3": "tar.gz"}


def backup_name(kind: str, now: float, existing: Container[str]) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    ext = EXTENSIONS[kind]
    name = f"{kind}-{stamp}.{ext}"
    n = 1
    while name in existing:
        n += 1
        name = f"{kind}-{stamp}-{n}.{ext}"
    return name


def archive_app_data(source: Path, dest_dir: Path, now: float) -> Path | None:
    """Tar.gz the app's data directory (the canonical copy) beside its database
    backups; None when there is nothing in it. Symlinks are stored as links,
    never followed, so a backup cannot read outside the directory."""
    if not source.is_dir() or not any(source.iterdir()):
        return None
    existing = {p.name for p in dest_dir.iterdir()} if dest_dir.is_dir() else set()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    name, n = f"data-{stamp}.tar.gz", 1
    while name in existing:
        n += 1
        name = f"data-{stamp}-{n}.tar.gz"
    dest = dest_dir / name
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w:gz", dereference=False) as tar:
        tar.add(source, arcname="data", recursive=True)
    os.replace(tmp, dest)
    return dest
