"""What backupd asks of a controller: the platform's own state, and where to
say that a backup failed.

PlatformSnapshotRequest -> PlatformSnapshot: a consistent copy of the state
database and the files a fresh controller needs to read it and reach its
cluster: `keys/fernet.key` (without it every sealed secret is lost),
`cluster.json` and `keys/peers.json`, with the schema's Alembic revision.
The copy is taken off the event loop: SQLite through its online backup API
(pages copied while writers go on; the copy is one consistent state) into
memory, then serialised, its revision read from the copy itself; PostgreSQL
with `pg_dump -Fc` (one snapshot), the revision read before and after (a
migration in between makes it retry). Any replica answers. The copies of
the state this controller took before an upgrade (roost.controller.upgrade,
DATA/controller/pre-upgrade) go with every snapshot it serves.

With the copy, what a restore needs of it (`restore_index`): each app's key
and the digests of the images and bundles its releases keep (the rule of
roost.controller.copies), read through the store, so backupd (which pulls
those images into the backup, and `roost restore`, which names the apps'
repositories by the keys) never reads the controller's tables. Read before
the copy and again after, and joined: the copy is of one moment between
the two reads, so whatever it holds (an app, a release that serves) is in
one of them; what else they hold (an app made or deleted meanwhile) costs
an image more in the backup, or a key no app of the copy uses.

BackupEvent -> a platform event (`backup-failed` in red, `backup-ok`), of
the app when it names one that exists.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from roost.controller.astore import AsyncStore
from roost.controller.copies import needed_images
from roost.controller.notify import backup_kind
from roost.controller.secretbox import FERNET_FILE
from roost.controller.stateorder import ordered_url
from roost.controller.store import NotFound
from roost.proc.run import run_tool
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import BackupEvent, Msg, Ok, PlatformSnapshot, PlatformSnapshotRequest

DUMP_TIMEOUT_S = 1800.0
# DATA-relative files a restored controller needs beside its database.
FILES = (f"keys/{FERNET_FILE}", "cluster.json", "keys/peers.json")
# DATA-relative: the state as it was before each upgrade (controller.upgrade).
PRE_UPGRADE = "controller/pre-upgrade"


class SnapshotError(Exception):
    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class PlatformFiles:
    """Where this controller's platform state is: its data directory and
    state URL (and its members' Patroni REST port, 0 when not known)."""

    data_dir: Path
    state_url: str
    state_rest_port: int = 0


def sqlite_copy(path: str) -> tuple[bytes, str]:
    """(a consistent copy of the SQLite database at `path`, its Alembic revision).
    Blocking: run in a thread."""
    src = sqlite3.connect(path, timeout=30)
    dst = sqlite3.connect(":memory:")
    try:
        src.backup(dst)
        row = dst.execute("SELECT version_num FROM alembic_version").fetchone()
        return dst.serialize(), str(row[0]) if row else ""
    finally:
        dst.close()
        src.close()


def pg_revision(url: str) -> str:
    """The Alembic revision of the PostgreSQL state database. Blocking."""
    engine = create_engine(url, connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or "")
    finally:
        engine.dispose()


def pg_dump_binary() -> str:
    """The newest pg_dump: it must be no older than the server."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_dump"),
        key=lambda p: int(Path(p).parent.parent.name or 0),
    )
    return found[-1] if found else shutil.which("pg_dump") or "pg_dump"


def libpq_env(url: str) -> tuple[str, dict[str, str]]:
    """(a libpq URL without its password, the environment carrying it): the
    password never shows in a process list."""
    u = make_url(url)
    env = {"PGPASSWORD": u.password} if u.password else {}
    bare = u.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


async def pg_dump(url: str, rest_port: int = 0) -> bytes:
    """`pg_dump -Fc` of the state database (one snapshot); SnapshotError.
    Its members listed the primary first (stateorder): pg_dump is given no
    connect timeout, and a silent first one held it for minutes."""
    conninfo, env = libpq_env(await ordered_url(url, rest_port))
    done = await run_tool(
        [pg_dump_binary(), "--format=custom", "--dbname", conninfo],
        timeout=DUMP_TIMEOUT_S,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
    )
    if done.returncode != 0:
        why = done.stderr.strip()[-500:]
        raise SnapshotError(f"pg_dump of the state database failed: {why}", True)
    return done.stdout


class PlatformSnap:
    def __init__(self, store: AsyncStore, files: PlatformFiles | None) -> None:
        self.store = store
        self.files = files
        # snapshots served (a pre-upgrade capture checks one of its own was)
        self.served = 0

    def entries(self) -> list[Entry]:
        return [
            on(PlatformSnapshotRequest, refusing(self.snapshot, SnapshotError)),
            on(BackupEvent, self.event),
        ]

    async def snapshot(self, _msg: PlatformSnapshotRequest) -> Msg:
        if self.files is None:
            raise SnapshotError("this controller was started without its data directory")
        url, rest_port = self.files.state_url, self.files.state_rest_port
        keys, images = await self.restore_index()
        if url.startswith("sqlite"):
            path = make_url(url).database or ""
            data, revision = await asyncio.to_thread(sqlite_copy, path)
            out = {"state.sqlite": data}
        else:
            revision = await asyncio.to_thread(pg_revision, await ordered_url(url, rest_port))
            out = {"state.pgdump": await pg_dump(url, rest_port)}
            if await asyncio.to_thread(pg_revision, await ordered_url(url, rest_port)) != revision:
                raise SnapshotError("the schema was migrated during the snapshot", True)
        out.update(await asyncio.to_thread(_read_files, self.files.data_dir))
        keys_after, images_after = await self.restore_index()
        self.served += 1
        return PlatformSnapshot(
            files=out,
            schema_version=revision,
            app_keys={**keys, **keys_after},
            images=sorted(images | images_after),
        )

    async def restore_index(self) -> tuple[dict[str, str], set[str]]:
        """(app name -> its key, the digests its releases keep), as the state is now."""
        apps = await self.store.apps()
        releases, current = await self.store.release_images()
        return {a.name: a.key for a in apps}, needed_images(releases, current)

    async def event(self, msg: BackupEvent) -> Msg:
        app_id = None
        if msg.app:
            try:
                app_id = (await self.store.app(msg.app)).id
            except NotFound:
                pass  # an app deleted since: the event stays the platform's
        what = f"{msg.app or 'platform'}: {msg.kind} backup"
        if msg.ok:
            await self.store.add_event("backup-ok", f"{what} ok: {msg.message}", app_id)
        else:
            await self.store.add_event("backup-failed", f"{what} FAILED: {msg.message}", app_id)
            await self.store.notify_event(
                backup_kind(msg.message), msg.app, f"{what} FAILED: {msg.message}", backup=msg.kind
            )
        return Ok()


def _read_files(data_dir: Path) -> dict[str, bytes]:
    out = {}
    for rel in FILES:
        try:
            out[rel] = (data_dir / rel).read_bytes()
        except FileNotFoundError:
            continue  # (a controller without peers.json admits no one; nothing to keep)
    copies = data_dir / PRE_UPGRADE
    if copies.is_dir():
        for copy in sorted(copies.iterdir()):
            if copy.is_dir() and not copy.name.startswith("."):  # (".x.tmp": being written)
                for f in sorted(copy.iterdir()):
                    out[f"{PRE_UPGRADE}/{copy.name}/{f.name}"] = f.read_bytes()
    return out
