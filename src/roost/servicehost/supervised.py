"""One supervised server process (PostgreSQL, or one app's Redis).

Theory of operation: `run()` is the only owner of the process. It loops:
spawn, wait until the server answers (or exits, or stop is asked), then wait
for it to exit (or stop). An exit nobody asked for is a crash: the state
becomes "backoff" for the delay `Backoff` computes, then the server is
started again. `stop()` asks the loop to stop the server gracefully (the
server's own `stop`) and returns when it has; if the owning task is cancelled
instead, the process is still stopped before the task ends, so a server never
outlives its supervisor (and each child also has PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from roost import aio
from roost.servicehost.backoff import Backoff, RestartPolicy
from roost.wire.messages import ServerState

log = logging.getLogger("roost.servicehost")


class Server(Protocol):
    name: str

    async def spawn(self) -> asyncio.subprocess.Process: ...

    async def wait_ready(self, proc: asyncio.subprocess.Process) -> None: ...

    async def stop(self, proc: asyncio.subprocess.Process) -> None: ...


async def _first(*aws: Awaitable[object]) -> int:
    """Index of the first awaitable to finish; the others are cancelled and reaped."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(i for i, t in enumerate(tasks) if t in done)
    exc = None if tasks[first].cancelled() else tasks[first].exception()
    if exc is not None:
        raise exc
    return first


class Supervised:
    def __init__(
        self,
        server: Server,
        policy: RestartPolicy,
        ready_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.state: ServerState = "stopped"
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.last_error = ""
        self._backoff = Backoff(policy)
        self._ready_timeout_s = ready_timeout_s
        self._clock = clock
        self._stop = asyncio.Event()
        self._up = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def pid(self) -> int:
        p = self.proc
        return p.pid if p is not None and p.returncode is None else 0

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    async def wait_up(self, timeout: float) -> bool:
        """True once the server answers; False after `timeout` or when stopping."""
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(_first(self._up.wait(), self._stop.wait()), timeout)
        return self.is_up

    async def stop(self) -> None:
        """Stop the server (gracefully) and return once `run()` has finished."""
        self._stop.set()
        await self._done.wait()

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                started = self._clock()
                await self._run_once()
                if self._stop.is_set():
                    break
                delay = self._backoff.after_exit(started, self._clock())
                self.restarts += 1
                self.state = "backoff"
                log.warning("%s: %s; restarting in %.1fs", self.server.name, self.last_error, delay)
                with contextlib.suppress(TimeoutError):
                    await aio.wait_for(self._stop.wait(), delay)
        finally:
            self._up.clear()
            proc = self.proc
            if proc is not None and proc.returncode is None:
                self.state = "stopping"
                await self.server.stop(proc)
            self.state = "stopped"
            self._done.set()

    async def _run_once(self) -> None:
        self.state = "starting"
        try:
            proc = self.proc = await self.server.spawn()
        except Exception as exc:
            self.last_error = f"could not start: {exc}"
            return
        try:
            which = await aio.wait_for(
                _first(self.server.wait_ready(proc), proc.wait(), self._stop.wait()),
                self._ready_timeout_s,
            )
        except TimeoutError:
            self.last_error = f"did not answer within {self._ready_timeout_s:.0f}s"
            await self.server.stop(proc)
            return
        except Exception as exc:
            self.last_error = f"not ready: {exc}"
            await self.server.stop(proc)
            return
        if which == 0:
            self.state = "up"
            self._up.set()
            log.info("%s: up (pid %d)", self.server.name, proc.pid)
            which = 1 if await _first(proc.wait(), self._stop.wait()) == 0 else 2
            self._up.clear()
        if which == 1:
            self.last_error = f"exited with status {proc.returncode}"
        # which == 2: stop was asked; `run` stops the server.
