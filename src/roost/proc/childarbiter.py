"""What every supervisor of named children shares, whatever a child is.

`roost.proc.supervise.Supervisor` (children it spawns: roost up's roles, the
router's workers, Barman's receivers) and the servicehost's `Servers`
(servers it adopts or launches detached) differ in how a process is
started, signalled and watched; the records (`roost.proc.children`), the
waits on them and the dispatch of the planner's actions are one piece,
here. A subclass gives the hooks: `_queued` (an Added event for the name is
still in the queue), `_over` (everything is ending), `_start`, `_terminate`,
`_kill`, `_forget`, and `_info`/`_warn` for what it tells.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from roost.proc import children as C
from roost.proc.arbiter import Arbiter

# ------------------------------------------------------------------ shared events


@dataclass(frozen=True)
class Removed:
    name: str


@dataclass(frozen=True)
class StopAll:
    pass


@dataclass(frozen=True)
class Answered:
    name: str
    pid: int
    error: str = ""  # the probe failed: stop the child, a failed start


E = TypeVar("E")


class ChildArbiter(Arbiter[E, C.Action]):
    def __init__(
        self, clock: Callable[[], float], info: Callable[[str], None], warn: Callable[[str], None]
    ) -> None:
        super().__init__(clock)
        self.children: dict[str, C.Child] = {}
        self._order = 0
        self._stopping = False
        self._info = info
        self._warn = warn
        # Replaced on every change: waiters take the current one, then await it.
        self._changed = asyncio.Event()

    # ------------------------------------------------------------ hooks

    def _queued(self, name: str) -> bool:
        raise NotImplementedError

    def _over(self) -> bool:
        """Everything is ending: nothing more will come up."""
        return self._stopping

    async def _start(self, c: C.Child, now: float) -> None:
        raise NotImplementedError

    def _terminate(self, c: C.Child, now: float, failure: str = "") -> None:
        raise NotImplementedError

    def _kill(self, c: C.Child) -> None:
        raise NotImplementedError

    def _forget(self, name: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ inputs and queries

    async def remove(self, name: str) -> None:
        """Stop the child (gracefully) and return once it is forgotten."""
        self.post(Removed(name))  # type: ignore[arg-type]  # every E includes Removed
        while self._present(name):
            await self._change()

    def _present(self, name: str) -> bool:
        if self._queued(name):
            return True
        c = self.children.get(name)
        if c is None:
            return False
        # Ending everything: stopped children are kept, not forgotten.
        over = self._over() or not self.running
        return not (over and not c.has_process)

    async def wait_up(self, name: str, timeout: float) -> bool:
        """True once the child is up; False after `timeout`, or when ending."""
        try:
            async with asyncio.timeout(timeout):
                while not (self._over() or self._is_up(name)):
                    await self._change()
        except TimeoutError:
            pass
        return self._is_up(name)

    def _is_up(self, name: str) -> bool:
        c = self.children.get(name)
        return c is not None and c.state == "up"

    async def _change(self) -> None:
        await self._changed.wait()

    # ------------------------------------------------------------ the policy

    def _apply_shared(self, event: object, now: float) -> bool:
        """Apply a Removed or an Answered; False for any other event."""
        if isinstance(event, Removed):
            c = self.children.get(event.name)
            if c is not None:
                self._set(dataclasses.replace(c, wanted=False))
            return True
        if isinstance(event, Answered):
            c = self.children.get(event.name)
            if c is None or c.pid != event.pid or c.state != "starting":
                return True
            if event.error:
                self._terminate(c, now, f"not ready: {event.error}")
            else:
                self._set(C.ready(c, event.pid, now))
                self._info(f"{c.name} is up (pid {c.pid})")
            return True
        return False

    def next_deadline(self) -> float | None:
        return C.next_deadline(self.children)

    async def do(self, action: C.Action, now: float) -> None:
        c = self.children.get(action.name)
        if c is None:
            return
        if isinstance(action, C.Start):
            await self._start(c, now)
        elif isinstance(action, C.Terminate):
            self._terminate(c, now, action.failure)
        elif isinstance(action, C.Kill):
            self._warn(f"{c.name} did not stop within {c.policy.stop_grace_s:g}s: killing it")
            self._set(C.killed(c))
            self._kill(c)
        elif isinstance(action, C.Forget):
            del self.children[c.name]
            self._forget(c.name)
            self._notify()

    def _set(self, c: C.Child) -> None:
        self.children[c.name] = c
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
