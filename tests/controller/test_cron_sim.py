"""Exactly once, model-checked: `cron.plan` and the runner's `judge_run`
driven through random lease handovers on a fake clock.

A small world stands in for the state database (claims, compare-and-set on
the token), the lease (a token that grows with each holder) and a runner
(sessions that take a few ticks; fenced RunStarts judged as the runner
judges them). Holders die between any two steps; some only pause and
finish the step they were in after their successor took over (a deposed
holder's late write or RunStart). Every slot must run exactly once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from roost.controller import cron
from roost.controller.cron import Claim, ClaimKey, Job
from roost.runner.fencing import Verdict, judge_run

TICKS_PER_SLOT = 4
JOB = Job("app", "./tick", "* * * * *", app_id=1)
JOBS = {(1, JOB.key): JOB}


@dataclass
class Runner:
    fence: int = 0
    started: set[str] = field(default_factory=set)
    running: dict[str, tuple[int, int]] = field(default_factory=dict)  # session -> slot, end
    ended: set[str] = field(default_factory=set)  # exited, not collected yet
    ran: list[int] = field(default_factory=list)

    def run_start(self, session: str, slot: int, fence: int, now: int, rng: random.Random) -> bool:
        if session in self.running or session in self.ended:
            return True
        if judge_run(self.fence, self.started, fence, session) is not Verdict.ACCEPT:
            return False
        self.fence = max(self.fence, fence)
        self.started.add(session)
        self.running[session] = (slot, now + rng.randint(1, 2 * TICKS_PER_SLOT))
        return True

    def advance(self, now: int) -> None:
        for session, (slot, end) in list(self.running.items()):
            if now >= end:
                self.ran.append(slot)
                del self.running[session]
                self.ended.add(session)


@dataclass
class Task:
    claim: Claim
    step: str  # "start" (record started), "send" (RunStart), "poll"


@dataclass
class Holder:
    token: int
    since: float | None = None
    tasks: dict[ClaimKey, Task] = field(default_factory=dict)


class World:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.claims: dict[ClaimKey, Claim] = {}
        self.token = 0
        self.runner = Runner()

    def cas(self, claim: Claim, token: int, **changes: object) -> Claim | None:
        row = self.claims.get(claim.key)
        if row is None or row.fence != token or row.state == cron.FINISHED:
            return None
        self.claims[claim.key] = row = replace(row, **changes)  # type: ignore[arg-type]
        return row

    def adopt(self, claim: Claim, h: Holder, state: str) -> Claim | None:
        row = self.claims.get(claim.key)
        if (
            h.token != self.token
            or row is None
            or (row.fence, row.state)
            != (
                claim.fence,
                claim.state,
            )
        ):
            return None
        self.claims[claim.key] = row = replace(row, fence=h.token, state=state)
        return row

    def tick(self, h: Holder, now: int) -> None:
        slot_now = now // TICKS_PER_SLOT
        if h.since is None:
            h.since = (now / TICKS_PER_SLOT - cron.MAX_CATCHUP) * 60
        window = [
            c for c in self.claims.values() if c.state != cron.FINISHED or c.slot > slot_now - 5
        ]
        p = cron.plan(
            jobs=JOBS,
            claims=window,
            due_now=cron.due(JOBS.values(), h.since, now / TICKS_PER_SLOT * 60),
            now_slot=slot_now,
            fence=h.token,
            active=set(h.tasks),
            alive={"r1"},
            settled=True,
        )
        for new in p.new:
            key = (1, new.job.key, new.slot)
            if h.token == self.token and key not in self.claims:
                self.claims[key] = Claim(1, JOB.key, new.slot, h.token, new.state, new.status)
                if new.state == cron.CLAIMED:
                    h.tasks[key] = Task(self.claims[key], "start")
        for old in p.run:
            if (c := self.adopt(old, h, cron.CLAIMED)) is not None:
                h.tasks[c.key] = Task(c, "start")
        for old in p.follow:
            if (c := self.adopt(old, h, cron.STARTED)) is not None:
                h.tasks[c.key] = Task(c, "send")
        for old, status in p.finish:  # only claims of the lookback's oldest slots
            if self.adopt(old, h, old.state) is not None:
                self.cas(old, h.token, state=cron.FINISHED, status=status)
        h.since = now / TICKS_PER_SLOT * 60

    def step(self, h: Holder, task: Task, now: int) -> bool:
        """One step of a run; False once the task is over (done, or taken over)."""
        c = task.claim
        if task.step == "start":
            session = f"s{c.slot}-{h.token}"
            row = self.cas(c, h.token, state=cron.STARTED, runner="r1", session=session)
            if row is None:
                return False
            task.claim, task.step = row, "send"
            return True
        if task.step == "send":
            if not self.runner.run_start(c.session, c.slot, h.token, now, self.rng):
                self.cas(c, h.token, state=cron.FINISHED, status=cron.LOST)
                return False
            task.step = "poll"
            return True
        if c.session in self.runner.running:
            return True
        if c.session in self.runner.ended:
            if self.cas(c, h.token, state=cron.FINISHED, status=cron.SUCCEEDED) is not None:
                self.runner.ended.discard(c.session)  # ExecClose after the finish
        else:  # the runner knows no such session (ExecPoll's Error)
            self.cas(c, h.token, state=cron.FINISHED, status=cron.LOST)
        return False


def actions(w: World, h: Holder, now: int) -> list[Callable[[int], None]]:
    """What a holder does in one tick, in order: its tick, then one step of each run."""

    def step(key: ClaimKey, task: Task) -> Callable[[int], None]:
        def act(at: int) -> None:
            if not w.step(h, task, at):
                h.tasks.pop(key, None)

        return act

    return [lambda at: w.tick(h, at), *(step(k, t) for k, t in list(h.tasks.items()))]


@pytest.mark.parametrize("seed", range(60))
def test_every_slot_runs_exactly_once_through_handovers(seed: int) -> None:
    rng = random.Random(seed)
    w = World(rng)
    w.token = 1
    holder: Holder | None = Holder(1)
    late: tuple[int, Callable[[int], None]] | None = None  # a paused holder's step, and when
    back_at = born = 0
    first_slot, last_slot = 2, 40
    now = first_slot * TICKS_PER_SLOT
    while now < (last_slot + 20) * TICKS_PER_SLOT:
        now += 1
        w.runner.advance(now)
        if late is not None and now >= late[0]:
            late[1](now)  # the deposed holder wakes and finishes what it was doing
            late = None
        if holder is None and now >= back_at:
            w.token += 1
            holder, born = Holder(w.token), now
        if holder is None:
            continue
        todo = actions(w, holder, now)
        # A holder lives a slot at least: the outages stay within the catch-up window.
        dies = born + TICKS_PER_SLOT <= now < last_slot * TICKS_PER_SLOT and rng.random() < 0.15
        cut = rng.randint(0, len(todo) - 1) if dies else len(todo)
        for act in todo[:cut]:
            act(now)
        if dies:
            if rng.random() < 0.5:  # paused, not dead: its step in flight lands later
                late = (now + rng.randint(1, 3 * TICKS_PER_SLOT), todo[cut])
            holder, back_at = None, now + rng.randint(1, 2 * TICKS_PER_SLOT)
    ran = sorted(s for s in w.runner.ran if first_slot < s < last_slot)
    assert ran == list(range(first_slot + 1, last_slot)), f"seed {seed}"
    for slot in range(first_slot + 1, last_slot):
        row = w.claims[(1, JOB.key, slot)]
        assert (row.state, row.status) == (cron.FINISHED, cron.SUCCEEDED), (seed, row)
