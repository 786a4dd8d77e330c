"""The backupd daemon (`roost backupd`): pulls backups, keeps them in two
places, proves each by restoring it, restores on request.

Start: check the tools it runs (restic, redis-cli, git, PostgreSQL's), make
DATA/backupd (0700) and clear what a killed backupd left in its staging and
scratch (leftovers.py), the repositories' password, the local repository and,
when configured, the offsite one (its SSH key and pinned host key first);
an offsite location that cannot be used does not stop backupd: every
backup records why it is not there, and each is reported. Then bind the
address book's "backupd" endpoints and run, each in the daemon's TaskGroup:

  the RPC server     captures, lists, restores (of an app, or of every app of
                     a servicehost that lost its data: hostrestore.py) and
                     policies (from controllers);
  the schedule       every minute (or sooner, when something falls due): ask
                     the sources what exists (roost.backups.sources), run what
                     `roost.backups.schedule` says is due, one job at a time;
  the follow-ups     copy each taken backup offsite and drill it;
  WAL streaming      per PostgreSQL cluster, supervised (roost.backups.barman),
                     through a replication slot of this backupd's own (slots.py).

Stop (SIGTERM/SIGINT): stop answering, cancel the loops (a tool under way is
stopped by its owner; a backup cut short is never recorded as taken), and
return.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost import aio
from roost.backups import metrics
from roost.backups.barman import Barman
from roost.backups.catalog import Catalog, CatalogError, renamed
from roost.backups.clusters import Clusters
from roost.backups.drill import Drills
from roost.backups.hostrestore import HostRestorer
from roost.backups.jobs import Jobs, Prover, Repos
from roost.backups.layout import Layout
from roost.backups.leftovers import clear_leftovers
from roost.backups.locations import (
    LocationError,
    RepoError,
    ensure_ssh_key,
    local_location,
    parse_host_key_pin,
    parse_location,
    pin_host_key,
)
from roost.backups.restic import Repo
from roost.backups.restore import Restorer, RestoreRefused
from roost.backups.retention import (
    Policy,
    PolicyError,
    policy_from,
    read_policies,
    write_policies,
)
from roost.backups.schedule import Cadence, Job, Run, due, next_wake, runs_from, wanted
from roost.backups.slots import OwnSlotBarman
from roost.backups.sources import Pullers
from roost.backups.tools import missing_tools
from roost.daemonize import run_daemon
from roost.metrics import serve as serve_metrics
from roost.proc.exits import ConfigError, Unavailable
from roost.proc.priority import lower_own_priority
from roost.settings import Settings
from roost.wire.bootstrap import endpoint_host, open_node, own_endpoints
from roost.wire.dispatch import Handlers, on, pong, refusing
from roost.wire.messages import (
    BackupCapture,
    BackupCaptured,
    BackupHostRestore,
    BackupList,
    BackupListRequest,
    BackupPolicySet,
    BackupRestore,
    BackupRestoresRequest,
    BackupRestoresRunning,
    Msg,
    Ok,
)
from roost.wire.rpc import RpcServer

log = logging.getLogger("roost.backups")

ROLE = "backupd"
# The sources are asked what exists at least this often.
REFRESH_S = 60.0
HOUSEKEEPING = ("retention", "check")


def cadence(settings: Settings) -> Cadence:
    try:
        return Cadence(
            hour=settings.backup_hour,
            redis_s=settings.backup_redis_hours * 3600.0,
            check_s=settings.backup_check_days * 86400.0,
            retry_s=settings.backup_retry_s,
        )
    except ValueError as exc:
        raise ConfigError(f"backupd: {exc} (ROOST_BACKUP_HOUR, ..._REDIS_HOURS, ...)") from None


def offsite_repo(layout: Layout, settings: Settings) -> Repo | None:
    if not settings.backup_offsite:
        return None
    try:
        loc = parse_location("offsite", settings.backup_offsite, setting="ROOST_BACKUP_OFFSITE")
    except LocationError as exc:
        raise ConfigError(str(exc)) from None
    return Repo(loc, layout)


Window = Callable[[str], Awaitable[tuple[float, float]]]


@dataclass
class Backupd:
    """What backupd answers, and its loops (see the module docstring)."""

    layout: Layout
    settings: Settings
    jobs: Jobs
    restorer: Restorer = field(init=False)
    hosts: HostRestorer = field(init=False)
    # the point-in-time window of an app's database (barman)
    window: Window | None = None
    # called after each refresh of the sources (Barman kept in step)
    on_refresh: Callable[[], Awaitable[None]] | None = None
    # Barman's archive-wal of a host's cluster (clusters.py), between the nights
    archive_wal: Callable[[str], Awaitable[None]] | None = None
    runs_file: Path = field(init=False)
    refreshed: asyncio.Event = field(default_factory=asyncio.Event)
    _housekeeping: dict[Job, Run] = field(default_factory=dict)
    # archive-wal's runs (in memory: after a start it is due at once anyway)
    _archived: dict[Job, Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runs_file = self.layout.root / "runs.json"
        self.restorer = Restorer(self.jobs)
        self.hosts = HostRestorer(self.jobs, self.restorer)

    @property
    def catalog(self) -> Catalog:
        return self.jobs.catalog

    # ------------------------------------------------------------ requests

    def handlers(self) -> Handlers:
        errors = (CatalogError, PolicyError, RestoreRefused)
        return Handlers(
            "backupd",
            [
                on(BackupCapture, refusing(self.on_capture, *errors)),
                on(BackupListRequest, refusing(self.on_list, *errors)),
                on(BackupRestore, refusing(self.on_restore, *errors)),
                on(BackupPolicySet, refusing(self.on_policy, *errors)),
                on(BackupHostRestore, refusing(self.hosts, *errors)),
                on(BackupRestoresRequest, self.on_restores),
                pong(ROLE),
            ],
        )

    async def on_capture(self, msg: BackupCapture) -> Msg:
        entries = await self.jobs.capture(msg.app, msg.reason, msg.kinds)
        return BackupCaptured(entries=entries)

    async def on_list(self, msg: BackupListRequest) -> Msg:
        start, end = (0.0, 0.0)
        if msg.app and self.window is not None:
            start, end = await self.window(msg.app)
        return BackupList(entries=self.jobs.listing(msg.app), pitr_from=start, pitr_to=end)

    async def on_restore(self, msg: BackupRestore) -> Msg:
        return await self.restorer(msg)

    async def on_restores(self, msg: BackupRestoresRequest) -> Msg:
        return BackupRestoresRunning(ids=sorted(self.restorer.running))

    async def on_policy(self, msg: BackupPolicySet) -> Msg:
        fields = ("pitr_days", "daily", "weekly", "monthly")
        policy = policy_from({f: getattr(msg, f) for f in fields}, app=msg.app)
        policies = {**self.jobs.policies, msg.app: policy}
        await asyncio.to_thread(write_policies, self.layout.policy_file, policies)
        self.jobs.policies = policies
        log.info("policy of %s: %s", msg.app, policy)
        return Ok(detail=f"policy of {msg.app} set")

    # ------------------------------------------------------------ the schedule

    def _load_runs(self) -> None:
        try:
            raw = json.loads(self.runs_file.read_text())
        except (OSError, ValueError):
            return
        for kind in HOUSEKEEPING:
            if kind in raw:
                self._housekeeping[Job(kind)] = Run(float(raw[kind][0]), bool(raw[kind][1]))

    def _save_runs(self) -> None:
        raw = {j.kind: [r.at, r.ok] for j, r in self._housekeeping.items()}
        tmp = self.runs_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw))
        os.replace(tmp, self.runs_file)

    async def run_job(self, job: Job) -> bool:
        """One due job; whether it succeeded (a backup's failure is recorded
        and reported by jobs.py)."""
        if job.kind == "archive-wal":
            started, ok = time.time(), True
            if self.archive_wal is not None:
                try:
                    await self.archive_wal(job.host)
                except Exception as exc:  # tried again after retry_s; the log says why
                    log.warning("archive-wal of %s: %s", job.host, exc)
                    ok = False
            self._archived[job] = Run(started, ok)
            return ok
        if job.kind in HOUSEKEEPING:
            started = time.time()
            try:
                problems = await (
                    self.jobs.retention() if job.kind == "retention" else self.jobs.check()
                )
                ok = job.kind == "retention" or not problems
            except RepoError as exc:
                log.warning("%s: %s", job.kind, exc)
                ok = False
            self._housekeeping[job] = Run(started, ok)
            await asyncio.to_thread(self._save_runs)
            return ok
        rec = await self.jobs.backup(job.kind, job.app, "scheduled", host=job.host)  # type: ignore[arg-type]
        return rec.entry.state != "failed"

    async def sources_loop(self) -> None:
        """Ask the sources what exists every REFRESH_S (and keep Barman in step)."""
        while True:
            await self.jobs.pullers.refresh()
            self.rename_sources()
            if self.on_refresh is not None:
                try:
                    await self.on_refresh()
                except Exception:
                    log.exception("could not follow the sources' changes")
            self.refreshed.set()
            await asyncio.sleep(REFRESH_S)

    def rename_sources(self) -> None:
        """Records an older backupd kept under a servicehost's key name, under
        its id now (catalog.renamed): once, as each servicehost is heard."""
        pullers = self.jobs.pullers

        def holder(app: str) -> str | None:
            w = pullers.where(app)
            return w.host if w is not None else None

        for rec in renamed(self.catalog.records(), pullers.names(), holder):
            log.info("%s: pulled from servicehost %s (recorded as %s)", rec.id, rec.source,
                     self.catalog.get(rec.id).source)  # fmt: skip
            self.catalog.put(rec)

    def _runs(self) -> dict[Job, Run]:
        return {**runs_from(self.catalog.records()), **self._housekeeping, **self._archived}

    async def schedule_loop(self) -> None:
        c = cadence(self.settings)
        self._load_runs()
        await self.refreshed.wait()
        while True:
            jobs = wanted(self.jobs.pullers.sources())
            runs = self._runs()
            for job in due(time.time(), c, jobs, runs):
                try:
                    await self.run_job(job)
                except Exception:
                    log.exception("scheduled %s %s failed", job.kind, job.app or job.host)
            runs = self._runs()
            now = time.time()
            wake = min(next_wake(now, c, jobs, runs), now + REFRESH_S)
            # Until something falls due, or the sources say something new exists.
            self.refreshed.clear()
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self.refreshed.wait(), max(1.0, wake - now))


async def open_repos(layout: Layout, settings: Settings) -> Repos:
    """The local repository (made if missing) and the offsite one, or why
    the offsite one cannot be used."""
    repos = repos_for(layout, settings)
    await open_now(repos, layout, settings)
    return repos


def repos_for(layout: Layout, settings: Settings) -> Repos:
    """The repositories the settings name, not opened yet (a bad offsite
    setting is refused here, before anything starts)."""
    repos = Repos(Repo(local_location(layout), layout))
    repos.offsite = offsite_repo(layout, settings)
    return repos


async def open_now(repos: Repos, layout: Layout, settings: Settings) -> None:
    """Make the local repository if it is missing and open the offsite one;
    then every command waiting on `Repo.opened` goes ahead."""
    local, offsite = repos.local, repos.offsite
    try:
        # The offsite one copies the local one's chunking: made now for it.
        if offsite is not None or not local.defer_init():
            await local.init()
    except RepoError as exc:
        raise Unavailable(f"backupd: the local repository {local} cannot be used: {exc}") from None
    finally:
        local.set_opened()
    if offsite is None:
        return
    try:
        if offsite.location.kind == "sftp":
            pub = await ensure_ssh_key(layout)
            log.info("offsite over SFTP: authorise this key there: %s", pub)
            pin = parse_host_key_pin(
                settings.backup_offsite_host_key, setting="ROOST_BACKUP_OFFSITE_HOST_KEY"
            )
            await pin_host_key(
                offsite.location, layout, pin, setting="ROOST_BACKUP_OFFSITE_HOST_KEY"
            )
        await offsite.init(chunker_from=local)
    except LocationError as exc:
        raise ConfigError(str(exc)) from None
    except RepoError as exc:
        # Not fatal: every backup records it, and each is reported.
        repos.offsite_problem = str(exc)
        log.error("the offsite location %s cannot be used: %s", offsite, exc)
    finally:
        offsite.set_opened()


def build(
    layout: Layout, settings: Settings, pullers: Pullers, repos: Repos, prove: Prover
) -> Backupd:
    """A backupd's parts, without I/O (the daemon and the tests build it so)."""
    try:
        policies: dict[str, Policy] = read_policies(layout.policy_file)
    except PolicyError as exc:
        raise ConfigError(f"{layout.policy_file}: {exc}") from None
    jobs = Jobs(layout, settings, Catalog(layout.catalog), pullers, repos, prove)
    jobs.policies = policies
    return Backupd(layout, settings, jobs)


@contextlib.asynccontextmanager
async def barman_wired(backupd: Backupd, drills: Drills, barman: Barman) -> AsyncIterator[Clusters]:
    """`barman` started and its clusters wired into backupd (base backups and
    their drill, the point-in-time window and recoveries, WAL streaming kept
    in step with the sources) for the block; unwired, then stopped, after it.
    The daemon runs so, and bench/backup.py measures backupd so."""
    async with barman:
        clusters = Clusters(barman, backupd.jobs.pullers, lambda: backupd.jobs.policies)
        backupd.jobs.pullers.pair_slots = clusters.pair_slots
        jobs = backupd.jobs
        jobs.stager.pgbase, jobs.maintain = clusters.stage, clusters.maintain
        drills.direct["pgbase"] = clusters.check
        backupd.window = backupd.restorer.window = clusters.window
        backupd.restorer.recover = clusters.recover
        backupd.on_refresh, backupd.archive_wal = clusters.ensure, clusters.archive_wal

        async def rebase(host: str) -> object:
            return await jobs.backup("pgbase", "", "wal-gap", host=host)

        clusters.rebase = rebase
        try:
            yield clusters
        finally:
            jobs.stager.pgbase = jobs.maintain = None
            drills.direct.pop("pgbase", None)
            backupd.window = backupd.restorer.window = backupd.restorer.recover = None
            backupd.on_refresh = backupd.archive_wal = None
            backupd.jobs.pullers.pair_slots = list


async def serve(
    data_dir: Path, settings: Settings, name: str = ROLE, stop: asyncio.Event | None = None
) -> None:
    """The daemon's body; returns after `stop` is set."""
    stop = stop or asyncio.Event()
    missing = missing_tools()
    if missing:
        raise Unavailable(f"backupd needs: apt-get install {' '.join(missing)}")
    c = cadence(settings)  # a bad schedule is refused before anything starts
    layout = Layout(data_dir)
    layout.create()
    await asyncio.to_thread(clear_leftovers, layout)  # a killed backupd's staging and scratch
    serve_metrics(settings.metrics_port, settings.bind_host)
    node, cluster = open_node(data_dir, name)
    async with node:
        endpoints = own_endpoints(cluster, ROLE, node)
        if not endpoints:
            raise ConfigError(
                f"{data_dir / 'cluster.json'} has no {ROLE!r} endpoint for key {name!r}"
            )
        # Opened beside serving, not before it: a fresh repository's
        # `restic init` (its key derivation calibrated to ~0.5 s, then run)
        # took 2.6-3.4 s of every first start; a command waits for it
        # (`Repo.opened`), and a failure stops the daemon as it did before.
        repos = repos_for(layout, settings)
        for repo in repos.all:
            repo.opened = asyncio.Event()
        pullers = Pullers(node, cluster)
        drills = Drills(repos.local, layout)
        backupd = build(layout, settings, pullers, repos, drills)
        metrics.watch(backupd.catalog)
        servers = [RpcServer(node, ep.address, backupd.handlers()) for ep in endpoints]
        try:
            # Its own replication slots, named after the host it serves on
            # (the address book's name for it): several backupds pull one
            # cluster side by side (roost.backups.slots).
            me = endpoint_host(min(ep.address for ep in endpoints))
            barman = OwnSlotBarman(layout, backupd=me)
            async with barman_wired(backupd, drills, barman), asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(s.serve()) for s in servers]
                tasks.append(tg.create_task(open_now(repos, layout, settings)))
                tasks.append(tg.create_task(backupd.sources_loop()))
                tasks.append(tg.create_task(backupd.jobs.followup_loop()))
                if settings.backup_schedule == "on":
                    tasks.append(tg.create_task(backupd.schedule_loop()))
                else:
                    log.info(
                        "ROOST_BACKUP_SCHEDULE=%s: backing up only when asked",
                        settings.backup_schedule,
                    )
                log.info(
                    "backupd %s serving on %s; nightly at %02d:00 UTC, Redis every %.1f h",
                    name, [s.address for s in servers], c.hour, c.redis_s / 3600,
                )  # fmt: skip
                await stop.wait()
                log.info("backupd stopping")
                for t in tasks:
                    t.cancel()
        finally:
            await pullers.close()
    log.info("backupd %s stopped", name)


def run(data_dir: Path, settings: Settings, name: str = ROLE) -> None:
    """Run backupd until SIGTERM/SIGINT, below the apps' priority (proc.priority:
    lowered here, before the loop starts any thread)."""
    nice = settings.backup_nice
    problems = lower_own_priority(nice) if 0 <= nice <= 19 else []

    async def main(stop: asyncio.Event) -> None:
        if not 0 <= nice <= 19:  # raising it would put backups before the apps
            raise ConfigError(f"ROOST_BACKUP_NICE must be within 0..19 (got {nice})")
        for problem in problems:  # logged once logging is set up
            log.warning("backupd runs at normal priority: %s", problem)
        await serve(data_dir, settings, name, stop)

    run_daemon(ROLE, main)
