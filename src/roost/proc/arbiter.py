"""The supervision loop every Roost supervisor runs (gunicorn's arbiter, in asyncio).

Theory of operation. Nothing but this loop changes a supervisor's records.
Everything else only *posts events*: a signal handler posts "stop", a
child's watcher posts its exit, a readiness probe posts that its child
answered, a request posts "add this" or "remove that". The loop wakes on an
event or at the next deadline its policy cares about (a backoff ending, a
grace period running out), applies the events through pure transitions,
asks the pure `plan` what to do, and does it. So every decision (start,
restart after a backoff, give up, stop, kill a hung child) is made in one
place, from data, with one clock, and is unit-tested without processes.

Every task a supervisor starts (watchers, probes) belongs to the loop's
TaskGroup; `run()` returns once `finished()` says so, and nothing it started
outlives it.

Subclasses: `roost.proc.supervise.Supervisor` (roles under `roost up`,
router workers, PostgreSQL and Redis servers) and the runner's instance
supervisor (`roost.runner.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

E = TypeVar("E")
A = TypeVar("A")

# The loop re-plans at least this often even without events or deadlines.
MAX_SLEEP_S = 1.0


class Arbiter(Generic[E, A]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._events: list[E] = []
        self._wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None

    # ------------------------------------------------------------ the policy

    def finished(self) -> bool:
        """True once the loop should return."""
        raise NotImplementedError

    def apply(self, event: E, now: float) -> None:
        """Apply one event to the records (through pure transitions)."""
        raise NotImplementedError

    def plan(self, now: float) -> list[A]:
        """What to do now, from the records alone."""
        raise NotImplementedError

    async def do(self, action: A, now: float) -> None:
        """Perform one action (the only I/O the loop does)."""
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """The next clock value at which `plan` may decide something new."""
        return None

    def settle(self) -> None:
        """After each round of actions (e.g. release what no record uses)."""

    def closing(self) -> None:
        """Once finished, before the TaskGroup waits for its tasks."""

    # ------------------------------------------------------------ the loop

    def post(self, event: E) -> None:
        """Queue an event and wake the loop (safe from a signal handler)."""
        self._events.append(event)
        self._wake.set()

    @property
    def tasks(self) -> asyncio.TaskGroup:
        """The TaskGroup that owns every task of this supervisor."""
        assert self._tg is not None, "the supervisor is not running"
        return self._tg

    @property
    def running(self) -> bool:
        return self._tg is not None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            while not self.finished():
                await self._sleep()
                events, self._events = self._events, []
                now = self._clock()
                for event in events:
                    self.apply(event, now)
                for action in self.plan(now):
                    await self.do(action, now)
                self.settle()
            self.closing()
        self._tg = None

    async def _sleep(self) -> None:
        if self._events:
            return
        timeout = MAX_SLEEP_S
        deadline = self.next_deadline()
        if deadline is not None:
            timeout = max(0.0, min(timeout, deadline - self._clock()))
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
        # cancellation that arrives as the event is set.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        self._wake.clear()
