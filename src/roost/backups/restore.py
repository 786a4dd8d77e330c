"""Restoring an app from a backup (by id) or its database to a time (--at).

Theory of operation. Whatever can be refused is refused before anything
changes: an unknown or failed backup, another app's, a time outside the
point-in-time window, `--to` for something that is not a database. All that
can fail for want of a sound copy (the repository, the facts, the load into
a database of its own) is done next, while the app serves as before: none
of it touches what the app uses. Only then, restoring in place, the app is
quiesced (`before_change`): backupd asks a controller to suspend it (its
maintenance page; its instances stop), takes a backup of what is about to
be replaced (the "safety backup"), and the change is made. A failure up to
there leaves the app serving, its instances never stopped, its data
untouched; one in the safety backup discards the prepared copy, and the
controller that asked for the restore resumes the app after it, whatever
the outcome. A controller that cannot be told refuses the restore: a swap
under a serving app would cut its connections with no maintenance page.

PostgreSQL: the servicehost prepares an empty database (ServiceRestoreStep
"prepare"); backupd loads the dump into it as its backup role and takes the
restored copy's facts, which must match those taken when the backup was
(row counts and per-table checksums). Only then is it swapped in ("swap":
the app's old database is kept under another name); otherwise, or when the
app cannot be quiesced, it is discarded and the restore fails with why, the
app's data untouched. A point in time is first recovered from the base
backup and WAL into a scratch server (roost.backups.pitr), dumped, and
loaded the same way, its facts taken from the scratch copy.

Redis, data directories and git repositories are checked against their
facts after they come out of the repository and before they are sent; the
servicehost (or gateway) keeps what they replace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import shutil
import tarfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from roost.backups import bucketmeta, drill, pgfacts
from roost.backups.catalog import CatalogError, Record, restore_id
from roost.backups.jobs import Jobs
from roost.backups.locations import RepoError
from roost.backups.pgfacts import DbFacts, FactsError, take_facts
from roost.backups.sources import SourceError, Where
from roost.wire.messages import (
    BackupKind,
    BackupRestore,
    BackupRestored,
    BucketRestore,
    DataRestore,
    HostRestoreApp,
    PgSource,
    RedisRestore,
    ServiceRestoreStep,
)

log = logging.getLogger("roost.backups")

LOAD_TIMEOUT_S = 6 * 3600.0


class RestoreRefused(Exception):
    """A restore that was not done; the message says why, and what was kept."""


@dataclass(frozen=True)
class Recovered:
    """A point in time recovered into scratch: its dump and facts."""

    dump: Path
    facts: DbFacts


# (app, its database, the time, a scratch directory) -> the recovered copy
Recover = Callable[[str, str, datetime, Path], Awaitable[Recovered]]
# app -> its point-in-time window (0, 0: none)
Window = Callable[[str], Awaitable[tuple[float, float]]]
# Called once the restored copy is sound, right before what the app uses is
# replaced: quiesces the app and takes the safety backup; its id ("" when
# none). RestoreRefused when it cannot: nothing is replaced then.
BeforeChange = Callable[[], Awaitable[str]]


def parse_at(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RestoreRefused(f"{text!r} is not an ISO 8601 time") from None
    if at.microsecond:
        raise RestoreRefused(f"{text!r}: give the time to the second")
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Restorer:
    jobs: Jobs
    recover: Recover | None = None
    window: Window | None = None
    # restore id -> app, of the app restores under way (BackupRestoresRunning):
    # a controller resumes an app one of them suspended once it is gone from
    # here (roost.controller.restorehold), whoever asked for it.
    running: dict[str, str] = field(default_factory=dict)

    async def __call__(self, msg: BackupRestore) -> BackupRestored:
        run = restore_id()
        # Listed before it can ask for a suspension and until it is over: a
        # controller that finds the suspension's record finds it here while
        # it runs.
        self.running[run] = msg.app
        try:
            return await self._restore(msg, run)
        finally:
            del self.running[run]

    async def _restore(self, msg: BackupRestore, run: str) -> BackupRestored:
        if bool(msg.backup_id) == bool(msg.at):
            raise RestoreRefused("give exactly one of a backup id and a time")
        if msg.at:
            return await self._at(msg, run)
        try:
            rec = self.jobs.catalog.get(msg.backup_id)
        except CatalogError as exc:
            raise RestoreRefused(str(exc)) from None
        kind = rec.entry.kind
        if rec.entry.app != msg.app or kind not in ("pgdump", "redis", "data", "git"):
            raise RestoreRefused(f"{msg.backup_id} is not a backup of {msg.app}'s data")
        if rec.entry.state in ("failed", "skipped"):
            raise RestoreRefused(
                f"{msg.backup_id} {rec.entry.state} ({rec.entry.message}): choose another"
            )
        if msg.to and kind != "pgdump":
            raise RestoreRefused("--to restores a database: give a database backup's id")
        where = self._where(msg.app, kind)
        before = _Once(lambda: self._before_change(msg, kind, where, run))
        try:
            done = await self.from_repository(msg, rec, where, before)
        except (RepoError, SourceError, FactsError, OSError) as exc:
            raise RestoreRefused(
                f"{msg.app} was not restored: {exc}"
                + (f" (backed up first: {before.result})" if before.result else "")
            ) from None
        return msgspec.structs.replace(done, safety_backup=before.result)

    async def from_repository(
        self,
        msg: BackupRestore,
        rec: Record,
        where: Where | None,
        before_change: BeforeChange | None = None,
    ) -> BackupRestored:
        """`rec` out of the local repository into scratch, checked against
        its facts and put back where `where` says, `before_change` called
        right before anything is replaced. A host restore (hostrestore.py)
        gives none: it quiesces each app itself and takes no safety backup."""
        scratch = self.jobs.layout.scratch / f"restore-{restore_id()}"
        try:
            restored = scratch / "restored"
            restored.mkdir(parents=True)
            await self.jobs.repos.local.restore(
                rec.snapshots["local"], restored, size=rec.entry.size
            )
            return await self._put_back(msg, rec, restored, where, scratch, before_change)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    def _where(self, app: str, kind: BackupKind) -> Where | None:
        if kind == "git":
            return None
        where = self.jobs.pullers.where(app)
        needs = {"pgdump": "a database", "redis": "a Redis", "data": "a data directory"}[kind]
        have = where is not None and (
            (kind == "pgdump" and where.postgres is not None)
            or (kind == "redis" and where.redis is not None)
            or (kind == "data" and (where.data or where.bucket))
        )
        if not have:
            raise RestoreRefused(f"{app} has no {needs} to restore into (add the service first)")
        return where

    async def _before_change(
        self, msg: BackupRestore, kind: BackupKind, where: Where | None, run: str
    ) -> str:
        """In place: the app quiesced, then the safety backup (module doc)."""
        if msg.to:
            return ""  # a new database: nothing the app uses changes
        pullers = self.jobs.pullers
        holder = where.host if where is not None else "gateway"
        try:
            if pullers.cluster.of("controller"):  # (none: a backupd on its own, in tests)
                start = HostRestoreApp(host=holder, app=msg.app, starting=True, restore_id=run)
                await pullers.tell(start)
        except SourceError as exc:
            raise RestoreRefused(
                f"{msg.app} was not restored: no controller could put it in maintenance "
                f"({exc}); nothing was changed"
            ) from None
        return await self._safety(msg, kind)

    async def _safety(self, msg: BackupRestore, kind: BackupKind) -> str:
        """A backup of what is about to be replaced."""
        rec = await self.jobs.backup(kind, msg.app, "before restore")
        if rec.entry.state == "failed":
            raise RestoreRefused(
                f"could not back up {msg.app}'s {kind} first, so nothing was changed: "
                f"{rec.entry.message}"
            )
        return "" if rec.entry.state == "skipped" else rec.id  # (nothing there to keep)

    async def _put_back(
        self,
        msg: BackupRestore,
        rec: Record,
        restored: Path,
        where: Where | None,
        scratch: Path,
        before_change: BeforeChange | None,
    ) -> BackupRestored:
        app, kind, rid = msg.app, rec.entry.kind, restore_id()
        before = before_change or _nothing
        if kind == "pgdump":
            assert where is not None
            facts = msgspec.convert(rec.facts, DbFacts)
            return await self._load(msg, where, restored / "db.dump", facts, rec.id, before)
        if kind == "redis":
            assert where is not None
            rdb = restored / "dump.rdb"
            if await asyncio.to_thread(drill.sha256_file, rdb) != rec.facts.get("sha256"):
                raise RestoreRefused(f"{rec.id}'s RDB does not match its facts; nothing changed")
            await before()
            await self.jobs.pullers.restore_redis(
                where, RedisRestore(app=app, restore_id=rid, rdb=rdb.read_bytes())
            )
            return BackupRestored(message=f"{app}'s Redis restored from {rec.id}")
        if kind == "data":
            assert where is not None
            tree = restored / "data"
            got = await asyncio.to_thread(drill.manifest, tree)
            problems = drill.compare_manifests(rec.facts.get("manifest", {}), got)
            problems += await asyncio.to_thread(drill.bucket_problems, rec, restored)
            if problems:
                raise RestoreRefused(
                    f"{rec.id} does not match its facts: {drill.verdict(problems)}"
                )
            files, bucket = "manifest" in rec.facts, "bucket" in rec.facts
            if bucket and not where.bucket:
                raise RestoreRefused(
                    f"{rec.id} holds {app}'s bucket and {app} has none to restore into "
                    "(add the s3 service first); nothing changed"
                )
            archive = await asyncio.to_thread(pack, tree) if files and where.data else b""
            # With each object's metadata when the backup kept it (bucketmeta).
            meta = (
                await asyncio.to_thread(bucketmeta.read, restored)
                if "bucket_meta" in rec.facts
                else {}
            )
            objects = (
                await asyncio.to_thread(bucketmeta.pack, restored / "bucket", meta)
                if bucket
                else b""
            )
            await before()
            done = []
            if archive:
                await self.jobs.pullers.restore_data(
                    where, DataRestore(app=app, restore_id=rid, archive=archive)
                )
                done.append("data directory")
            if bucket:
                # Replaced whole, as the data directory is: objects made since
                # the backup go, the ones it holds come back as they were.
                await self.jobs.pullers.restore_bucket(
                    where, BucketRestore(app=app, restore_id=rid, archive=objects)
                )
                done.append("S3 bucket")
            what = " and ".join(done) or "data directory (nothing in the backup)"
            return BackupRestored(message=f"{app}'s {what} restored from {rec.id}")
        bundle = restored / "repo.bundle"
        refs = await asyncio.to_thread(drill.clone_and_check, bundle, scratch / "clone")
        problems = drill.compare_refs(rec.facts.get("refs", {}), refs)
        if problems:
            raise RestoreRefused(f"{rec.id} does not match its facts: {drill.verdict(problems)}")
        await before()
        await self.jobs.pullers.restore_repo(app, bundle.read_bytes())
        return BackupRestored(message=f"{app}'s git repository restored from {rec.id}")

    async def _at(self, msg: BackupRestore, run: str) -> BackupRestored:
        at = parse_at(msg.at)
        if self.recover is None or self.window is None:
            raise RestoreRefused("this backupd has no point-in-time recovery")
        start, end = await self.window(msg.app)
        if not start or not start <= at.timestamp() < end:
            window = f"{_iso(start)} to {_iso(end)}" if start else "none yet"
            raise RestoreRefused(
                f"{msg.at} is outside {msg.app}'s point-in-time window ({window}); "
                "nothing was changed"
            )
        where = self._where(msg.app, "pgdump")
        assert where is not None
        scratch = self.jobs.layout.scratch / f"pitr-{restore_id()}"
        before = _Once(lambda: self._before_change(msg, "pgdump", where, run))
        try:
            # Recovered into scratch first: a time that falls between two of
            # the cluster's generations (inside the window's span, outside
            # each window) is refused having done nothing at all
            # (clusters.py, pitr.generation_for).
            copy = await self.recover(msg.app, where.database, at, scratch)
            when = _iso(at.timestamp())
            done = await self._load(msg, where, copy.dump, copy.facts, when, before)
        except (RepoError, SourceError, FactsError, OSError) as exc:
            raise RestoreRefused(f"{msg.app} was not restored to {msg.at}: {exc}") from None
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        return msgspec.structs.replace(done, safety_backup=before.result)

    async def _load(
        self,
        msg: BackupRestore,
        where: Where,
        dump: Path,
        facts: DbFacts,
        what: str,
        before_change: BeforeChange,
    ) -> BackupRestored:
        """Prepare, load, verify, quiesce, swap; or discard (see the module doc)."""
        assert where.postgres is not None
        pullers, rid = self.jobs.pullers, restore_id()

        def step(name: str) -> ServiceRestoreStep:
            return ServiceRestoreStep(app=msg.app, restore_id=rid, step=name, target=msg.to)  # type: ignore[arg-type]

        ready = await pullers.restore_step(where, step("prepare"))
        try:
            await pg_restore(where.postgres, ready.database, dump)
            got = await take_facts(where.postgres, ready.database)
            problems = pgfacts.compare(facts, got)
        except (FactsError, OSError) as exc:
            problems = [f"the dump did not load: {exc}"]
        except Exception as exc:  # psycopg's errors, and anything else: discard
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            await pullers.restore_step(where, step("discard"))
            raise RestoreRefused(
                f"the restored copy of {what} does not match its backup, so it was discarded and "
                f"{msg.app}'s database was left as it was: {drill.verdict(problems)}"
            )
        try:
            await before_change()
        except (RestoreRefused, SourceError) as exc:
            await pullers.restore_step(where, step("discard"))
            raise RestoreRefused(
                f"{exc} (the restored copy of {what} was discarded; {msg.app}'s database "
                "was left as it was)"
            ) from None
        swapped = await pullers.restore_step(where, step("swap"))
        log.info("restored %s's database from %s into %s", msg.app, what, swapped.database)
        if msg.to:
            message = f"{what} restored into the new database {swapped.database}"
        else:
            message = (
                f"{msg.app}'s database restored from {what} (verified: {len(facts.tables)} tables)"
            )
        return BackupRestored(message=message, database=swapped.database, kept=swapped.kept)


async def _nothing() -> str:
    return ""


class _Once:
    """A BeforeChange that runs at most once, keeping its result (the safety
    backup's id) for the answer and for a failure's message."""

    def __init__(self, fn: BeforeChange) -> None:
        self._fn = fn
        self._done = False
        self.result = ""

    async def __call__(self) -> str:
        if not self._done:
            self._done = True
            self.result = await self._fn()
        return self.result


async def pg_restore(source: PgSource, database: str, dump: Path) -> None:
    """Load a custom-format dump into `database` as the backup role (objects
    owned by it; the servicehost hands them to the app's role at the swap)."""
    argv = [
        pgfacts.pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
        "--no-password", "-d", database, str(dump),
    ]  # fmt: skip
    conn = pgfacts.PgConn.of(source)
    if conn.read_write:
        # A pair: the member that takes writes, named. libpq tries the
        # members in order, and a standby that has not yet replayed the
        # CREATE DATABASE of the prepare step ends the attempt with FATAL
        # ("database ... does not exist") before the next member is tried.
        conn = dataclasses.replace(conn, host=await pgfacts.writable_host(conn))
    status, out = await pgfacts.run_tool(argv, env=conn.env(database), timeout=LOAD_TIMEOUT_S)
    if status != 0:
        raise FactsError(f"pg_restore failed (status {status}): {out.strip()[-1500:]}")


def pack(tree: Path) -> bytes:
    """A restored data directory as the servicehost takes it: tar.gz of its
    files and directories, relative names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(tree.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue  # the servicehost's own archives hold no other kind
            tar.add(path, arcname=path.relative_to(tree).as_posix(), recursive=False)
    return buf.getvalue()
