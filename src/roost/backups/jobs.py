"""backupd's work: each backup pulled, staged, described, stored, copied and proven.

Theory of operation. One backup goes through these steps, each of which can
fail and say why:

  pull     ask its source (roost.backups.sources) for the bytes: a pg_dump
           in an exported snapshot, an RDB over SYNC, a data directory's
           archive, a git bundle, the platform's files;
  stage    write them under DATA/backupd/staging/<id>/, after checking that
           the disk has room (a full disk fails the backup, never truncates it);
  facts    describe what was staged (roost.backups.drill, .pgfacts) into
           facts.json, beside the data, and into the catalog record;
  store    `restic backup` into the local repository, tagged app=, kind=,
           id=. Only now is the backup *taken*: its record is written;
  copy     `restic copy` to the offsite location, retried with backoff when
           it is unreachable; what happened is recorded per location on the
           entry ("ok" or "error: ...") and a failure is reported;
  drill    restore it from the repository into scratch and compare facts
           (drill.py): *verified*, or *failed* with the differences.

A failure anywhere is recorded (state "failed", the reason) and reported to
the controllers as a BackupEvent (a platform event, red on the dashboard);
so is the first success after a failure. Captures answer once the backup is
taken; the copy and the drill follow in one queue (`followups`), so a deploy
waits for its pre-release backup, not for its proof.

The repositories are shared by concurrent backups (restic's shared lock);
retention and integrity checks need them alone, so they take `repo_lock`
exclusively and backups take it shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from roost.backups import drill
from roost.backups.catalog import Catalog, Record, new_id, summary
from roost.backups.layout import Layout
from roost.backups.locations import RepoError
from roost.backups.restic import Repo, tree_size
from roost.backups.retention import Policy, policy_for, restic_forget_flags
from roost.backups.sources import Pullers, SourceError, ask_again
from roost.backups.staging import BackupFailed, NothingToBackUp, Stager
from roost.proc.backoff import Backoff, Retry
from roost.settings import Settings
from roost.wire.messages import BackupEntry, BackupEvent, BackupKind

log = logging.getLogger("roost.backups")

APP_KINDS: tuple[BackupKind, ...] = ("pgdump", "redis", "data", "git")
TOOL_TIMEOUT_S = 3600.0
# Offsite copies: the wait after the n-th failed try.
COPY_BACKOFF = Backoff(base_s=5.0, max_s=300.0, jitter=0.2)
# Failed backups (no data) are listed this long, then dropped by retention.
FAILED_KEPT_S = 30 * 86400.0


class RWLock:
    """Many holders shared, or one exclusive (writers wait for readers to leave
    and block new ones meanwhile)."""

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self._cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self):  # type: ignore[no-untyped-def]
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer and not self._waiting_writers)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self):  # type: ignore[no-untyped-def]
        async with self._cond:
            self._waiting_writers += 1
            try:
                await self._cond.wait_for(lambda: not self._writer and not self._readers)
            finally:
                self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class Repos:
    local: Repo
    offsite: Repo | None = None
    # Why the offsite location cannot be used ("" when it can): recorded on
    # every backup and reported, never skipped silently.
    offsite_problem: str = ""

    @property
    def all(self) -> list[Repo]:
        return [self.local, *([self.offsite] if self.offsite is not None else [])]


Prover = Callable[[Record, Path], Awaitable[list[str]]]


@dataclass
class Jobs:
    layout: Layout
    settings: Settings
    catalog: Catalog
    pullers: Pullers
    repos: Repos
    # restores a record from the repository into a scratch directory and
    # says what differs from its facts (drill.py)
    prove: Prover
    # Barman's own retention, run with restic's (clusters.py)
    maintain: Callable[[], Awaitable[list[str]]] | None = None
    policies: dict[str, Policy] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    copy_backoff: Backoff = COPY_BACKOFF
    followups: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    repo_lock: RWLock = field(default_factory=RWLock)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # ids waiting in `followups` for an offsite copy they missed
    _queued: set[str] = field(default_factory=set)
    stager: Stager = field(init=False)

    def __post_init__(self) -> None:
        self.stager = Stager(self.layout, self.pullers)

    # ------------------------------------------------------------ taking

    async def capture(
        self, app: str, reason: str, kinds: Iterable[BackupKind] = ()
    ) -> list[BackupEntry]:
        """Back up each of the app's kinds now (all it has when none are
        named; app "": the platform and every PostgreSQL cluster's base
        backup); the entries, each taken, failed, or skipped (nothing to
        back up, e.g. a repository without a commit)."""
        await self.pullers.refresh()  # a service added a moment ago counts
        refused = self.pullers.refused()
        if app and ask_again(list(kinds), self.pullers.kinds_of(app), refused):
            # A servicehost that refused may be the one holding what was
            # asked for: asked once more, alone, before anything is missed.
            await self.pullers.refresh(only=refused)
        if not app:
            wanted = list(kinds) or ["platform", "pgbase"]
            out = []
            for kind in wanted:
                hosts = sorted(self.pullers.clusters()) if kind == "pgbase" else [""]
                for host in hosts:
                    out.append((await self.backup(kind, "", reason, host=host)).entry)
            return out
        wanted = list(kinds) or self.pullers.kinds_of(app)
        return [(await self.backup(kind, app, reason)).entry for kind in wanted]

    async def backup(self, kind: BackupKind, app: str, reason: str, host: str = "") -> Record:
        """One backup up to "taken" (or "failed", or "skipped"); its copy and
        drill queued."""
        lock = self._locks.setdefault((kind, app or host), asyncio.Lock())
        async with lock, self.repo_lock.shared():
            now = self.clock()
            when = datetime.fromtimestamp(now, UTC)  # the snapshot's time, as retention sees it
            backup_id = new_id(kind, now)
            staging = self.layout.staging / backup_id
            entry = BackupEntry(id=backup_id, app=app, kind=kind, taken_at=now, reason=reason)
            facts_file: Path | None = None
            try:
                staged = await self.stager.stage(kind, app, host, staging, reason)
                facts_file = staged.root / staged.facts_path
                facts_file.write_bytes(json.dumps(staged.facts).encode())
                paths = list(staged.paths)
                if staged.root != staging:  # staged in place (Barman's directory)
                    paths.append(staged.facts_path)
                tags = [f"app={app}", f"kind={kind}", f"id={backup_id}"]
                size = await asyncio.to_thread(tree_size, staged.root, paths)
                made = await self.repos.local.snapshot(
                    staged.root, paths, tags=tags, time=when, exclude=staged.exclude,
                    timeout=TOOL_TIMEOUT_S,
                )  # fmt: skip
                snap = made.id
            except NothingToBackUp as exc:
                # Recorded, so the schedule counts it as done and a capture
                # says why there is no backup; there is nothing to prove.
                rec = Record(entry=_skipped(entry, str(exc)), source=host)
                self.catalog.put(rec)
                log.info("%s %s: skipped: %s", kind, app or host, exc)
                return rec
            except (SourceError, RepoError, drill.DrillError, BackupFailed, OSError) as exc:
                rec = Record(entry=_failed(entry, f"not taken: {exc}"), source=host)
                self.catalog.put(rec)
                await self._report(rec, ok=False)
                log.warning("%s %s: %s", kind, app or host, exc)
                return rec
            finally:
                if facts_file is not None:
                    facts_file.unlink(missing_ok=True)
                await asyncio.to_thread(shutil.rmtree, staging, True)
            entry = msgspec.structs.replace(entry, size=size, locations={"local": "ok"})
            rec = Record(
                entry=entry,
                source=staged.source or host,
                snapshots={"local": snap},
                database=staged.database,
                facts=staged.facts,
            )
            self.catalog.put(rec)
            log.info("%s %s: taken as %s (%d bytes; %d files unchanged, %d bytes added)",
                     kind, app or host, backup_id, size, made.files_unmodified,
                     made.data_added)  # fmt: skip
        self.followups.put_nowait(rec.id)
        return rec

    # ------------------------------------------------------------ copy and drill

    async def followup(self, backup_id: str) -> Record:
        """Copy a taken backup offsite, then prove it; its record updated."""
        rec = self.catalog.get(backup_id)
        self._queued.discard(backup_id)
        async with self.repo_lock.shared():
            if self._owes_copy(rec):
                rec = await self._copy(rec)
                self.catalog.put(rec)
            if rec.entry.state == "taken":
                rec = await self._drill(rec)
                self.catalog.put(rec)
        if rec.entry.locations.get("offsite") == "ok":
            # The location works (again): the backups it missed meanwhile go now.
            for owed in self.catalog.records():
                if self._owes_copy(owed) and owed.id not in self._queued:
                    self._queued.add(owed.id)
                    self.followups.put_nowait(owed.id)
        return rec

    def _owes_copy(self, rec: Record) -> bool:
        """A backup still to be copied offsite: one configured and not done.
        A failed backup is not copied; a verified one whose copy failed is."""
        configured = self.repos.offsite is not None or bool(self.repos.offsite_problem)
        return (
            configured
            and rec.entry.state != "failed"
            and "local" in rec.snapshots
            and rec.entry.locations.get("offsite") != "ok"
        )

    async def _offsite_ready(self) -> str:
        """Make the offsite repository if its first try failed (the host was
        down, or backupd's key was not authorised yet, when backupd
        started): "" when it can be used, else why not."""
        offsite = self.repos.offsite
        if offsite is None or not self.repos.offsite_problem:
            return self.repos.offsite_problem
        try:
            await offsite.init(chunker_from=self.repos.local)
        except RepoError as exc:
            self.repos.offsite_problem = str(exc)
            return self.repos.offsite_problem
        log.info("the offsite location %s can be used now", offsite)
        self.repos.offsite_problem = ""
        return ""

    async def _copy(self, rec: Record) -> Record:
        offsite = self.repos.offsite
        if offsite is None and not self.repos.offsite_problem:
            return rec  # one location configured: nothing to copy to
        retry = Retry(self.copy_backoff)
        problem = await self._offsite_ready()
        while offsite is not None and not self.repos.offsite_problem:
            try:
                copied = await self.repos.local.copy(offsite, [rec.snapshots["local"]])
            except RepoError as exc:
                problem = str(exc)
                if not exc.retryable or retry.failures + 1 >= self.settings.backup_copy_tries:
                    break
                delay = retry.failed()
                log.warning("%s: offsite copy failed, again in %.0fs: %s", rec.id, delay, exc)
                await asyncio.sleep(delay)
                continue
            snaps = {**rec.snapshots, "offsite": copied.get(rec.snapshots["local"], "")}
            locs = {**rec.entry.locations, "offsite": "ok"}
            return msgspec.structs.replace(
                rec, snapshots=snaps, entry=msgspec.structs.replace(rec.entry, locations=locs)
            )
        locs = {**rec.entry.locations, "offsite": f"error: {problem}"}
        rec = msgspec.structs.replace(rec, entry=msgspec.structs.replace(rec.entry, locations=locs))
        await self.pullers.report(
            BackupEvent(
                app=rec.entry.app,
                kind=rec.entry.kind,
                ok=False,
                message=f"{rec.id} was not copied offsite: {problem}",
            )
        )
        return rec

    async def _drill(self, rec: Record) -> Record:
        scratch = self.layout.scratch / rec.id
        try:
            problems = await self.prove(rec, scratch)
        except Exception as exc:  # a drill that cannot run proves nothing
            log.exception("%s: the drill failed to run", rec.id)
            problems = [f"the drill could not run: {exc}"]
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        if problems:
            entry = _failed(rec.entry, f"drill: {drill.verdict(problems)}")
            log.warning("%s: drill failed: %s", rec.id, entry.message)
        else:
            entry = msgspec.structs.replace(rec.entry, state="verified", verified_at=self.clock())
            log.info("%s: verified", rec.id)
        done = msgspec.structs.replace(rec, entry=entry)
        await self._report(done, ok=not problems)
        return done

    async def _report(self, rec: Record, ok: bool) -> None:
        """Failures always; a success only when it ends a run of failures."""
        e = rec.entry
        if ok:
            before = [
                r.entry
                for r in self.catalog.records()
                if r.entry.app == e.app and r.entry.kind == e.kind and r.id != e.id
                and r.entry.state != "taken"
            ]  # fmt: skip
            if not before or max(before, key=lambda b: b.taken_at).state != "failed":
                return
        message = f"{e.id}: verified" if ok else f"{e.id}: {e.message}"
        await self.pullers.report(BackupEvent(app=e.app, kind=e.kind, ok=ok, message=message))

    async def followup_loop(self) -> None:
        """Copy and drill each taken backup, one at a time (drills are heavy)."""
        for rec in self.catalog.records():
            if rec.entry.state == "taken":  # owed since before a restart
                self.followups.put_nowait(rec.id)
        while True:
            backup_id = await self.followups.get()
            try:
                await self.followup(backup_id)
            except Exception:
                log.exception("%s: copy or drill failed", backup_id)

    # ------------------------------------------------------------ history

    async def retention(self) -> list[str]:
        """Apply each app's policy to each of its kinds in every location;
        the ids forgotten. Then prune, so the space is freed."""
        forgotten: list[str] = []
        now = self.clock()
        async with self.repo_lock.exclusive():
            groups = {(r.entry.app, r.entry.kind) for r in self.catalog.records()}
            for app, kind in sorted(groups):
                flags = restic_forget_flags(policy_for(self.policies, app))
                tags = [f"app={app}", f"kind={kind}"]
                removed: set[str] = set()
                for name, repo in (("local", self.repos.local), ("offsite", self.repos.offsite)):
                    if repo is None:
                        continue
                    try:
                        gone = await repo.forget(tags, flags)
                    except RepoError as exc:
                        log.warning("retention of %s %s in %s: %s", app, kind, name, exc)
                        continue
                    removed |= {f"{name}:{s}" for s in gone.removed}
                forgotten += self._drop_forgotten(app, kind, removed, now)
            if self.maintain is not None:
                forgotten += await self.maintain()
            for repo in self.repos.all:
                try:
                    await repo.prune()
                except RepoError as exc:
                    log.warning("prune of %s: %s", repo, exc)
        log.info("retention: %d backups past their policy removed", len(forgotten))
        return forgotten

    def _drop_forgotten(self, app: str, kind: str, removed: set[str], now: float) -> list[str]:
        """Records whose every snapshot is gone, and failed ones past their time."""
        out = []
        for r in self.catalog.records():
            if r.entry.app != app or r.entry.kind != kind:
                continue
            snaps = {f"{n}:{s}" for n, s in r.snapshots.items() if s}
            gone = bool(snaps) and snaps <= removed
            stale_failure = not snaps and now - r.entry.taken_at > FAILED_KEPT_S
            if gone or stale_failure:
                self.catalog.remove(r.id)
                out.append(r.id)
        return out

    async def check(self) -> list[str]:
        """Every repository's full integrity check (all data read back);
        problems are reported as platform events."""
        problems: list[str] = []
        async with self.repo_lock.exclusive():
            for repo in self.repos.all:
                try:
                    found = await repo.check(read_data=True)
                except RepoError as exc:
                    found = [str(exc)]
                problems += [f"{repo}: {p}" for p in found]
        if problems:
            log.warning("repository check: %s", drill.verdict(problems))
            await self.pullers.report(
                BackupEvent(app="", kind="platform", ok=False, message=drill.verdict(problems))
            )
        else:
            log.info("repository check: %s sound", ", ".join(str(r) for r in self.repos.all))
        return problems

    def listing(self, app: str) -> list[BackupEntry]:
        records = self.catalog.records()
        if app == "":
            return summary(records)
        return [r.entry for r in records if r.entry.app == app]


def _failed(entry: BackupEntry, message: str) -> BackupEntry:
    return msgspec.structs.replace(entry, state="failed", message=message[:2000])


def _skipped(entry: BackupEntry, message: str) -> BackupEntry:
    return msgspec.structs.replace(entry, state="skipped", message=message[:2000])
