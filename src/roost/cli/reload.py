"""`roost up`'s restart: every Roost daemon replaced, one at a time, apps untouched.

Theory of operation. A reload (SIGHUP to `roost up`, which `roost up
--reload` sends) walks the roles in their start order (the controller first:
the others register with it) and replaces each before the next
(`roost.proc.supervise.Supervisor.replace`): the old daemon is told to go,
its successor is started the moment it may be (no backoff: this is no
crash), and the walk waits until the successor serves (`roost.cli.readiness`).

Which signal, and whether the two may overlap, is `plan`'s decision (pure):

  - the runner and the servicehost have tenants (instances, PostgreSQL and
    Redis): SIGUSR2, "hand over", makes them exit and leave their tenants
    running; the successor, started once the old one is gone, adopts them;
  - the router, when `roost up` holds its listening sockets and hands them
    to every router it starts (`roost.proc.activation`): SIGUSR2 makes the
    old one stop accepting and drain, and the new one starts at once, with
    no wait, so connections meanwhile wait in the kernel's backlog instead
    of being refused. Without shared sockets the new one must wait for the
    port: TERM (which drains too), then the start;
  - every other role: TERM (a full stop of that daemon), then the start.

SIGHUPs that arrive during a reload make one more reload after it: each
asker waits for a reload that started after it asked
(`roost.proc.upstate.reload_verdict`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from roost.proc import upstate
from roost.proc.supervise import Supervisor

# Roles whose tenants outlive them on SIGUSR2 (the hand-over signal).
HANDS_OVER = frozenset({"runner", "servicehost"})


@dataclass(frozen=True)
class Step:
    role: str
    signal: int
    # Start the successor at once, without waiting for the old one to exit.
    overlap: bool = False


def plan(roles: list[str], shared_sockets: bool) -> list[Step]:
    """How to replace each role, in the order given (their start order)."""
    steps = []
    for role in roles:
        if role in HANDS_OVER:
            steps.append(Step(role, signal.SIGUSR2))
        elif role == "router" and shared_sockets:
            steps.append(Step(role, signal.SIGUSR2, overlap=True))
        else:
            steps.append(Step(role, signal.SIGTERM))
    return steps


class Reloads:
    """Reloads asked for (`ask`, safe from a signal handler) and run one at
    a time by `run`; `status` is the last one's, for DATA/up.json."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._asked = asyncio.Event()
        self._clock = clock
        self.status: upstate.ReloadStatus | None = None

    def ask(self) -> None:
        self._asked.set()

    async def run(
        self,
        sup: Supervisor,
        steps: list[Step],
        timeout: Callable[[str], float],
        say: Callable[[str], None],
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Serve reloads until cancelled; a stop of everything ends the walk.
        `before` runs at the start of each (roost up: a new zygote, so the
        successors run the code now on disk)."""
        while True:
            await self._asked.wait()
            self._asked.clear()
            self.status = upstate.ReloadStatus(started_at=self._clock())
            say("reloading: replacing every daemon, one at a time")
            if before is not None:
                await before()
            replaced: dict[str, list[int]] = {}
            error = ""
            for step in steps:
                if step.role not in sup.children:
                    continue
                old, new = await sup.replace(
                    step.role, step.signal, timeout(step.role), step.overlap
                )
                if new == 0 and sup.stopping:
                    error = "roost up is stopping"
                    break
                if new == 0:
                    c = sup.children.get(step.role)
                    why = upstate.last_words(c.last_error) if c is not None else ""
                    error = f"{step.role} did not come back up" + (f": {why}" if why else "")
                    break
                replaced[step.role] = [old, new]
                self.status = upstate.ReloadStatus(
                    started_at=self.status.started_at, replaced=dict(replaced)
                )
            self.status = upstate.ReloadStatus(
                started_at=self.status.started_at,
                finished_at=self._clock(),
                replaced=replaced,
                error=error,
            )
            took = self.status.finished_at - self.status.started_at
            say(f"reload failed: {error}" if error else f"reloaded in {took:.1f}s")
