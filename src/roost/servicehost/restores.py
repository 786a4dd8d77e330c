"""The servicehost's side of a restore: backupd sends the data, this puts it in.

Theory of operation: each restore is one record in state.json, keyed by
(kind, app, backupd's restore id), written before anything changes and
moved on after each step, so a request repeated after a timeout (same id)
or after a crash half-way finishes the job, and one already done answers
as it did. What a restore replaces is never deleted: it is kept (a database
renamed `<db>__pre_<id>`, a directory under DATA/servicehost/kept/<app>/),
listed in the status, and purged after ROOST_ARCHIVE_DAYS. Bad input (a
name, an id, a damaged RDB, an archive that would escape) is refused before
anything changes.

  PostgreSQL (ServiceRestoreStep): prepare makes `<db>__r_<id>`, owned by
    the app's role, where backupd loads the dump as the backup role;
    swap hands it to the app's role (backuprole.py says why it is not
    loaded as that role), renames the app's database to `<db>__pre_<id>`
    and the prepared one to the app's (or, with a target, to that new name,
    which the app's role may then open, and the app's database is left
    alone); discard drops the prepared one.
  Redis (RedisRestore): redis-check-rdb on the RDB, the server stopped (it
    saves), its dump.rdb and AOF directory moved aside, the RDB put in,
    the server started: it loads the RDB and rewrites its AOF from it.
  Data (DataRestore): the archive unpacked beside the data directory
    (unpack.py refuses any escape), the two swapped, the data version
    bumped so runners pull the restored tree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

from roost.datadir.swap import SwapError, replace_contents
from roost.servicehost import backuprole, pairbackup, pgadmin, pgrestore, unpack
from roost.servicehost.appdata import AppData
from roost.servicehost.backupsource import ready_backup_role
from roost.servicehost.disk import usage
from roost.servicehost.host import ServiceError, ServiceHost
from roost.servicehost.names import (
    BadName,
    check_app,
    check_restore_id,
    check_target,
    restore_db_name,
)
from roost.servicehost.redis import AOF_DIR
from roost.servicehost.spawn import run_tool
from roost.servicehost.state import HostState, Restore, RestoreKind, Service
from roost.sysuser import chown_tree
from roost.wire.dispatch import Entry, on, refusing
from roost.wire.messages import (
    DataRestore,
    Msg,
    Ok,
    RedisRestore,
    ServiceRestoreReady,
    ServiceRestoreStep,
)

log = logging.getLogger("roost.servicehost")

CHECK_RDB_TIMEOUT_S = 600.0
ROOM_RESERVE_BYTES = 64 * 2**20  # left free beyond what a restore writes
PURGE_S = 3600.0


class RestoreError(Exception):
    """A restore refused or impossible, with nothing changed by it."""


class Restores:
    def __init__(self, host: ServiceHost, appdata: AppData) -> None:
        self.host = host
        self.appdata = appdata

    def entries(self) -> list[Entry]:
        errors = (RestoreError, ServiceError, BadName)
        return [
            on(ServiceRestoreStep, refusing(self.pg_step, *errors)),
            on(RedisRestore, refusing(self.redis, *errors)),
            on(DataRestore, refusing(self.data, *errors)),
        ]

    def _record(self, kind: RestoreKind, app: str, restore_id: str) -> tuple[str, Restore | None]:
        key = HostState.restore_key(kind, app, restore_id)
        return key, self.host.state.restores.get(key)

    def _note(self, key: str, rec: Restore) -> None:
        rec.at = time.time()
        self.host.state.restores[key] = rec
        self.host.save()

    def _room(self, needed: int, what: str) -> None:
        self.host.check_disk()
        free, _ = usage(self.host.layout.root)
        if free < needed + ROOM_RESERVE_BYTES:
            raise ServiceError(
                f"not enough room to restore {what}: it needs {needed / 2**20:.0f} MiB and "
                f"{free / 2**20:.0f} MiB are free (nothing changed)"
            )

    # ------------------------------------------------------------ PostgreSQL

    def _service(self, app: str, kind: str) -> Service:
        svc = self.host.state.get(check_app(app), kind)
        if svc is None:
            raise RestoreError(f"app {app!r} has no {kind} service here")
        return svc

    async def pg_step(self, msg: ServiceRestoreStep) -> Msg:
        check_restore_id(msg.restore_id)
        async with self.host.lock(check_app(msg.app), "postgres"):
            svc = self._service(msg.app, "postgres")
            key, rec = self._record("postgres", msg.app, msg.restore_id)
            if msg.step == "prepare":
                return await self._prepare(svc, msg, key, rec)
            if rec is None:
                raise RestoreError(f"restore {msg.restore_id} of {msg.app} was not prepared here")
            if rec.target != msg.target:
                raise RestoreError(
                    f"restore {msg.restore_id} of {msg.app} was prepared for "
                    f"{rec.target or 'the app itself'!r}, not {msg.target or 'the app itself'!r}"
                )
            if msg.step == "swap":
                return await self._swap(svc, key, rec)
            return await self._discard(key, rec)

    async def _prepare(
        self, svc: Service, msg: ServiceRestoreStep, key: str, rec: Restore | None
    ) -> Msg:
        pg = await self.host.apps_pg()
        if rec is not None:
            if rec.step != "prepared":
                raise RestoreError(f"restore {msg.restore_id} of {msg.app} is {rec.step} already")
            if rec.target != msg.target:
                raise RestoreError(f"restore {msg.restore_id} was prepared for another target")
        else:
            if msg.target:
                await self._check_target(msg.target)
            sizes = await pgadmin.database_sizes(pg)
            self._room(sizes.get(svc.database, 0), f"the database of {msg.app}")
            name = restore_db_name(svc.database, "r", msg.restore_id)
            rec = Restore(
                id=msg.restore_id, app=msg.app, kind="postgres", step="prepared", at=0.0,
                database=name, target=msg.target,
            )  # fmt: skip
        await self._ready_backup_role(pg)
        self._note(key, rec)
        await pgrestore.prepare(pg, rec.database, svc.username)
        log.info("restore %s of %s: database %s prepared", rec.id, rec.app, rec.database)
        return ServiceRestoreReady(database=rec.database)

    async def _ready_backup_role(self, pg: pgadmin.Postgres) -> None:
        """The role backupd loads the prepared database as, where it is: the
        pair's (its own password, pairbackup.py) or this host's."""
        plan = self.host.pg_pair
        if plan is None:
            await ready_backup_role(self.host, await self.host.pg_up())
        else:
            await backuprole.ensure_backup_role(pg, pairbackup.backup_password(plan), [])

    async def _check_target(self, target: str) -> None:
        """`--to`'s name: valid, nobody's, not taken (RestoreError otherwise)."""
        state = self.host.state
        check_target(target, [s.database for s in state.of_kind("postgres")])
        pg = await self.host.apps_pg()
        taken = any(r.target == target and r.step != "discarded" for r in state.restores.values())
        if taken or await pgrestore.database_exists(pg, target):
            raise RestoreError(f"database {target!r} exists already: choose another name")
        if await pgrestore.role_exists(pg, target):
            # pg_hba's `sameuser` would let that role open it.
            raise RestoreError(f"{target!r} is a role's name: choose another")

    async def _swap(self, svc: Service, key: str, rec: Restore) -> Msg:
        if rec.step == "swapped":
            if rec.target:  # (a swap repeated after its reload failed)
                await self._admit_copies()
            return ServiceRestoreReady(database=rec.target or svc.database, kept=rec.kept)
        if rec.step == "discarded":
            raise RestoreError(f"restore {rec.id} of {rec.app} was discarded: nothing to swap")
        pg = await self.host.apps_pg()
        dest = rec.target or svc.database
        kept = "" if rec.target else restore_db_name(svc.database, "pre", rec.id)
        prepared = await pgrestore.database_exists(pg, rec.database)
        if prepared:
            if rec.target and await pgrestore.database_exists(pg, dest):
                raise RestoreError(f"database {dest!r} exists already: nothing swapped")
            await pgrestore.hand_over(pg, rec.database, svc.username)
        elif not (rec.target or await pgrestore.database_exists(pg, kept)):
            # Neither the prepared database nor a kept one: this swap never began.
            raise RestoreError(f"the prepared database {rec.database} is gone: prepare again")
        if kept:
            await pgrestore.retire(pg, dest, kept)
            if not await pgrestore.database_exists(pg, kept):
                kept = ""  # the app had no database to keep
        await pgrestore.promote(pg, rec.database, dest)
        rec.step, rec.kept = "swapped", kept
        self._note(key, rec)
        if rec.target:
            await self._admit_copies()
        log.info(
            "restore %s of %s: %s now serves%s", rec.id, rec.app, dest,
            f"; the data it replaced is kept as {kept}" if kept else "",
        )  # fmt: skip
        return ServiceRestoreReady(database=dest, kept=kept)

    async def _admit_copies(self) -> None:
        """pg_hba lets each app's role open the copies restored for it (a
        pair's admits every role to the databases it may CONNECT to)."""
        if self.host.pg_pair is not None:
            return
        pg = await self.host.pg_up()
        pg.copies = self.host.copies()
        await pg.refresh_hba()

    async def _discard(self, key: str, rec: Restore) -> Msg:
        if rec.step == "swapped":
            raise RestoreError(f"restore {rec.id} of {rec.app} was swapped: nothing discarded")
        await pgrestore.drop(await self.host.apps_pg(), rec.database)
        rec.step = "discarded"
        self._note(key, rec)
        log.info("restore %s of %s: %s discarded", rec.id, rec.app, rec.database)
        return ServiceRestoreReady(database="")  # nothing serves from it

    # ------------------------------------------------------------ Redis

    async def redis(self, msg: RedisRestore) -> Msg:
        check_restore_id(msg.restore_id)
        host = self.host
        async with host.lock(check_app(msg.app), "redis"):
            svc = self._service(msg.app, "redis")
            key, rec = self._record("redis", msg.app, msg.restore_id)
            if rec is not None and rec.step == "swapped":
                return Ok(detail=rec.kept)
            staged = host.layout.staging / f"{msg.app}-{msg.restore_id}.rdb"
            try:
                await asyncio.to_thread(_write_private, staged, msg.rdb)
                host.user.chown_tree(staged)
                await self._check_rdb(staged, msg.app)
                # The RDB, then the AOF rewritten from it.
                self._room(2 * len(msg.rdb), f"the Redis of {msg.app}")
                kept = host.layout.kept(msg.app) / f"redis-{msg.restore_id}"
                rec = rec or Restore(
                    id=msg.restore_id, app=msg.app, kind="redis", step="prepared", at=0.0,
                    kept=str(kept),
                )  # fmt: skip
                self._note(key, rec)
                await host.stop_redis(msg.app)  # (it saves: the kept files are current)
                directory = host.layout.redis(msg.app)
                await asyncio.to_thread(_keep_files, directory, ["dump.rdb", AOF_DIR], kept)
                os.replace(staged, directory / "dump.rdb")
                host.start_redis(svc)
                await host.redis_up(msg.app)
            finally:
                staged.unlink(missing_ok=True)
            rec.step = "swapped"
            self._note(key, rec)
        log.info(
            "restore %s of %s: Redis restored; its old files kept in %s", rec.id, rec.app, kept
        )
        return Ok(detail=str(kept))

    async def _check_rdb(self, path: Path, app: str) -> None:
        tool = self.host.bins.redis_tool("redis-check-rdb")
        status, out = await run_tool(
            [tool, str(path)], timeout=CHECK_RDB_TIMEOUT_S, user=self.host.user
        )
        if status != 0:
            lines = [ln for ln in out.splitlines() if ln.strip()]
            why = next((ln for ln in lines if "RDB ERROR" not in ln and "---" not in ln), "")
            raise RestoreError(
                f"the RDB for {app} is damaged (redis-check-rdb: {why.strip() or status}); "
                "nothing changed"
            )

    # ------------------------------------------------------------ data directory

    async def data(self, msg: DataRestore) -> Msg:
        check_restore_id(msg.restore_id)
        app = check_app(msg.app)
        async with self.host.lock(app, "data"):
            key, rec = self._record("data", app, msg.restore_id)
            if rec is not None and rec.step == "swapped":
                return Ok(detail=rec.kept)
            try:
                size = await asyncio.to_thread(unpack.uncompressed_size, msg.archive)
            except unpack.BadArchive as exc:
                raise RestoreError(f"the data archive of {app} is refused: {exc}") from None
            self._room(size, f"the data directory of {app}")
            staging = self.appdata.root / f".restore-{app}-{msg.restore_id}"
            kept = self.host.layout.kept(app) / f"data-{msg.restore_id}"
            try:
                await asyncio.to_thread(shutil.rmtree, staging, True)  # an earlier try's
                try:
                    await asyncio.to_thread(unpack.unpack, msg.archive, staging)
                except unpack.BadArchive as exc:
                    raise RestoreError(f"the data archive of {app} is refused: {exc}") from None
                if self.appdata.owner is not None:
                    await asyncio.to_thread(chown_tree, staging, *self.appdata.owner)
                rec = rec or Restore(
                    id=msg.restore_id, app=app, kind="data", step="prepared", at=0.0,
                    kept=str(kept),
                )  # fmt: skip
                self._note(key, rec)
                live = self.appdata.root / app
                # In place (roost.datadir.swap): running instances bind the
                # tree, which may be a file system of its own (a quota).
                try:
                    await asyncio.to_thread(
                        replace_contents, live, staging, kept, self.appdata.owner
                    )
                except SwapError as exc:
                    raise RestoreError(f"the data directory of {app}: {exc}") from None
            finally:
                await asyncio.to_thread(shutil.rmtree, staging, True)
            self.appdata.bump(app)  # runners pull the restored tree
            rec.step = "swapped"
            self._note(key, rec)
        log.info(
            "restore %s of %s: data directory restored; the old one kept in %s", rec.id, app, kept
        )
        return Ok(detail=str(kept))

    # ------------------------------------------------------------ purge

    async def purge(self, keep_s: float, now: float) -> list[str]:
        """Drop what restores kept (and what ones never finished left) longer
        than `keep_s` ago; what went."""
        gone = []
        for key, rec in list(self.host.state.restores.items()):
            if now - rec.at <= keep_s or (rec.step == "swapped" and rec.target):
                continue  # a copy restored `--to` is the app's, and its record admits it
            if rec.kind == "postgres":
                pg = await self.host.apps_pg()
                for db in (rec.database, rec.kept if rec.step == "swapped" else ""):
                    if db:
                        await pgrestore.drop(pg, db)
            elif rec.kept:
                await asyncio.to_thread(shutil.rmtree, rec.kept, True)
            del self.host.state.restores[key]
            self.host.save()
            gone.append(rec.kept or rec.database)
            log.info("restore %s of %s (%s): purged %s", rec.id, rec.app, rec.kind, gone[-1])
        return gone

    async def purge_loop(self, keep_s: float) -> None:
        while True:
            try:
                await self.purge(keep_s, time.time())
            except (ServiceError, OSError) as exc:
                log.warning("could not purge what restores kept: %s", exc)
            await asyncio.sleep(PURGE_S)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _keep_files(directory: Path, names: list[str], kept: Path) -> None:
    """Move `names` out of `directory` into the new directory `kept`. A
    repeated restore finds `kept` made: what is in `directory` now is what
    an earlier try put there, and goes."""
    if kept.exists():
        for name in names:
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return
    kept.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = kept.with_name(kept.name + ".partial")
    partial.mkdir(mode=0o700, exist_ok=True)
    for name in names:
        if (directory / name).exists() and not (partial / name).exists():
            shutil.move(directory / name, partial / name)
    os.rename(partial, kept)
