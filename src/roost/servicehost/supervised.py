"""The servicehost's servers (PostgreSQL, one Redis per app) under one
supervisor, `Servers`: the process toolkit's loop (`roost.proc.arbiter`)
and its decisions (`roost.proc.children`: start, probe, restart with the
shared backoff, stop with a grace then SIGKILL), over processes that are
not the daemon's children (detached.py).

Theory of operation. To start a server, the supervisor first asks it
whether it is running already (`Server.find`: a process an earlier daemon
left, checked by its own record) and adopts it; only otherwise does it
launch one. Either way it then waits until the server answers
(`Server.wait_ready`, which checks once more that the process answering is
the one recorded) and watches its pidfd: an exit nobody asked for is a
crash, restarted after the backoff. Three ways to end:

  stop()     every server stopped gracefully (its own stop signal, then
             SIGKILL after its grace): the daemon's full stop;
  release()  every server left running and no longer watched: the
             daemon's hand-over to a successor;
  a crash    (the loop's task cancelled or failing): the same as release,
             as a SIGKILL of the daemon would leave them.

A `Supervised` is one server's view: its state, pid and restarts for the
status push, a wait until it is up, and its removal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from roost.proc import children as C
from roost.proc.backoff import Backoff
from roost.proc.childarbiter import Answered, ChildArbiter, Removed, StopAll
from roost.servicehost.detached import Proc, log_tail
from roost.wire.messages import ServerState

READY_TIMEOUT_S = 60.0
# A server that stayed up this long is forgiven its earlier crashes.
STABLE_S = 30.0

# A supervised server's state as a server status says it (a server never
# "fails" for good: no exit of PostgreSQL or Redis is fatal).
_STATES: dict[str, ServerState] = {
    "pending": "starting",
    "starting": "starting",
    "up": "up",
    "backoff": "backoff",
    "stopping": "stopping",
    "stopped": "stopped",
    "failed": "stopped",
}


class Server(Protocol):
    name: str
    # Asks it to stop: its grace runs out before SIGKILL.
    stop_signal: int
    stop_grace_s: float
    log_file: Path

    async def find(self) -> int | None:
        """The pid of this server running already (left by an earlier
        daemon), checked by its own record; None when there is none."""
        ...

    async def launch(self) -> int:
        """Start it (detached.launch); its pid."""
        ...

    async def wait_ready(self, pid: int, adopted: bool) -> None:
        """Return once process `pid` serves as this server (raise if it cannot)."""
        ...


def server_policy(
    backoff_max_s: float, stop_grace_s: float, ready_timeout_s: float = READY_TIMEOUT_S
) -> C.Policy:
    return C.Policy(
        backoff=Backoff(base_s=0.5, max_s=backoff_max_s, reset_after_s=STABLE_S),
        ready_timeout_s=ready_timeout_s,
        stop_grace_s=stop_grace_s,
        fatal=frozenset(),
    )


def ended(c: C.Child, pid: int, tail: list[str], now: float) -> C.Child:
    """Its process `pid` exited (how, only its reaper knows: detached.py)."""
    if c.pid != pid or not c.has_process:
        return c
    if c.state == "stopping" and not c.fail_reason:
        return dataclasses.replace(c, state="stopped", pid=0, deadline=0.0)
    return C.failed(c, c.fail_reason or "exited; its log ends:", tail, now, None)


# ------------------------------------------------------------------ events
# (Removed, StopAll and Answered are the toolkit's: roost.proc.childarbiter.)


@dataclass(frozen=True)
class Added:
    server: Server
    policy: C.Policy


@dataclass(frozen=True)
class Release:
    pass


@dataclass(frozen=True)
class Exited:
    name: str
    pid: int
    tail: list[str]


Event = Added | Removed | StopAll | Release | Exited | Answered


class Servers(ChildArbiter[Event]):
    """Every server of one servicehost (module docstring)."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock, logger.info, logger.warning)
        self.log = logger
        self._servers: dict[str, Server] = {}
        self._procs: dict[str, Proc] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._released = False

    # ------------------------------------------------------------ inputs

    def add(self, server: Server, policy: C.Policy) -> None:
        self.post(Added(server, policy))

    def stop(self) -> None:
        """Stop every server; `run()` returns once they are all gone."""
        self.post(StopAll())

    def release(self) -> None:
        """Leave every server running, unwatched; `run()` returns at once."""
        self.post(Release())

    def _queued(self, name: str) -> bool:
        return any(isinstance(e, Added) and e.server.name == name for e in self._events)

    def _over(self) -> bool:
        return self._stopping or self._released

    # ------------------------------------------------------------ queries

    def pid(self, name: str) -> int:
        p = self._procs.get(name)
        return p.pid if p is not None else 0

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            # Stopped, released or crashed: nothing is watched any more, and
            # a server still running stays so (module docstring).
            for p in self._procs.values():
                p.close()
            self._procs.clear()

    # ------------------------------------------------------------ the policy

    def finished(self) -> bool:
        if self._released:
            return True
        return (
            self._stopping
            and not self._events
            and not any(c.has_process for c in self.children.values())
        )

    def apply(self, event: Event, now: float) -> None:
        if isinstance(event, Added):
            name = event.server.name
            if name in self.children:
                raise ValueError(f"{name} is supervised already")
            self._servers[name] = event.server
            self._order += 1
            self._set(C.Child(name, self._order, event.policy, probed=True))
        elif self._apply_shared(event, now):
            pass
        elif isinstance(event, StopAll):
            if not self._stopping:
                self.log.info("stopping every server")
            self._stopping = True
            self._notify()
        elif isinstance(event, Release):
            if not self._released:
                self.log.info("leaving every server running for the next servicehost")
            self._released = True
            self._notify()
        elif isinstance(event, Exited):
            self._on_exit(event, now)

    def _on_exit(self, event: Exited, now: float) -> None:
        p = self._procs.pop(event.name, None)
        if p is not None:
            p.close()
        self._watchers.pop(event.name, None)
        probe = self._probes.pop(event.name, None)
        if probe is not None:
            probe.cancel()
        c = self.children.get(event.name)
        if c is None:
            return
        new = ended(c, event.pid, event.tail, now)
        self._set(new)
        if new.state == "backoff" and not self._stopping:
            delay = max(0.0, new.next_start_at - now)
            self.log.warning(
                "%s (pid %d) %s; restarting in %.1fs",
                c.name, event.pid, new.last_error.replace("\n", "\n  "), delay,
            )  # fmt: skip

    def plan(self, now: float) -> list[C.Action]:
        if self._released:
            return []
        return C.plan(self.children, now, self._stopping)

    def _kill(self, c: C.Child) -> None:
        p = self._procs.get(c.name)
        if p is not None:
            p.signal(signal.SIGKILL)

    def _forget(self, name: str) -> None:
        del self._servers[name]

    def closing(self) -> None:
        for task in [*self._probes.values(), *self._watchers.values()]:
            task.cancel()

    # ------------------------------------------------------------ actions

    async def _start(self, c: C.Child, now: float) -> None:
        server = self._servers[c.name]
        try:
            pid = await server.find()
            adopted = pid is not None
            if pid is None:
                pid = await server.launch()
            p = Proc.open(pid)
            if p is None:
                tail = await asyncio.to_thread(log_tail, server.log_file)
                raise OSError("it exited at once; its log ends:\n" + "\n".join(tail))
        except Exception as exc:  # OSError, a missing binary, an unreadable record
            new = C.start_failed(c, str(exc), now)
            self._set(new)
            delay = max(0.0, new.next_start_at - now)
            self.log.warning("%s could not start (%s); trying again in %.1fs", c.name, exc, delay)
            return
        if adopted:
            self.log.info("%s: adopted the running server (pid %d)", c.name, pid)
        self._procs[c.name] = p
        self._set(C.started(c, pid, now))
        self._watchers[c.name] = self.tasks.create_task(self._watch(c.name, p, server.log_file))
        self._probes[c.name] = self.tasks.create_task(self._probe(c.name, server, pid, adopted))

    def _terminate(self, c: C.Child, now: float, failure: str = "") -> None:
        if failure:
            self.log.warning("%s %s: stopping it", c.name, failure)
        self._set(C.stopping(c, now, failure))
        p = self._procs.get(c.name)
        if p is not None:
            p.signal(self._servers[c.name].stop_signal)

    # ------------------------------------------------------------ tasks

    async def _watch(self, name: str, p: Proc, log_file: Path) -> None:
        await p.exited()
        tail = await asyncio.to_thread(log_tail, log_file)
        self.post(Exited(name, p.pid, tail))

    async def _probe(self, name: str, server: Server, pid: int, adopted: bool) -> None:
        try:
            await server.wait_ready(pid, adopted)
        except Exception as exc:
            self.post(Answered(name, pid, f"{type(exc).__name__}: {exc}"))
        else:
            self.post(Answered(name, pid))


class Supervised:
    """One server under `servers` (added at construction)."""

    def __init__(
        self,
        servers: Servers,
        server: Server,
        backoff_max_s: float,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.servers = servers
        self.name = server.name
        servers.add(server, server_policy(backoff_max_s, server.stop_grace_s, ready_timeout_s))

    @property
    def state(self) -> ServerState:
        c = self.servers.children.get(self.name)
        return _STATES[c.state] if c is not None else "starting"

    @property
    def pid(self) -> int:
        return self.servers.pid(self.name)

    @property
    def restarts(self) -> int:
        c = self.servers.children.get(self.name)
        return c.restarts if c is not None else 0

    @property
    def last_error(self) -> str:
        c = self.servers.children.get(self.name)
        return c.last_error if c is not None else ""

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    async def wait_up(self, timeout: float) -> bool:
        """True once the server answers; False after `timeout` or when stopping."""
        return await self.servers.wait_up(self.name, timeout)

    async def stop(self) -> None:
        """Stop the server (gracefully) and return once it is gone."""
        await self.servers.remove(self.name)
