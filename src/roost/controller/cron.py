"""Cron: which jobs are due, decided without I/O and with the clock passed in.

Theory of operation: time is cut into minute slots (Unix minutes, UTC). The
scheduler-lease holder asks `due(jobs, since, now)` for every (job, slot)
whose minute is in (since, now] and matches the job's schedule; it then
claims each one with an INSERT on a unique (app, job, slot) key in the state
database and runs only the claims it won. A controller that takes over the
lease re-checks a short window back, so a slot whose holder died before
claiming is still run, and one already claimed is never run twice.
Slots older than `max_catchup` minutes are skipped, not replayed, after a
long outage (cron's own behaviour).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from roost.appspec.cron import CronSchedule, parse_schedule
from roost.appspec.errors import AppSpecError


@dataclass(frozen=True)
class Job:
    app: str
    command: str
    schedule: str

    @property
    def key(self) -> str:
        """Stable identity of the job within its app (command and schedule)."""
        return hashlib.sha256(f"{self.command}\0{self.schedule}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Due:
    job: Job
    slot: int  # Unix minute


def slot_of(ts: float) -> int:
    return int(ts // 60)


def _schedule(job: Job, cache: dict[str, CronSchedule | None]) -> CronSchedule | None:
    if job.schedule not in cache:
        try:
            cache[job.schedule] = parse_schedule(job.schedule)
        except AppSpecError:
            cache[job.schedule] = None  # rejected at deploy; never fires
    return cache[job.schedule]


def due(jobs: Iterable[Job], since: float, now: float, max_catchup: int = 5) -> list[Due]:
    """(job, slot) pairs whose minute lies in (since, now] and matches."""
    last = slot_of(now)
    first = max(slot_of(since) + 1, last - max_catchup + 1)
    cache: dict[str, CronSchedule | None] = {}
    out: list[Due] = []
    for slot in range(first, last + 1):
        when = datetime.fromtimestamp(slot * 60, UTC)
        for job in jobs:
            sched = _schedule(job, cache)
            if sched is not None and sched.matches(when):
                out.append(Due(job, slot))
    return out
