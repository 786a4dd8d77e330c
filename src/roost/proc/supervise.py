"""Supervising long-running children: the I/O half of `roost.proc.children`.

Used by `roost up` (one child per role), the router (its worker processes)
and the servicehost (PostgreSQL, one Redis per app). The loop is
`roost.proc.arbiter`'s: `add`, `remove`, `stop` and the children's watchers
only post events; the decisions are `roost.proc.children.plan`'s.

A child's process is started by its `Program.start` (through
`roost.proc.spawn`, so it has its own process group and dies with us). Its
watcher waits for it, SIGKILLs what it left in its group, and posts the
exit with the last lines it wrote on stderr when stderr is a pipe (the
watcher relays them to `Program.output` meanwhile): so a role that exits
with a configuration error is reported with its own message.

`replace` swaps a child's process for a new one (`roost up --reload`): the
old one gets the signal asked for and the new one starts the moment it has
gone; or, with `overlap`, the new one starts at once and the old one
retires, still watched and reaped, and killed should it outlive the grace
period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from roost.proc import children as C
from roost.proc.childarbiter import Answered, ChildArbiter, Removed, StopAll
from roost.proc.exits import error_for
from roost.proc.stop import signal_group, terminate

log = logging.getLogger("roost.proc")

Process = asyncio.subprocess.Process
# After the leader exits, how long to wait for its stderr to reach EOF.
DRAIN_TIMEOUT_S = 2.0
TAIL_BYTES = 8192


def _to_stderr(data: bytes) -> None:
    sys.stderr.buffer.write(data)
    sys.stderr.buffer.flush()


@dataclass(frozen=True)
class Program:
    name: str
    start: Callable[[], Awaitable[Process]]
    # Returns once the process serves (raises if it cannot); None: up at start.
    ready: Callable[[Process], Awaitable[None]] | None = None
    policy: C.Policy = field(default_factory=C.Policy)
    stop_signal: int = signal.SIGTERM
    # Where a piped stderr goes as it arrives.
    output: Callable[[bytes], None] = _to_stderr


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Added:
    program: Program


@dataclass(frozen=True)
class Replace:
    name: str
    signal: int
    overlap: bool


@dataclass(frozen=True)
class Exited:
    name: str
    pid: int
    status: int
    tail: list[str]


Event = Added | Removed | StopAll | Replace | Exited | Answered


class Supervisor(ChildArbiter[Event]):
    """Children started, watched, restarted and stopped (see the module docstring).

    `run()` supervises until `stop()` (or a fatal exit) has stopped every
    child; `fatal` then names the child that ended it, if one did.
    """

    def __init__(
        self,
        *,
        in_order: bool = False,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
        logger: logging.Logger = log,
    ) -> None:
        # What it tells: to `say` when given (roost up's terminal), else the log.
        super().__init__(clock, say or logger.info, say or logger.warning)
        self.in_order = in_order
        self._programs: dict[str, Program] = {}
        self._procs: dict[str, Process] = {}
        # Replaced with overlap, still ending: watched, reaped, killed after the grace.
        self._retiring: dict[int, Process] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------ inputs

    def add(self, program: Program) -> None:
        self.post(Added(program))

    def _queued(self, name: str) -> bool:
        return any(isinstance(e, Added) and e.program.name == name for e in self._events)

    def _over(self) -> bool:
        # Stopped children are then kept (for `fatal`), not forgotten.
        return self._stopping or self.fatal is not None

    def stop(self) -> None:
        """Stop every child; `run()` returns once they are all gone."""
        self.post(StopAll())

    async def replace(
        self, name: str, sig: int, timeout: float, overlap: bool = False
    ) -> tuple[int, int]:
        """Replace the child's process by a new one (see the module docstring)
        and return (old pid, new pid) once the new one is up; the new pid is
        0 when it did not come up within `timeout` (or everything stops)."""
        old = self.pid(name)
        self.post(Replace(name, sig, overlap))
        try:
            async with asyncio.timeout(timeout):
                while not self._replaced(name, old):
                    await self._change()
        except TimeoutError:
            pass
        c = self.children.get(name)
        up = c is not None and c.state == "up" and c.pid != old
        return old, c.pid if up and c is not None else 0

    def _replaced(self, name: str, old: int) -> bool:
        if self._stopping or self.fatal is not None:
            return True
        c = self.children.get(name)
        return c is None or (c.state == "up" and c.pid not in (0, old))

    # ------------------------------------------------------------ queries

    @property
    def fatal(self) -> C.Child | None:
        return C.fatal(self.children)

    @property
    def stopping(self) -> bool:
        """Everything is being stopped (asked to, or after a fatal exit)."""
        return self._stopping or self.fatal is not None

    def pids(self) -> set[int]:
        """The children's live pids (those retiring too)."""
        procs = [*self._procs.values(), *self._retiring.values()]
        return {p.pid for p in procs if p.returncode is None}

    def pid(self, name: str) -> int:
        p = self._procs.get(name)
        return p.pid if p is not None and p.returncode is None else 0

    async def run(self) -> None:
        try:
            await super().run()
        except BaseException:
            # Cancelled (or a bug): the children must not outlive their
            # supervisor. The watchers are gone, so stop them here.
            await asyncio.shield(self._stop_now())
            raise

    async def run_until(self, stop: asyncio.Event) -> None:
        """A daemon's supervision: until `stop` is set (then every child is
        stopped) or a fatal exit ends it, which is raised as the error that
        passes the child's status and last words on (`exits.error_for`)."""
        async with asyncio.TaskGroup() as tg:
            supervising = tg.create_task(self.run())
            stopping = tg.create_task(stop.wait())
            await asyncio.wait([supervising, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            self.stop()
        fatal = self.fatal
        if fatal is not None:
            last = (fatal.last_error.splitlines() or ["exited"])[-1]
            raise error_for(fatal.status, f"{fatal.name} {last}")

    async def _stop_now(self) -> None:
        procs = [(n, p) for n, p in self._procs.items() if p.returncode is None]
        await asyncio.gather(
            *(
                terminate(p, self.children[n].policy.stop_grace_s, self._programs[n].stop_signal)
                for n, p in procs
            ),
            *(terminate(p, 0.0, signal.SIGKILL) for p in self._retiring.values()),
        )
        for name, _ in procs:
            self._set(dataclasses.replace(self.children[name], state="stopped", pid=0))
        self._procs.clear()

    # ------------------------------------------------------------ the policy

    def finished(self) -> bool:
        over = self._stopping or self.fatal is not None
        ended = not any(c.has_process for c in self.children.values()) and not self._retiring
        return over and not self._events and ended

    def apply(self, event: Event, now: float) -> None:
        if isinstance(event, Added):
            name = event.program.name
            if name in self.children:
                raise ValueError(f"{name} is supervised already")
            self._programs[name] = event.program
            self._order += 1
            probed = event.program.ready is not None
            self._set(C.Child(name, self._order, event.program.policy, probed=probed))
        elif self._apply_shared(event, now):
            pass
        elif isinstance(event, StopAll):
            if not self._stopping:
                self._info("stopping")
            self._stopping = True
            for c in self.children.values():
                if c.restart:  # a replacement cut short: it ends stopped
                    self._set(dataclasses.replace(c, restart=False))
            for proc in self._retiring.values():
                signal_group(proc.pid, signal.SIGTERM)
            self._notify()
        elif isinstance(event, Replace):
            self._replace(event, now)
        elif isinstance(event, Exited):
            self._on_exit(event, now)

    def _on_exit(self, event: Exited, now: float) -> None:
        if self._retiring.pop(event.pid, None) is not None:
            self._notify()
            return  # replaced already: its successor runs under the name
        self._procs.pop(event.name, None)
        probe = self._probes.pop(event.name, None)
        if probe is not None:
            probe.cancel()
        c = self.children.get(event.name)
        if c is None:
            return
        new = C.exited(c, event.pid, event.status, event.tail, now)
        self._set(new)
        if new.state == "failed":
            self._warn(f"{c.name} {new.last_error.splitlines()[0]}: not restarting it; stopping")
        elif new.state == "backoff" and not self._stopping:
            first = new.last_error.splitlines()[0]
            delay = max(0.0, new.next_start_at - now)
            self._warn(f"{c.name} {first}; restarting in {delay:.1f}s")

    def plan(self, now: float) -> list[C.Action]:
        return C.plan(self.children, now, self._stopping, self.in_order)

    def _kill(self, c: C.Child) -> None:
        signal_group(c.pid, signal.SIGKILL)

    def _forget(self, name: str) -> None:
        del self._programs[name]

    def closing(self) -> None:
        for probe in self._probes.values():
            probe.cancel()

    # ------------------------------------------------------------ actions

    async def _start(self, c: C.Child, now: float) -> None:
        program = self._programs[c.name]
        try:
            proc = await program.start()
        except Exception as exc:  # OSError, a missing binary, a bad config file
            new = C.start_failed(c, str(exc), now)
            self._set(new)
            delay = max(0.0, new.next_start_at - now)
            self._warn(f"{c.name} could not start ({exc}); trying again in {delay:.1f}s")
            return
        self._procs[c.name] = proc
        self._set(C.started(c, proc.pid, now))
        self.tasks.create_task(self._watch(c.name, proc, program.output))
        if program.ready is not None:
            self._probes[c.name] = self.tasks.create_task(self._probe(c.name, proc, program.ready))

    def _replace(self, event: Replace, now: float) -> None:
        c = self.children.get(event.name)
        if c is None or self._stopping or self.fatal is not None or not c.wanted:
            return
        if not c.has_process or c.state == "stopping":
            # Not running (a backoff), or going already: its start comes now.
            if c.state == "backoff":
                self._set(dataclasses.replace(c, next_start_at=now))
            elif c.state == "stopping":
                self._set(dataclasses.replace(c, restart=True))
            return
        self._info(f"replacing {c.name} (pid {c.pid})")
        probe = self._probes.pop(c.name, None)
        if probe is not None:
            probe.cancel()
        if event.overlap:
            proc = self._procs.pop(c.name)
            self._retiring[proc.pid] = proc
            signal_group(proc.pid, event.signal)
            self.tasks.create_task(self._retire(proc, c.policy.stop_grace_s))
            self._set(C.replaced(c))
        else:
            self._set(C.replacing(c, now))
            signal_group(c.pid, event.signal)

    def _terminate(self, c: C.Child, now: float, failure: str = "") -> None:
        if failure:
            self._warn(f"{c.name} {failure}: stopping it")
        self._set(C.stopping(c, now, failure))
        signal_group(c.pid, self._programs[c.name].stop_signal)

    # ------------------------------------------------------------ tasks

    async def _watch(self, name: str, proc: Process, output: Callable[[bytes], None]) -> None:
        tail = bytearray()
        pump = None
        if proc.stderr is not None:
            pump = asyncio.create_task(_relay(proc.stderr, output, tail))
        try:
            status = await proc.wait()
            # Whatever it left in its group goes with it.
            signal_group(proc.pid, signal.SIGKILL)
            if pump is not None:
                await asyncio.wait([pump], timeout=DRAIN_TIMEOUT_S)
        finally:
            if pump is not None:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
        lines = tail.decode(errors="replace").splitlines()
        self.post(Exited(name, proc.pid, status, lines))

    async def _retire(self, proc: Process, grace: float) -> None:
        """A replaced process still running after `grace` is killed (its
        watcher reaps it and posts its exit)."""
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            self._warn(
                f"pid {proc.pid} did not end within {grace:g}s of its replacement: killing it"
            )
            signal_group(proc.pid, signal.SIGKILL)

    async def _probe(
        self, name: str, proc: Process, ready: Callable[[Process], Awaitable[None]]
    ) -> None:
        try:
            await ready(proc)
        except Exception as exc:
            self.post(Answered(name, proc.pid, f"{type(exc).__name__}: {exc}"))
        else:
            self.post(Answered(name, proc.pid))


async def _relay(
    stream: asyncio.StreamReader, output: Callable[[bytes], None], tail: bytearray
) -> None:
    """Pass a child's stderr on as it comes, keeping its last TAIL_BYTES."""
    while chunk := await stream.read(64 * 1024):
        output(chunk)
        tail += chunk
        del tail[:-TAIL_BYTES]
