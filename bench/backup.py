"""Backups benchmark (issue 15): backupd against plain pg_dump/pg_restore, in one run.

Not a test: it prints numbers. As root, with PostgreSQL 15, Barman, restic
and OpenSSH's server (scripts/install puts them there). A servicehost's
PostgreSQL cluster is started here (bench/backup_source.py: the servicehost's
settings, PostgreSQL's defaults, so fsync and synchronous commit on; an app
database of --size-mb, 1 GB by default, 50 MB with --quick), and backupd's
own code runs against it as `roost backupd` wires it (roost.backups.daemon's
build, and barman_wired, as serve wires Barman in): the catalog, Jobs
(pull, stage, facts, restic), Drills, the Restorer, WAL streamed by
pg_receivewal, the local restic repository and the offsite one over SFTP to
an sshd on loopback (tests/backups/sshd.py; --no-offsite: the local one
only). Not the real thing: the servicehost's RPC hop. backupd is handed the
BackupSource a servicehost sends, and a restore's servicehost steps (prepare
a database, swap it in) are run here with the servicehost's SQL on the same
server.

Two hosts on one machine: the source cluster and the app's load (pgbench)
run on CPU 0; this process and all it starts (pg_dump, restic, Barman,
pg_receivewal, scratch servers, and the plain baselines' client tools) on
CPU 1. What backupd costs the app is then what it costs a servicehost: the
server side of pg_dump, pg_basebackup and WAL streaming, and the shared disk
(--no-pin: nothing pinned).

  backup_vs_pg_dump       plain `pg_dump -Fc -f FILE`'s time over that of
                          backupd's nightly logical backup up to "taken" (pg_dump
                          in an exported snapshot, per-table facts of the same
                          instant, restic into the local repository): a
                          throughput ratio, > 1 is faster than plain. Plain is
                          the mean of a run before and one after.
  base_backup_vs_pg_dump  the same for the nightly base backup (Barman's
                          pg_basebackup with a spread checkpoint and the WAL it
                          needs, then Barman's directory into restic)
  restore_vs_pg_restore   plain `pg_restore` of the plain dump into a new
                          database (mean of a run before and one after) over
                          backupd's restore by id into a new database (`roost
                          backups restore --id ID --to DB`: restic restore,
                          pg_restore as the backup role, the copy's facts
                          compared with the backup's, swap)
  pitr_restore_vs_pg_restore  the same for `--at TIME --to DB` (Barman's recovery
                          of the cluster into scratch, pg_dump of the app's
                          database there, then loaded and verified as above)
  write_throughput_ratio  pgbench (-N, 2 clients) tps during a night (WAL
                          streaming, a base backup then a dump, one job at a time
                          as the schedule runs them, each copied offsite and
                          drilled by the follow-up loop) over tps with no backupd
                          at all in the calm phases either side (each one
                          checkpoint cycle long, after one such warm-up that is
                          not measured); the median over --nights
  drill_delay_s           in those nights, the longest time from a backup being
                          taken (in the local repository) to its verified_at in
                          the catalog (the copy offsite, then backupd's drill:
                          pg_restore and facts for a dump; Barman's checks, a
                          recovery to its end and pg_amcheck for a base backup)
  rpo_s                   with WAL streaming, pgbench at 200 tps and a writer
                          committing a timestamped row every 20 ms, the source is
                          killed (SIGKILL to its process group) and its data
                          removed; Barman recovers to the newest commit it holds
                          (the window's end less 1 us, the latest target its
                          window takes) into a scratch server: the last
                          acknowledged row's time minus the newest row's there

The issue's targets: rpo_s <= 5, write_throughput_ratio >= 0.95,
drill_delay_s <= 3600. `--quick` (~5 minutes): 50 MB, one night, and the
source's checkpoint_timeout at 30 s instead of 5 min, so that a scheduled base
backup's spread checkpoint (0.9 of it) fits. Nothing is left behind: every
server is stopped, every directory removed (--keep-logs DIR: pgbench's and the
source's logs are copied there first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backup_source import (  # noqa: E402
    APP,
    Source,
    SourcePullers,
    Writer,
    mean_tps,
    plain_dump,
    plain_restore,
    progress,
)
from tests.backups.pgsource import BACKUP_ROLE  # noqa: E402
from tests.backups.sshd import sftp_server  # noqa: E402

from roost.backups.barman import Barman, BarmanError, server_name  # noqa: E402
from roost.backups.catalog import Record  # noqa: E402
from roost.backups.daemon import Backupd, barman_wired, build, open_repos  # noqa: E402
from roost.backups.drill import Drills  # noqa: E402
from roost.backups.jobs import Jobs  # noqa: E402
from roost.backups.layout import Layout  # noqa: E402
from roost.backups.locations import ensure_ssh_key  # noqa: E402
from roost.backups.pitr import RECOVERY_READY_TIMEOUT_S, stop_reason  # noqa: E402
from roost.backups.scratch import scratch_dir, scratch_postgres  # noqa: E402
from roost.backups.staging import Staged  # noqa: E402
from roost.proc.priority import lower_own_priority  # noqa: E402
from roost.proc.stop import terminate  # noqa: E402
from roost.settings import Settings  # noqa: E402
from roost.wire.cluster import ClusterConfig, Endpoint  # noqa: E402
from roost.wire.keys import generate_keypair  # noqa: E402
from roost.wire.messages import BackupRestore, BackupSource  # noqa: E402
from roost.wire.node import Node  # noqa: E402

T = TypeVar("T")
HOST_ID = "bench-sh"
# The servicehost's endpoint as the address book would name it; never dialled.
SH_ADDRESS = "tcp://127.0.0.1:9"
SOURCE_CPU, BACKUPD_CPU = 0, 1
NIGHT_TIMEOUT_S = 3 * 3600.0
CATCH_UP_S = 600.0
RPO_RATE_TPS = 200


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


async def timed(aw: Awaitable[T]) -> tuple[T, float]:
    started = time.monotonic()
    out = await aw
    return out, time.monotonic() - started


def taken(rec: Record) -> Record:
    if rec.entry.state == "failed":
        raise RuntimeError(f"{rec.id} failed: {rec.entry.message}")
    return rec


@dataclass
class Bench:
    source: Source
    backupd: Backupd
    drills: Drills
    work: Path
    # how long Barman took, of each base backup
    barman_s: list[float] = field(default_factory=list)

    @property
    def jobs(self) -> Jobs:
        return self.backupd.jobs

    @property
    def layout(self) -> Layout:
        return self.backupd.layout

    @contextlib.asynccontextmanager
    async def streaming(self) -> AsyncIterator[Barman]:
        """Barman wired into backupd as daemon.serve wires it: WAL streamed
        while the block runs, base backups and their drill available."""
        async with barman_wired(self.backupd, self.drills, Barman(self.layout)) as clusters:

            async def stage(host: str, staging: Path, reason: str) -> Staged:
                staged, secs = await timed(clusters.stage(host, staging, reason))
                self.barman_s.append(secs)  # the rest of a base backup is restic's
                return staged

            self.jobs.stager.pgbase = stage
            await clusters.ensure()
            yield clusters.barman

    async def drop(self, database: str) -> None:
        await self.source.sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", "postgres")


# ------------------------------------------------------------------ throughput


async def throughput(b: Bench) -> dict[str, float]:
    """Backups and restores, each against its plain baseline (no load)."""
    plain = b.work / "plain.dump"
    dumps = [await plain_dump(b.source, plain)]
    say(f"plain pg_dump -Fc: {dumps[0]:.2f}s, {plain.stat().st_size / 2**20:.1f} MB file")
    async with b.streaming() as barman:
        dump, dump_s = await timed(b.jobs.backup("pgdump", APP, "scheduled"))
        say(f"backupd's logical backup taken in {dump_s:.2f}s ({taken(dump).id})")
        base, base_s = await timed(b.jobs.backup("pgbase", "", "scheduled", host=HOST_ID))
        say(f"backupd's base backup taken in {base_s:.2f}s ({taken(base).id}), Barman's "
            f"part {b.barman_s[-1]:.2f}s")  # fmt: skip
        for rec in (dump, base):  # their copies and drills, outside the timings
            done, secs = await timed(b.jobs.followup(rec.id))
            say(f"{rec.entry.kind}: copied and drilled in {secs:.2f}s: {done.entry.state} "
                f"{done.entry.message} {done.entry.locations}")  # fmt: skip
        # `roost backups restore --at` (to the second) into a new database.
        await caught_up(barman, server_name(HOST_ID))
        at = datetime.fromtimestamp(math.floor(time.time()) - 1, UTC)
        msg = BackupRestore(app=APP, at=at.strftime("%Y-%m-%dT%H:%M:%SZ"), to="roost_pitr")
        restored, pitr_s = await timed(b.backupd.restorer(msg))
        say(f"backupd's point-in-time restore: {pitr_s:.2f}s: {restored.message}")
        await b.drop("roost_pitr")
    while not b.jobs.followups.empty():  # followed up above already
        b.jobs.followups.get_nowait()
    dumps.append(await plain_dump(b.source, plain))
    say(f"plain pg_dump -Fc again: {dumps[1]:.2f}s")

    restores = [await plain_restore(b.source, plain, "plain_restore_1")]
    await b.drop("plain_restore_1")
    say(f"plain pg_restore: {restores[0]:.2f}s")
    msg = BackupRestore(app=APP, backup_id=dump.id, to="roost_restore")
    restored, roost_s = await timed(b.backupd.restorer(msg))
    say(f"backupd's restore: {roost_s:.2f}s: {restored.message}")
    await b.drop("roost_restore")
    restores.append(await plain_restore(b.source, plain, "plain_restore_2"))
    await b.drop("plain_restore_2")
    say(f"plain pg_restore again: {restores[1]:.2f}s")
    plain.unlink()
    pg_dump_s, pg_restore_s = statistics.fmean(dumps), statistics.fmean(restores)
    return {
        "pg_dump_s": pg_dump_s,
        "roost_dump_backup_s": dump_s,
        "roost_base_backup_s": base_s,
        "backup_vs_pg_dump": pg_dump_s / dump_s,
        "base_backup_vs_pg_dump": pg_dump_s / base_s,
        "pg_restore_s": pg_restore_s,
        "roost_restore_s": roost_s,
        "restore_vs_pg_restore": pg_restore_s / roost_s,
        "roost_pitr_restore_s": pitr_s,
        "pitr_restore_vs_pg_restore": pg_restore_s / pitr_s,
    }


# ------------------------------------------------------------------ nights under load


async def night(b: Bench) -> list[tuple[Record, float]]:
    """What the schedule runs at the nightly hour for one cluster and one app
    (one job at a time: the base backup, then the dump), each copied and
    drilled by the follow-up loop. Returns once each is verified or failed:
    its record, and when it was taken (complete in the local repository)."""
    async with asyncio.timeout(NIGHT_TIMEOUT_S), b.streaming() as barman:
        # backupd streams WAL all along; here Barman has just started, and
        # `barman backup` refuses (its 'replication slot' and 'receive-wal
        # running' checks) until pg_receivewal is up: every night failed so.
        await caught_up(barman, server_name(HOST_ID))
        loop = asyncio.create_task(b.jobs.followup_loop())
        try:
            done: dict[str, float] = {}
            rec = await b.jobs.backup("pgbase", "", "scheduled", host=HOST_ID)
            done[rec.id] = time.time()
            say(f"night: base backup taken in {done[rec.id] - rec.entry.taken_at:.1f}s, "
                f"Barman's part {b.barman_s[-1]:.1f}s")  # fmt: skip
            rec = await b.jobs.backup("pgdump", APP, "scheduled")
            done[rec.id] = time.time()
            while True:
                recs = [b.jobs.catalog.get(i) for i in done]
                if all(r.entry.state != "taken" for r in recs):
                    return [(r, done[r.id]) for r in recs]
                await asyncio.sleep(0.2)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)


def phase_tps(samples: list[tuple[float, float]], start: float, end: float) -> str:
    inside = [tps for t, tps in samples if start + 1.0 <= t <= end]
    if not inside:
        return "no samples"
    return (f"mean {statistics.fmean(inside):.0f}, median {statistics.median(inside):.0f}, "
            f"min {min(inside):.0f} tps over {len(inside)}s")  # fmt: skip


async def nights(b: Bench, count: int, calm_s: float, keep: Path | None) -> dict[str, float]:
    """pgbench all along; calm phases (no backupd) and nights alternate."""
    log = b.work / "pgbench.log"
    load = await b.source.pgbench(log)
    # backupd lowers its priority at start (proc/priority.py), so the tools it
    # starts run below the apps: the same here, once pgbench and the source
    # (started at normal priority) run, for what the nights start.
    problems = lower_own_priority(Settings().backup_nice)
    say(f"nights: backup work at niceness +{Settings().backup_nice}, lowest best-effort I/O"
        + (f" (not all: {problems})" if problems else ""))  # fmt: skip
    phases: list[tuple[float, float]] = []
    delays: list[float] = []
    try:
        # Not measured: pgbench's first stretch runs slower (caches, the
        # checkpoint after the load), which made the first calm phase
        # ~25% below the last and the ratio a measure of warm-up.
        await asyncio.sleep(calm_s)
        for _ in range(count):
            start = time.time()
            await asyncio.sleep(calm_s)
            phases.append((start, time.time()))
            start = time.time()
            recs = await night(b)
            phases.append((start, time.time()))
            for r, done in recs:
                e = r.entry
                if e.state == "verified":
                    delays.append(e.verified_at - done)
                    say(f"night: {e.kind} taken in {done - e.taken_at:.1f}s, verified "
                        f"{e.verified_at - done:.1f}s later; {e.size / 2**20:.0f} MB read; "
                        f"{e.locations}")  # fmt: skip
                else:
                    delays.append(float("nan"))
                    say(f"night: {e.kind} {e.state}: {e.message}")
        start = time.time()
        await asyncio.sleep(calm_s)
        phases.append((start, time.time()))
    finally:
        await terminate(load, 10.0, signal.SIGINT)
        if keep is not None:
            shutil.copy(log, keep / "pgbench-nights.log")
    samples = progress(log.read_text())
    for i, (start, end) in enumerate(phases):
        say(f"{'night' if i % 2 else 'calm'} phase: {phase_tps(samples, start, end)}")
    ratios = []
    for i in range(count):
        before, during, after = phases[2 * i], phases[2 * i + 1], phases[2 * i + 2]
        calm = statistics.fmean([mean_tps(samples, *before), mean_tps(samples, *after)])
        busy = mean_tps(samples, *during)
        ratios.append(busy / calm)
        say(f"night {i + 1}: {during[1] - during[0]:.0f}s, pgbench {busy:.0f} tps; calm "
            f"phases either side {calm:.0f} tps; ratio {busy / calm:.3f}")  # fmt: skip
    return {
        "write_throughput_ratio": statistics.median(ratios),
        "drill_delay_s": max(delays) if delays else float("nan"),
    }


# ------------------------------------------------------------------ recovery point


async def caught_up(barman: Barman, server: str) -> None:
    """Wait until the streamed WAL reaches the source's present (after a calm
    phase the slot has kept WAL for pg_receivewal to catch up on)."""
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        try:
            if await barman.mark(server) is not None:
                return
        except (BarmanError, FileNotFoundError):
            # FileNotFoundError: Barman.last_commit lists the streaming
            # .partial segment, and pg_receivewal, catching up, renames it
            # before it is read (a race of barman.py's, reported).
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


async def recovery_point(b: Bench, load_s: float) -> dict[str, float]:
    server = server_name(HOST_ID)
    async with b.streaming() as barman:
        await caught_up(barman, server)
        load = await b.source.pgbench(b.work / "pgbench-rpo.log", rate=RPO_RATE_TPS)
        writer = Writer(b.source)
        writer.start()
        try:
            await asyncio.sleep(load_s)
            await b.source.destroy()
        finally:
            writer.stop.set()
            await asyncio.to_thread(writer.join, 30)
            await terminate(load, 10.0, signal.SIGINT)
        if writer.last is None:
            raise RuntimeError(f"the writer committed nothing: {writer.error}")
        say(f"source killed and removed; {writer.count} rows acknowledged, the last stamped "
            f"{writer.last.isoformat()} (the writer then saw: {writer.error})")  # fmt: skip
        started = time.monotonic()
        window = await barman.window(server)
        if window is None:
            raise RuntimeError("Barman holds no complete base backup")
        target = window.latest - timedelta(microseconds=1)
        run = scratch_dir(b.layout, "rpo-")
        try:
            pgdata = run / "pgdata"
            await barman.recover(server, pgdata, target_time=target)
            async with scratch_postgres(b.layout, pgdata=pgdata, login_as=BACKUP_ROLE,
                                        ready_timeout=RECOVERY_READY_TIMEOUT_S) as pg:  # fmt: skip
                reason = stop_reason(pgdata)
                async with await pg.connect(APP) as conn:
                    cur = await conn.execute("SELECT max(ts), count(*) FROM rpo_marks")
                    newest, rows = (await cur.fetchone()) or (None, 0)
        finally:
            await asyncio.to_thread(shutil.rmtree, run, True)
        recover_s = time.monotonic() - started
    if newest is None:
        raise RuntimeError("the recovered copy holds no row of the writer's")
    lost = (writer.last - newest).total_seconds()
    say(f"recovered to {target.isoformat()} (window {window}; recovery ended: {reason}) in "
        f"{recover_s:.1f}s: {rows} of {writer.count} rows, the newest stamped "
        f"{newest.isoformat()}")  # fmt: skip
    return {"rpo_s": max(0.0, lost), "pitr_recover_s": recover_s}


# ------------------------------------------------------------------ the run


async def run(args: argparse.Namespace) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="roost-bench-backup-"))
    os.chmod(base, 0o711)  # the postgres and roost-backup users walk through
    # A base backup waits for a spread checkpoint (Barman's immediate_checkpoint
    # is off): checkpoint_timeout * 0.9 under load. --quick shortens it.
    conf = {"checkpoint_timeout": f"{args.checkpoint_timeout_s}s"} if args.quick else {}
    source = Source(base / "source", cpu=None if args.no_pin else SOURCE_CPU, settings=conf)
    node = Node(generate_keypair(), [])
    try:
        with contextlib.ExitStack() as stack:
            await source.start()
            size = await source.provision(args.size_mb << 20)
            say(f"source: PostgreSQL on 127.0.0.1:{source.port}, database {APP} "
                f"{size / 2**20:.0f} MB")  # fmt: skip
            layout = Layout(base / "backupd-data")
            layout.create()
            settings = Settings(backup_schedule="off")
            if not args.no_offsite:
                sshd = stack.enter_context(sftp_server(await ensure_ssh_key(layout)))
                settings = Settings(
                    backup_schedule="off",
                    backup_offsite=f"sftp://root@127.0.0.1:{sshd.port}//repos/roost",
                    backup_offsite_host_key=sshd.host_key_pub,
                )
            repos = await open_repos(layout, settings)
            if repos.offsite_problem:
                raise RuntimeError(f"the offsite location: {repos.offsite_problem}")
            endpoints = {"servicehost": [Endpoint(SH_ADDRESS, "")]}
            pullers = SourcePullers(node, ClusterConfig(endpoints=endpoints), source=source)
            pullers.seen[SH_ADDRESS] = BackupSource(host_id=HOST_ID, postgres=source.pg())
            drills = Drills(repos.local, layout)
            b = Bench(source, build(layout, settings, pullers, repos, drills), drills, base)
            figures = {"db_size_mb": size / 2**20}
            figures |= await throughput(b)
            figures |= await nights(b, args.nights, args.calm_s, args.keep_logs)
            figures |= await recovery_point(b, args.rpo_load_s)
            return figures
    finally:
        await source.stop()
        node.close()
        if args.keep_logs is not None:
            for log in (source.base / "postgres.log", base / "pgbench-rpo.log"):
                if log.exists():
                    shutil.copy(log, args.keep_logs / log.name)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 MB, one night, short phases")
    ap.add_argument("--size-mb", type=int, default=0, help="the app database (default 1024)")
    ap.add_argument("--nights", type=int, default=0, help="nights under load (default 2)")
    ap.add_argument(
        "--calm-s", type=float, default=0.0, help="each calm phase (default: a checkpoint cycle)"
    )
    ap.add_argument("--rpo-load-s", type=float, default=0.0, help="load before the kill")
    ap.add_argument("--no-offsite", action="store_true", help="the local repository only")
    ap.add_argument("--no-pin", action="store_true", help="run source and backupd on any CPU")
    ap.add_argument("--keep-logs", type=Path, help="copy pgbench's and the source's logs here")
    args = ap.parse_args()
    args.size_mb = args.size_mb or (50 if args.quick else 1024)
    args.nights = args.nights or (1 if args.quick else 2)
    # pgbench's rate swings with the checkpoint cycle (full-page writes after
    # each): a calm phase of one whole cycle has the cycle's mean wherever it starts.
    args.checkpoint_timeout_s = 30 if args.quick else 300  # 300: PostgreSQL's default
    args.calm_s = args.calm_s or float(args.checkpoint_timeout_s)
    args.rpo_load_s = args.rpo_load_s or (10.0 if args.quick else 30.0)
    if args.keep_logs is not None:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        sys.exit(
            "bench/backup.py needs root (PostgreSQL as postgres, scratch servers as roost-backup)"
        )
    if not args.no_pin and len(os.sched_getaffinity(0)) < 2:
        say("fewer than 2 CPUs: nothing pinned")
        args.no_pin = True
    if not args.no_pin:
        # Before any thread exists: every thread and child inherits it.
        os.sched_setaffinity(0, {BACKUPD_CPU})
    logging.basicConfig(level=logging.WARNING, format="# log %(name)s: %(message)s")
    say(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; size {args.size_mb} MB, "
        f"{args.nights} night(s), calm phases {args.calm_s:.0f}s, offsite "
        f"{'no' if args.no_offsite else 'SFTP on loopback'}, "
        f"{'unpinned' if args.no_pin else 'source on CPU 0, backupd on CPU 1'}, source "
        f"checkpoint_timeout {args.checkpoint_timeout_s}s")  # fmt: skip
    started = time.monotonic()
    f = asyncio.run(run(args))
    say(f"done in {time.monotonic() - started:.0f}s, load average {os.getloadavg()[0]:.2f}")
    print(f"db_size_mb: {f['db_size_mb']:.0f}")
    print(f"pg_dump_s: {f['pg_dump_s']:.2f}")
    print(f"roost_dump_backup_s: {f['roost_dump_backup_s']:.2f}")
    print(f"roost_base_backup_s: {f['roost_base_backup_s']:.2f}")
    print(f"backup_vs_pg_dump: {f['backup_vs_pg_dump']:.3f}")
    print(f"base_backup_vs_pg_dump: {f['base_backup_vs_pg_dump']:.3f}")
    print(f"pg_restore_s: {f['pg_restore_s']:.2f}")
    print(f"roost_restore_s: {f['roost_restore_s']:.2f}")
    print(f"restore_vs_pg_restore: {f['restore_vs_pg_restore']:.3f}")
    print(f"roost_pitr_restore_s: {f['roost_pitr_restore_s']:.2f}")
    print(f"pitr_restore_vs_pg_restore: {f['pitr_restore_vs_pg_restore']:.3f}")
    print(f"rpo_s: {f['rpo_s']:.2f}")
    print(f"pitr_recover_s: {f['pitr_recover_s']:.1f}")
    print(f"write_throughput_ratio: {f['write_throughput_ratio']:.3f}")
    print(f"drill_delay_s: {f['drill_delay_s']:.1f}")


if __name__ == "__main__":
    main()
