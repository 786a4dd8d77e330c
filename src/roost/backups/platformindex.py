"""What a platform snapshot says a restore needs of its state, beside the copy.

The controller says it with each snapshot (PlatformSnapshot.app_keys and
.images: roost.controller.platformsnap), and backupd keeps it in the
snapshot as `restore.json`, beside the state copy: which images and static
bundles to pull into the backup (roost.backups.images) and which key each
app's repository is named by (`roost restore`). So backupd reads no table
of the controller's, and a state database it cannot read (a cluster's
PostgreSQL) still says which images it serves.

A snapshot taken before the controller said so has no `restore.json`:
its apps' keys are then read from its SQLite state copy as they were
before (`legacy_app_keys`, the only reading of the controller's tables
left here, for those snapshots only).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from roost.wire.messages import PlatformSnapshot

# Inside a platform snapshot, beside state.sqlite.
INDEX_FILE = "restore.json"


class PlatformIndexError(Exception):
    """The index (or, for an older snapshot, its state copy) does not read."""


@dataclass(frozen=True)
class PlatformIndex:
    # app name -> its key ("<id>-<created ms>")
    app_keys: dict[str, str]
    # image and static bundle digests its releases keep
    images: list[str]


def index_file(snap: PlatformSnapshot) -> bytes | None:
    """The bytes of `restore.json` for a snapshot; None when the controller
    (an older one) did not say."""
    if snap.app_keys is None or snap.images is None:
        return None
    raw = {"app_keys": dict(sorted(snap.app_keys.items())), "images": list(snap.images)}
    return json.dumps(raw, indent=1).encode()


def read_index(root: Path) -> PlatformIndex | None:
    """The index kept in a restored or staged platform tree `root`; None if
    it holds none (taken from an older controller). Blocking."""
    try:
        raw = json.loads((root / INDEX_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PlatformIndexError(f"{INDEX_FILE} does not read: {exc}") from None
    keys = raw.get("app_keys") if isinstance(raw, dict) else None
    images = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(keys, dict) or not isinstance(images, list):
        raise PlatformIndexError(f"{INDEX_FILE} holds no app_keys object and images list")
    return PlatformIndex({str(k): str(v) for k, v in keys.items()}, [str(d) for d in images])


def app_keys(root: Path) -> dict[str, str]:
    """app name -> its key, from the platform tree `root`: its index, or the
    state copy of a snapshot without one. Blocking."""
    index = read_index(root)
    if index is not None:
        return index.app_keys
    return legacy_app_keys(root / "state.sqlite")


def legacy_app_keys(state_sqlite: Path) -> dict[str, str]:
    """The apps' keys from a SQLite state copy, derived as the controller
    derives them (AppRow.key): for snapshots without an index. Blocking."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state_sqlite}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT id, name, created_at FROM apps").fetchall()
    except sqlite3.Error as exc:
        raise PlatformIndexError(f"the platform's state database does not read: {exc}") from None
    return {str(name): f"{int(i)}-{round(float(created) * 1000)}" for i, name, created in rows}
