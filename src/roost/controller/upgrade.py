"""A backup of the platform's state before an upgrade changes it.

Theory of operation. "Before any major change, a backup is taken and kept",
and an upgrade is one: a new Roost may run Alembic migrations on the state
database at the controller's start. backupd pulls the platform from a
running controller (PlatformSnapshotRequest), so it cannot back up what a
controller is about to migrate before that controller serves; starting
backupd first (on `roost up`) would not help, since it has no one to ask
yet, and in a cluster it may be down for hours. So the controller takes
the backup's first half itself, before anything changes:

  1. At its start, before migrating, it compares the state database's
     revision with this Roost's head, and Roost's version with the one
     DATA/controller/started.json names (its last start). When either
     changed (`upgrade_reason`, pure), it writes a consistent copy of the
     state database (SQLite's online backup; `pg_dump -Fc` for PostgreSQL)
     with what changed into DATA/controller/pre-upgrade/<stamp>/, after
     checking the disk has room (a full disk must not leave half a copy).
     When the copy cannot be made and a backupd is configured, the
     controller does not start: no migration runs without its backup.
     Without a backupd, a warning, and the upgrade goes on (as every other
     change does without one); the copy, when made, is kept regardless.
  2. Then it migrates, and writes started.json.
  3. Every platform snapshot it serves carries its copies (restic stores
     the same bytes once however often they come), and, once serving, it
     asks backupd for a platform capture with reason "pre-upgrade" until
     one is taken from a snapshot it served itself (in a cluster another
     replica may answer one; the client's rotation reaches this one), then
     marks the copy captured. A restart picks up what is still pending.
     The newest KEEP copies stay on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, make_url

from roost.controller.backups import BackupError, Backups
from roost.controller.platformsnap import PRE_UPGRADE, SnapshotError, pg_dump, sqlite_copy
from roost.controller.stateorder import ordered_url
from roost.proc.backoff import Backoff, Retry
from roost.proc.exits import Unavailable
from roost.proc.run import run_tool
from roost.state.migrator import URL_ENV
from roost.state.revision import current_revision, head_revision

log = logging.getLogger("roost.controller")

STARTED = "controller/started.json"
KEEP = 3
# Kept free beyond the copy itself: the controller's logs, SQLite's WAL.
RESERVE_BYTES = 64 * 2**20
CAPTURE_BACKOFF = Backoff(base_s=15.0, max_s=600.0, jitter=0.2)


@dataclass(frozen=True)
class Started:
    """What the last start of this data directory's controller ran."""

    version: str
    revision: str


def upgrade_reason(last: Started | None, version: str, current: str, head: str) -> str:
    """Why the state must be copied before this start goes on ("": no need).
    `current` is the database's revision ("" for a new, empty one)."""
    if not current:
        return ""  # nothing in it yet to lose
    if current != head:
        return f"the schema goes from {current} to {head}"
    if last is not None and last.version != version:
        return f"Roost goes from {last.version} to {version}"
    return ""


def read_started(data_dir: Path) -> Started | None:
    try:
        raw = json.loads((data_dir / STARTED).read_text())
        return Started(str(raw["version"]), str(raw["revision"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def revisions(url: str) -> tuple[str, str]:
    """(the database's Alembic revision or "", this Roost's head). Blocking."""
    head = head_revision()
    if url.startswith("sqlite"):
        path = make_url(url).database or ""
        if not path or not Path(path).exists() or Path(path).stat().st_size == 0:
            return "", head
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return current_revision(conn), head
    finally:
        engine.dispose()


# A migration of a large state database may take long; this only bounds a hung one.
MIGRATE_TIMEOUT_S = 3600.0


async def migrate_in_child(url: str, rest_port: int = 0) -> None:
    """`roost.state.migrator` in a process of its own: Alembic never loads
    here (it would stay resident, issue 21). RuntimeError with its last
    words when it fails. It is given the URL with the members the primary
    first (stateorder), as found now."""
    env = dict(os.environ, **{URL_ENV: await ordered_url(url, rest_port)})
    done = await run_tool(
        [sys.executable, "-m", "roost.state.migrator"], timeout=MIGRATE_TIMEOUT_S, env=env
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"migrating the state database failed: {last}")


async def take_copy(
    data_dir: Path,
    url: str,
    meta: Mapping[str, object],
    clock: Callable[[], float] = time.time,
    rest_port: int = 0,
) -> Path:
    """A consistent copy of the state database and `meta` in a new directory
    under DATA/controller/pre-upgrade; OSError or SnapshotError when it
    cannot be made (nothing partial is left)."""
    root = data_dir / PRE_UPGRADE
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = clock()
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    tmp = root / f".{name}.tmp"
    await asyncio.to_thread(shutil.rmtree, tmp, True)
    tmp.mkdir(mode=0o700)
    try:
        if url.startswith("sqlite"):
            data, _ = await asyncio.to_thread(sqlite_copy, make_url(url).database or "")
            fname = "state.sqlite"
        else:
            data = await pg_dump(url, rest_port)
            fname = "state.pgdump"
        _room(root, len(data))
        await asyncio.to_thread((tmp / fname).write_bytes, data)
        _write_json(tmp / "meta.json", {**meta, "taken_at": now, "captured": ""})
        dest = root / name
        while dest.exists():  # two starts in one second
            dest = dest.with_name(dest.name + "x")
        os.rename(tmp, dest)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    _prune(root)
    return dest


def _room(root: Path, need: int) -> None:
    free = shutil.disk_usage(root).free
    if free < need + RESERVE_BYTES:
        raise OSError(f"{free} bytes free in {root}, the copy needs {need} and a reserve")


def _prune(root: Path) -> None:
    """Keep the newest KEEP copies (names sort by time)."""
    copies = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in copies[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


async def migrate_after_copy(
    data_dir: Path, url: str, version: str, backupd: bool, rest_port: int = 0
) -> Path | None:
    """Copy the state when an upgrade changes it (see the module docstring),
    then migrate; the copy made, if any. Unavailable when the copy failed
    and a backupd is configured (nothing was migrated). `rest_port`: the
    state database members' Patroni REST port (0: not known): each step
    lists them the primary first (stateorder)."""
    current, head = await asyncio.to_thread(revisions, await ordered_url(url, rest_port))
    reason = upgrade_reason(read_started(data_dir), version, current, head)
    copy = None
    if reason:
        meta = {"reason": reason, "version": version, "from_revision": current, "to_revision": head}
        try:
            copy = await take_copy(data_dir, url, meta, rest_port=rest_port)
        except (OSError, SnapshotError) as exc:
            why = f"could not copy the state database before the upgrade ({reason}): {exc}"
            if backupd:
                raise Unavailable(f"controller: {why}; nothing was migrated") from None
            log.warning("%s; no backupd is configured: upgrading without a backup", why)
        else:
            log.info("%s: the state was copied first, to %s", reason, copy)
    if current != head:  # at the head already, `alembic upgrade head` would do nothing
        await migrate_in_child(url, rest_port)
    (data_dir / "controller").mkdir(parents=True, exist_ok=True)
    _write_json(data_dir / STARTED, {"version": version, "revision": head})
    return copy


def pending(data_dir: Path) -> list[Path]:
    """The copies no platform capture has taken yet, oldest first."""
    root = data_dir / PRE_UPGRADE
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        try:
            if not json.loads((p / "meta.json").read_text()).get("captured"):
                out.append(p)
        except (OSError, ValueError):
            continue
    return out


def mark_captured(copy: Path, backup_id: str) -> None:
    meta = json.loads((copy / "meta.json").read_text())
    _write_json(copy / "meta.json", {**meta, "captured": backup_id})


async def capture_pending(
    data_dir: Path, backups: Backups, served: Callable[[], int], backoff: Backoff = CAPTURE_BACKOFF
) -> None:
    """Ask backupd for a "pre-upgrade" platform capture until one is taken
    from a snapshot this controller served (its copies in it); mark the
    copies captured. Returns at once when none is pending or no backupd is
    configured (the copies then wait on disk). Never raises: the
    controller serves on whatever happens here."""
    try:
        await _capture_pending(data_dir, backups, served, backoff)
    except Exception:
        log.exception("the pre-upgrade backup stopped; its copy stays in %s", PRE_UPGRADE)


async def _capture_pending(
    data_dir: Path, backups: Backups, served: Callable[[], int], backoff: Backoff
) -> None:
    if not await asyncio.to_thread(pending, data_dir):
        return
    if not backups.configured:
        log.warning("no backupd is configured: the pre-upgrade copy stays in %s", PRE_UPGRADE)
        return
    retry = Retry(backoff)
    while copies := await asyncio.to_thread(pending, data_dir):
        before = served()
        try:
            entries = await backups.capture("", "pre-upgrade", ["platform"])
        except BackupError as exc:
            delay = retry.failed()
            log.warning("pre-upgrade backup: %s; again in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            continue
        taken = [e.id for e in entries if e.kind == "platform" and e.state == "taken"]
        if taken and served() > before:
            for copy in copies:
                await asyncio.to_thread(mark_captured, copy, taken[0])
            log.info("pre-upgrade backup taken: %s", taken[0])
            return
        delay = retry.failed()  # another replica answered: it has not our copies
        await asyncio.sleep(delay)
