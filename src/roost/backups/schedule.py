"""When backupd does what: a pure function of the clock, what exists, and what ran.

Theory of operation. What there is to back up (`wanted`) comes from what
the sources report: each servicehost's PostgreSQL cluster (a base backup a
day; WAL streams continuously and is not scheduled here), each app's
database (a logical dump a night), Redis (every `redis_s`), data directory
and git repository (daily), the platform's own state (daily); plus two
housekeeping jobs, retention (daily) and the repositories' full integrity
check (every `check_s`); and per cluster, Barman's `archive-wal` every
`archive_s` (a few minutes), which moves the streamed WAL segments into
Barman's archive, compressed and indexed, so a recovery to a time in the
day does not fetch the day's WAL from the streaming directory segment by
segment. A drill is not scheduled: it follows every backup.

A daily job is due once the clock has passed today's hour (`hour`, UTC)
since it last succeeded: a capture at 10:00 (before a release) counts for
that night's 03:00 slot's day, the next is due at tomorrow's 03:00. An
interval job is due `every` seconds after it last succeeded. A job that
never ran is due at once (a source just seen has no backup at all). A job
whose last try failed is due again `retry_s` after that try, not a day
later, and every failure is reported as it happens (jobs.py), so a failing
backup is neither silent nor retried in a tight loop.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from roost.backups.catalog import Record

DAY_S = 86400.0

# kind -> how often: "daily" at the configured hour, else an interval setting
DAILY = frozenset({"pgdump", "pgbase", "data", "git", "platform", "retention"})
INTERVAL = frozenset({"redis", "check", "archive-wal"})


@dataclass(frozen=True, order=True)
class Job:
    kind: str
    app: str = ""  # the app; "" for the platform, a cluster or housekeeping
    host: str = ""  # pgbase: the servicehost whose cluster it is


@dataclass(frozen=True)
class Run:
    at: float  # when it started (a backup's taken_at)
    ok: bool


@dataclass(frozen=True)
class Cadence:
    hour: int = 3
    redis_s: float = 6 * 3600.0
    check_s: float = 7 * DAY_S
    retry_s: float = 600.0
    archive_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.hour <= 23:
            raise ValueError(f"the backup hour must be 0-23 (UTC), not {self.hour}")
        if min(self.redis_s, self.check_s, self.retry_s, self.archive_s) <= 0:
            raise ValueError("backup intervals must be positive")


@dataclass(frozen=True)
class Sources:
    """What there is to back up, as the sources last said."""

    clusters: tuple[str, ...] = ()  # servicehosts with a PostgreSQL cluster
    databases: tuple[str, ...] = ()  # apps with a database
    redis: tuple[str, ...] = ()  # apps with a Redis
    data: tuple[str, ...] = ()  # apps with a data directory
    git: tuple[str, ...] = ()  # apps with a repository
    platform: bool = True  # a controller to snapshot


def wanted(src: Sources) -> list[Job]:
    jobs = [Job("pgbase", host=h) for h in src.clusters]
    jobs += [Job("archive-wal", host=h) for h in src.clusters]
    jobs += [Job("pgdump", a) for a in src.databases]
    jobs += [Job("redis", a) for a in src.redis]
    jobs += [Job("data", a) for a in src.data]
    jobs += [Job("git", a) for a in src.git]
    if src.platform:
        jobs.append(Job("platform"))
    jobs += [Job("retention"), Job("check")]
    return sorted(set(jobs))


def last_slot(now: float, hour: int) -> float:
    """The latest time at or before `now` that is `hour`:00:00 UTC."""
    t = time.gmtime(now)
    today = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, hour, 0, 0, 0, 0, 0))
    return float(today if today <= now else today - DAY_S)


def _interval(job: Job, cadence: Cadence) -> float:
    return {"redis": cadence.redis_s, "archive-wal": cadence.archive_s}.get(
        job.kind, cadence.check_s
    )


def due_at(job: Job, run: Run | None, cadence: Cadence, now: float) -> float:
    """When `job` is (or was) next due, given its last run."""
    if run is None:
        return float("-inf")
    if not run.ok:
        return run.at + cadence.retry_s
    if job.kind in DAILY:
        slot = last_slot(now, cadence.hour)
        return slot if run.at < slot else slot + DAY_S
    return run.at + _interval(job, cadence)


def due(now: float, cadence: Cadence, jobs: Iterable[Job], runs: Mapping[Job, Run]) -> list[Job]:
    """The jobs due now, the longest overdue first (never-run ones before all)."""
    pending = [(due_at(j, runs.get(j), cadence, now), j) for j in jobs]
    return [j for at, j in sorted(pending) if at <= now]


def next_wake(now: float, cadence: Cadence, jobs: Iterable[Job], runs: Mapping[Job, Run]) -> float:
    """When the next job falls due (now when one is due; a day away at most)."""
    times = [due_at(j, runs.get(j), cadence, now) for j in jobs]
    return max(now, min([*times, now + DAY_S]))


def job_of(rec: Record) -> Job:
    e = rec.entry
    return Job(e.kind, host=rec.source) if e.kind == "pgbase" else Job(e.kind, e.app)


def runs_from(records: Iterable[Record]) -> dict[Job, Run]:
    """Each backup job's latest run, from the catalog: taken or verified is a
    success; failed (not taken, or its drill failed: nothing proven) a
    failure, tried again after `retry_s`."""
    out: dict[Job, Run] = {}
    for r in records:
        job = job_of(r)
        prev = out.get(job)
        if prev is None or r.entry.taken_at >= prev.at:
            out[job] = Run(r.entry.taken_at, r.entry.state != "failed")
    return out
