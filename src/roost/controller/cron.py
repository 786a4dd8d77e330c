"""Cron: which slots are due and what the lease holder does about each claim,
decided without I/O and with the clock passed in.

Theory of operation. Time is cut into slots of `slot_s` seconds (60: Unix
minutes; tests shorten them with ROOST_CRON_SLOT_SECONDS). A schedule is
matched as if slot N were Unix minute N, so a shortened slot is a short
minute. Every tick the scheduler-lease holder asks `due` for the (job, slot)
pairs whose slot started in (since, now] and matches; a new holder starts
`since` one catch-up window back, so a slot its predecessor never claimed
still runs. Slots older than the window are skipped, not replayed, after an
outage (cron's own behaviour); so are slots that began before the job existed
(`Job.not_before`: a job new in a release that went live inside the window).

A slot runs once because it is claimed first: a row keyed (app, job, slot) in
the state database, inserted only while the inserter holds the lease, and
carrying the lease's fencing token. Its life:

    queued ─▶ claimed ─▶ started(runner, session) ─▶ finished(status)

`started` is written with the runner and the session id *before* RunStart
is sent, and every change is a compare-and-set on the claim's token; a new
holder adopts an open claim by writing its own (higher) token into it first,
so whatever a deposed holder still tries afterwards is refused. `plan` then
decides, from the open claims alone, what the holder does:

- claimed, never started (its holder died before recording RunStart):
  nothing ran, so it is run, if its slot is still within the catch-up
  window; otherwise it is finished as missed.
- started: the session may be running (a runner does not cut a fenced
  session nobody polls), have ended (the runner keeps its output and exit
  status until collected) or never have reached the runner. The holder sends
  the same RunStart again (the same session id: a runner starts a session id
  once, and refuses a RunStart older than a token it has seen) and follows
  the session to its end. A runner that is gone is finished as lost: a run
  is never started twice.
- queued: waits (overlap "queue") until no earlier run of its job is open.

Overlap policy per job, applied to each newly due slot against the job's
open claims: allow (claim and run), skip (finished at once as skipped) or
queue (queued, at most QUEUE_LIMIT deep; skipped beyond that).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from roost.appspec.cron import CronSchedule, parse_schedule
from roost.appspec.errors import AppSpecError
from roost.wire.messages import MAX_LOG_LINE

# Claim states.
QUEUED = "queued"
CLAIMED = "claimed"
STARTED = "started"
FINISHED = "finished"
# Outcomes of a finished claim (its `status`).
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"  # overlap policy: an earlier run was still going on
MISSED = "missed"  # claimed but never started within the catch-up window
LOST = "lost"  # started on a runner that died (or forgot it): never run twice

MAX_CATCHUP = 5  # slots: the catch-up window, and the grace for taking over a claim
QUEUE_LIMIT = 10  # queued runs per job beyond which a due run is skipped

ClaimKey = tuple[int, str, int]  # (app id, job key, slot)
JobKey = tuple[int, str]  # (app id, job key)


@dataclass(frozen=True)
class Job:
    app: str
    command: str
    schedule: str
    app_id: int = 0
    overlap: str = "allow"
    # Wall-clock time the job came to exist (its release went live): a slot
    # that started before is never due, even inside a new holder's catch-up
    # window. 0 for a job older than any window.
    not_before: float = 0.0

    @property
    def key(self) -> str:
        """Stable identity of the job within its app (command and schedule)."""
        return hashlib.sha256(f"{self.command}\0{self.schedule}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Due:
    job: Job
    slot: int  # Unix minute when slots last a minute


@dataclass(frozen=True)
class Fence:
    """Who writes: the holder of lease `lease` with fencing token `token`."""

    lease: str
    holder: str
    token: int


@dataclass(frozen=True)
class Claim:
    """One (app, job, slot) claim row, as the decisions and the runner see it."""

    app_id: int
    job: str  # Job.key
    slot: int
    fence: int
    state: str
    status: str = ""
    runner: str = ""
    session: str = ""
    started_at: float | None = None
    # Output already written to the app's log: the last acknowledged chunk,
    # the unterminated tail of each stream, how many lines.
    out_seq: int = 0
    out_tail: dict[str, bytes] = field(default_factory=dict, compare=False)
    out_lines: int = 0

    @property
    def key(self) -> ClaimKey:
        return (self.app_id, self.job, self.slot)

    @property
    def job_key(self) -> JobKey:
        return (self.app_id, self.job)


@dataclass(frozen=True)
class NewClaim:
    job: Job
    slot: int
    state: str  # CLAIMED, QUEUED, or FINISHED (then status SKIPPED)
    status: str = ""


@dataclass
class Plan:
    new: list[NewClaim] = field(default_factory=list)
    run: list[Claim] = field(default_factory=list)  # adopt as claimed, then start
    follow: list[Claim] = field(default_factory=list)  # adopt as started, then follow
    finish: list[tuple[Claim, str]] = field(default_factory=list)  # adopt, then finish so


def slot_of(ts: float, slot_s: float = 60.0) -> int:
    return int(ts // slot_s)


def _schedule(job: Job, cache: dict[str, CronSchedule | None]) -> CronSchedule | None:
    if job.schedule not in cache:
        try:
            cache[job.schedule] = parse_schedule(job.schedule)
        except AppSpecError:
            cache[job.schedule] = None  # rejected at deploy; never fires
    return cache[job.schedule]


def due(
    jobs: Iterable[Job],
    since: float,
    now: float,
    max_catchup: int = MAX_CATCHUP,
    slot_s: float = 60.0,
) -> list[Due]:
    """(job, slot) pairs whose slot starts in (since, now] and matches, oldest first."""
    last = slot_of(now, slot_s)
    first = max(slot_of(since, slot_s) + 1, last - max_catchup + 1)
    cache: dict[str, CronSchedule | None] = {}
    out: list[Due] = []
    for slot in range(first, last + 1):
        when = datetime.fromtimestamp(slot * 60, UTC)
        for job in jobs:
            if slot * slot_s < job.not_before:
                continue
            sched = _schedule(job, cache)
            if sched is not None and sched.matches(when):
                out.append(Due(job, slot))
    return out


def plan(
    *,
    jobs: Mapping[JobKey, Job],
    claims: Iterable[Claim],
    due_now: Iterable[Due],
    now_slot: int,
    fence: int,
    active: Collection[ClaimKey],
    alive: Collection[str],
    settled: bool,
    max_catchup: int = MAX_CATCHUP,
    queue_limit: int = QUEUE_LIMIT,
) -> Plan:
    """What the holder of token `fence` does this tick (see the module docstring).

    `claims`: every open claim, and every claim of the catch-up window (a
    finished one there tells that its slot is decided already);
    `active`: claims this controller is already running or following;
    `alive`: runner hosts heard from; `settled`: whether this holder knows
    yet which hosts are alive (until then no runner is declared gone).
    """
    p = Plan()
    by_job: dict[JobKey, list[Claim]] = defaultdict(list)
    seen: set[ClaimKey] = set()
    oldest = now_slot - max_catchup + 1
    for c in sorted(claims, key=lambda c: c.slot):
        seen.add(c.key)
        if c.state == FINISHED:
            continue
        by_job[c.job_key].append(c)
        if c.key in active or c.fence > fence:
            continue  # ours already, or a newer holder's (we are deposed)
        if c.state == STARTED:
            if c.runner in alive or not settled:
                p.follow.append(c)
            else:
                p.finish.append((c, LOST))
        elif c.state == CLAIMED:
            if c.job_key in jobs and c.slot >= oldest:
                p.run.append(c)
            else:
                p.finish.append((c, MISSED))
        elif c.state == QUEUED and c.job_key not in jobs:
            p.finish.append((c, MISSED))
    for d in sorted(due_now, key=lambda d: d.slot):
        jk = (d.job.app_id, d.job.key)
        if (*jk, d.slot) in seen:
            continue
        new = _admit(d, by_job[jk], queue_limit)
        p.new.append(new)
        if new.state != FINISHED:
            by_job[jk].append(Claim(d.job.app_id, d.job.key, d.slot, fence, new.state))
    # A queue moves when nothing of its job runs: its oldest waiting claim starts.
    for jk, open_ in by_job.items():
        if jk not in jobs or any(c.state in (CLAIMED, STARTED) for c in open_):
            continue
        waiting = [c for c in open_ if c.state == QUEUED]
        first = min(waiting, key=lambda c: c.slot, default=None)
        # One queued this very tick waits for its row to exist (next tick); a
        # newer holder's is not ours to start.
        ours = first is not None and first.fence <= fence and first.key not in active
        if first is not None and ours and first.key in seen:
            p.run.append(first)
    return p


def _admit(d: Due, open_: list[Claim], queue_limit: int) -> NewClaim:
    """The overlap policy: how a newly due slot is claimed, given its job's open claims."""
    if not open_ or d.job.overlap == "allow":
        return NewClaim(d.job, d.slot, CLAIMED)
    if d.job.overlap == "queue" and sum(c.state == QUEUED for c in open_) < queue_limit:
        return NewClaim(d.job, d.slot, QUEUED)
    return NewClaim(d.job, d.slot, FINISHED, SKIPPED)


def cut_lines(
    tail: Mapping[str, bytes],
    chunks: Iterable[tuple[str, bytes]],
    max_line: int = MAX_LOG_LINE,
) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """Complete lines of output chunks, given each stream's unterminated tail.

    Returns (stream, line) pairs and the new tails. A tail longer than
    `max_line` is cut off as a line of its own, so what waits is bounded.
    """
    tails = {s: b for s, b in tail.items() if b}
    lines: list[tuple[str, str]] = []
    for stream, data in chunks:
        *complete, rest = (tails.pop(stream, b"") + data).split(b"\n")
        while len(rest) > max_line:
            complete.append(rest[:max_line])
            rest = rest[max_line:]
        lines.extend((stream, raw.decode("utf-8", "replace")) for raw in complete)
        if rest:
            tails[stream] = rest
    return lines, tails


def flush_tails(tail: Mapping[str, bytes]) -> list[tuple[str, str]]:
    """The unterminated last lines, once the run has ended."""
    return [(s, b.decode("utf-8", "replace")) for s, b in sorted(tail.items()) if b]
