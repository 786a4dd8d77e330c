"""Every app of a servicehost that lost its data, back onto it (BackupHostRestore).

Theory of operation. A servicehost whose disk is lost comes back empty (a
new cluster, no roles, databases or Redis servers), while the controller
still holds each app's credentials for it. backupd alone holds what brings
it back, and sends the servicehost nothing but data (no repository
credential ever goes there):

  refuse    a name no servicehost answers to, or one that holds an app's
            service already (a host restore goes onto a fresh servicehost
            only): nothing changes;
  state     the servicehost's state.json (credentials, ports) from the
            newest platform backup in the catalog that recorded it holding
            services (a platform backup taken after the loss records it
            empty, and is passed over), read out of the local repository
            and checked against the hash taken with the backup;
  choose    per app (`choose`, pure): the newest *verified* pgdump where it
            had a database, Redis backup where it had a Redis, data backup
            where its data directory was pulled from this servicehost or it
            had an S3 bucket (whose objects the data backup holds);
  adopt     ServiceHostRestore: the servicehost takes on those services,
            empty, with the recorded credentials (roost.servicehost.adopt);
  restore   each chosen backup as `roost backups restore --id` puts one back
            (Restorer.from_repository: PostgreSQL prepared, loaded, checked
            against its facts and swapped in; Redis and data checked, then
            RedisRestore and DataRestore), minus the safety backup: what is
            replaced is empty (and the servicehost keeps it all the same).
            A bucket in a cluster's shared tree (the state has buckets and
            no S3 server: `in_tree`) was not lost with the servicehost (two
            copies on two hosts; the servicehost only checks it): its
            objects are never restored over it, which would roll them
            back; the data backup's data directory, if it holds one, is.

A report per app and kind says what came back, from which backup, or why
not: no verified backup (the service comes back empty) or the restore's
failure. One app's failure does not stop the others'.

Each app is in maintenance for its own part only: before its first kind is
restored backupd asks a controller to suspend it (HostRestoreApp; the
router shows its maintenance page), and after its last it says how the part
ended; the controller resumes it when every kind came back, and leaves it
suspended otherwise (roost.controller.hostsuspend says why). The apps
restored already serve while the others' parts go on.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from roost.backups.catalog import Record, newest, restore_id
from roost.backups.drill import DrillError
from roost.backups.jobs import Jobs
from roost.backups.locations import RepoError
from roost.backups.pgfacts import FactsError
from roost.backups.restore import Restorer, RestoreRefused
from roost.backups.sources import SourceError, Where, source_id
from roost.wire.cluster import Endpoint
from roost.wire.messages import (
    APP_SUSPENDED,
    BackupHostRestore,
    BackupHostRestored,
    BackupKind,
    BackupRestore,
    BackupSource,
    HostRestoreApp,
    HostRestoreReport,
    Ok,
    ServiceHostRestore,
)

log = logging.getLogger("roost.backups")

# A key's name, a machine's name or an address (IPv6's too: an id in a cluster).
HOST_RE = re.compile(r"^[A-Za-z0-9\[][A-Za-z0-9_.:\[\]-]{0,63}$")
KIND_OF: dict[str, BackupKind] = {"postgres": "pgdump", "redis": "redis"}
WHAT = {"pgdump": "database", "redis": "Redis", "data": "data directory"}
ORDER = ("pgdump", "redis", "data")


class _Service(msgspec.Struct):
    app: str
    kind: str


class _HostState(msgspec.Struct):
    """What backupd reads of a servicehost's state.json (roles never share types)."""

    services: dict[str, _Service] = {}
    # Its own S3 server (only whether there is one is read)
    s3: dict[str, Any] | None = None


TREE_KEPT = (
    "its S3 bucket is in the cluster's shared tree (two copies), kept there: not restored "
    "from a backup (that would roll its objects back)"
)


def state_file(host_id: str) -> str:
    """Where a platform backup keeps the servicehost's state.json (staging.py)."""
    return f"servicehosts/{host_id}.json"


def platform_candidates(records: Iterable[Record], host_id: str, *aliases: str) -> list[Record]:
    """The platform backups that recorded the servicehost, under its id or
    an alias (its key's name, as an older backupd recorded it), newest first
    (failed ones aside: their bytes may not be whole). Pure."""
    names = {state_file(h) for h in (host_id, *aliases)}
    found = [
        r
        for r in records
        if r.entry.kind == "platform"
        and r.entry.state != "failed"
        and "local" in r.snapshots
        and names & r.facts.get("files", {}).keys()
    ]
    return sorted(found, key=lambda r: (r.entry.taken_at, r.id), reverse=True)


def services_of(raw: bytes) -> set[tuple[str, str]]:
    """(app, "postgres" | "redis" | "s3") of a state.json; RestoreRefused if it does not read."""
    try:
        state = msgspec.json.decode(raw, type=_HostState)
    except msgspec.DecodeError as exc:
        raise RestoreRefused(f"the servicehost's recorded state does not read: {exc}") from None
    return {(s.app, s.kind) for s in state.services.values() if s.kind in (*KIND_OF, "s3")}


def in_tree(raw: bytes) -> set[str]:
    """The apps whose buckets were in a cluster's shared tree: a state with
    buckets and no S3 server of its own (servicehost/s3cluster.py). Pure;
    RestoreRefused if it does not read."""
    try:
        state = msgspec.json.decode(raw, type=_HostState)
    except msgspec.DecodeError as exc:
        raise RestoreRefused(f"the servicehost's recorded state does not read: {exc}") from None
    if state.s3 is not None:
        return set()
    return {s.app for s in state.services.values() if s.kind == "s3"}


def without_bucket(rec: Record) -> Record | None:
    """`rec` as a backup of the data directory alone (its bucket's objects
    left out), or None when it holds no data directory. Pure."""
    if "manifest" not in rec.facts:
        return None
    facts = {k: v for k, v in rec.facts.items() if k != "bucket"}
    return msgspec.structs.replace(rec, facts=facts)


@dataclass(frozen=True)
class Step:
    app: str
    kind: BackupKind
    record: Record | None  # None: no verified backup of it


def choose(
    records: Iterable[Record],
    host_id: str,
    services: Iterable[tuple[str, str]],
    aliases: Collection[str] = (),
) -> list[Step]:
    """What to restore onto the servicehost: per service it held, the
    app's newest verified backup of it; per app whose data directory was
    pulled from it (recorded under its id or an alias), the newest verified
    one of those. Pure."""
    records = list(records)
    services = list(services)
    steps = [
        Step(app, KIND_OF[svc], newest(records, app, KIND_OF[svc], True))
        for app, svc in services
        if svc in KIND_OF
    ]
    here = [r for r in records if r.source in {host_id, *aliases} and r.entry.kind == "data"]
    # A bucket comes back with the data kind (its objects are in its snapshot).
    buckets = {app for app, svc in services if svc == "s3"}
    for app in sorted({r.entry.app for r in here} | buckets):
        steps.append(Step(app, "data", newest(here, app, "data", verified=True)))
    return sorted(steps, key=lambda s: (s.app, ORDER.index(s.kind)))


def by_app(steps: Iterable[Step]) -> list[tuple[str, list[Step]]]:
    """The steps per app, apps in the order their first step comes: each
    app's part of a host restore is one stretch, the app in maintenance
    for that stretch only. Pure."""
    out: dict[str, list[Step]] = {}
    for step in steps:
        out.setdefault(step.app, []).append(step)
    return list(out.items())


def outcome(reports: Iterable[HostRestoreReport]) -> tuple[bool, str]:
    """One app's part: whether every kind came back (one without a verified
    backup came back empty, which is not back), and what each did. Pure."""
    reports = list(reports)
    ok = bool(reports) and all(r.ok for r in reports)
    said = "; ".join(
        f"{WHAT[r.kind]}: {'from ' + r.backup_id if r.ok else r.message}" for r in reports
    )
    return ok, said or "nothing to restore"


@dataclass
class HostRestorer:
    jobs: Jobs
    restorer: Restorer

    async def __call__(self, msg: BackupHostRestore) -> BackupHostRestored:
        if not HOST_RE.match(msg.host):
            raise RestoreRefused(f"{msg.host!r} is not a servicehost's name")
        ep, src = await self._fresh(msg.host)
        # Named by its id from here on (it may have been asked by its key's
        # name); what an older backupd recorded under that name is its own
        # only while no other servicehost answers by the name too.
        host_id = source_id(src)
        shared = len(self.jobs.pullers.names().get(src.host_id, [])) > 1
        aliases = [src.host_id] if src.host_id != host_id and not shared else []
        platform, raw, services = await self._state(host_id, aliases)
        tree = in_tree(raw)
        steps = choose(self.jobs.catalog.records(), host_id, sorted(services), aliases)
        rid = restore_id()
        try:
            took = await self.jobs.pullers.restore_host(
                ep, ServiceHostRestore(state_json=raw, restore_id=rid)
            )
        except SourceError as exc:
            raise RestoreRefused(
                f"servicehost {host_id} did not take on its services: {exc}"
            ) from None
        log.info(
            "host restore %s of %s (from %s): databases of %s, Redis of %s taken on",
            rid, host_id, platform.id, took.postgres, took.redis,
        )  # fmt: skip
        await self.jobs.pullers.refresh()  # its answer now names what it took on
        found = self.jobs.pullers.host(host_id)
        src = found[1] if found is not None else src
        reports = []
        for app, of_app in by_app(steps):
            # The app in maintenance for its own part only (see _suspend).
            resume = await self._suspend(host_id, app)
            done = [await self._one(step, ep, src, step.app in tree) for step in of_app]
            reports += done
            await self._ended(host_id, app, resume, done)
        failed = [r for r in reports if not r.ok]
        log.info(
            "host restore %s of %s: %d restored, %d not%s", rid, host_id,
            len(reports) - len(failed), len(failed),
            "".join(f"; {r.app} {r.kind}: {r.message}" for r in failed),
        )  # fmt: skip
        return BackupHostRestored(host=host_id, platform_backup=platform.id, reports=reports)

    async def _suspend(self, host_id: str, app: str) -> bool:
        """The app in maintenance (a controller suspends it) while its data
        comes back; whether the controller says it suspended it (then the
        end may resume it). A controller that does not answer does not stop
        the restore: the data matters more than the page meanwhile."""
        msg = HostRestoreApp(host=host_id, app=app, starting=True)
        try:
            reply = await self.jobs.pullers.tell(msg)
        except SourceError as exc:
            log.warning("host restore: %s not suspended (it serves meanwhile): %s", app, exc)
            return False
        return isinstance(reply, Ok) and reply.detail == APP_SUSPENDED

    async def _ended(
        self, host_id: str, app: str, resume: bool, reports: list[HostRestoreReport]
    ) -> None:
        ok, message = outcome(reports)
        msg = HostRestoreApp(
            host=host_id, app=app, starting=False, resume=resume, ok=ok, message=message
        )
        try:
            await self.jobs.pullers.tell(msg)
        except SourceError as exc:
            log.warning("host restore: the end of %s's part not told (%s): %s", app, message, exc)

    async def _fresh(self, host_id: str) -> tuple[Endpoint, BackupSource]:
        """The servicehost, answering now and holding no app's service."""
        pullers = self.jobs.pullers
        silent = await pullers.refresh()
        found = pullers.host(host_id)
        if found is None or found[0].address in silent:
            named = ", ".join(sorted({source_id(s) for s in pullers.seen.values()})) or "none"
            raise RestoreRefused(f"no servicehost {host_id!r} answers (those that do: {named})")
        ep, src = found
        held = sorted(
            {*(src.postgres.databases if src.postgres else {}), *(r.app for r in src.redis)}
        )
        if held:
            raise RestoreRefused(
                f"servicehost {host_id} holds services already (of {', '.join(held)}): a host "
                "restore goes onto a fresh servicehost only; nothing was changed"
            )
        return ep, src

    async def _state(
        self, host_id: str, aliases: Sequence[str]
    ) -> tuple[Record, bytes, set[tuple[str, str]]]:
        """The newest platform backup that recorded the servicehost holding
        services, its state.json (checked against its hash) and those services."""
        for rec in platform_candidates(self.jobs.catalog.records(), host_id, *aliases):
            files = rec.facts["files"]
            name = next(n for n in map(state_file, (host_id, *aliases)) if n in files)
            try:
                raw = await self.jobs.repos.local.dump(rec.snapshots["local"], f"platform/{name}")
            except RepoError as exc:
                raise RestoreRefused(
                    f"{rec.id}: the servicehost's state cannot be read: {exc}"
                ) from None
            if hashlib.sha256(raw).hexdigest() != files[name]:
                raise RestoreRefused(
                    f"{rec.id}: the servicehost's state is not what was backed up (its hash "
                    "differs): the repository is damaged; nothing was changed"
                )
            services = services_of(raw)
            if services:
                return rec, raw, services
            log.info("%s recorded servicehost %s with no service: an older one", rec.id, host_id)
        raise RestoreRefused(
            f"no platform backup recorded servicehost {host_id} holding services, so its "
            "credentials are unknown here (`roost backups capture --platform` takes one); "
            "nothing was changed"
        )

    async def _one(
        self, step: Step, ep: Endpoint, src: BackupSource, bucket_in_tree: bool = False
    ) -> HostRestoreReport:
        what = WHAT[step.kind]
        rec = step.record
        kept = ""
        if bucket_in_tree and step.kind == "data":
            log.info("host restore: %s: %s", step.app, TREE_KEPT)
            rec = without_bucket(rec) if rec is not None else None
            if rec is None:  # nothing else to restore of it
                return HostRestoreReport(app=step.app, kind="data", ok=True, message=TREE_KEPT)
            kept = f" ({TREE_KEPT})"
        if rec is None:
            return HostRestoreReport(
                app=step.app, kind=step.kind, ok=False,
                message=f"no verified backup of its {what}: it comes back empty",
            )  # fmt: skip
        where = Where(
            host=source_id(src), endpoint=ep, postgres=src.postgres,
            database=src.postgres.databases.get(step.app, "") if src.postgres else "",
            redis=next((r for r in src.redis if r.app == step.app), None), data=True,
            # made empty by the servicehost, filled here (one machine's)
            bucket=step.app in src.bucket_apps and not bucket_in_tree,
        )  # fmt: skip
        if step.kind == "pgdump" and src.pg_pair is not None:
            # Its databases are in its pair's PostgreSQL, which the other
            # member kept: a dump loaded over it would lose the writes since
            # (the member comes back by `roost servicehost replace`, or
            # rejoins by itself; a lost pair is restored app by app).
            return HostRestoreReport(
                app=step.app, kind=step.kind, ok=True,
                message=f"in pair {src.pg_pair.pair}'s PostgreSQL, kept by its other member: "
                "not restored from a dump",
            )  # fmt: skip
        try:
            if step.kind == "pgdump" and not where.database:
                raise RestoreRefused(f"the servicehost has no database of {step.app}")
            if step.kind == "redis" and where.redis is None:
                raise RestoreRefused(f"the servicehost has no Redis of {step.app}")
            msg = BackupRestore(app=step.app, backup_id=rec.id)
            done = await self.restorer.from_repository(msg, rec, where)
        except (RestoreRefused, RepoError, SourceError, FactsError, DrillError, OSError) as exc:
            log.warning("host restore: %s's %s from %s: %s", step.app, what, rec.id, exc)
            return HostRestoreReport(
                app=step.app, kind=step.kind, ok=False, backup_id=rec.id,
                message=f"not restored: {exc}",
            )  # fmt: skip
        return HostRestoreReport(
            app=step.app, kind=step.kind, ok=True, backup_id=rec.id, message=done.message + kept
        )
