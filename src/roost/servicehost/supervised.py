"""The servicehost's servers (PostgreSQL, one Redis per app) under the
process toolkit's supervisor (`roost.proc.supervise`).

One `Supervisor` owns every server the host runs: it starts each, waits
until it answers (`wait_ready`), restarts one that exits with the shared
backoff (`roost.proc.backoff`), kills one that hangs on start, and stops
them all (each with its own stop signal, a grace period, then SIGKILL) when
the host shuts down, or when its owning task is cancelled; each server also
dies with the servicehost (PR_SET_PDEATHSIG). A `Supervised` is one
server's view of it: its state, pid and restarts for the status push, a
wait until it is up, and its removal.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from roost.proc.backoff import Backoff
from roost.proc.children import Policy
from roost.proc.supervise import Program, Supervisor
from roost.wire.messages import ServerState

READY_TIMEOUT_S = 60.0
# A server that stayed up this long is forgiven its earlier crashes.
STABLE_S = 30.0

# A supervised child's state as a server status says it (a server never
# "fails" for good: no exit status of PostgreSQL or Redis is fatal).
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

    async def spawn(self) -> asyncio.subprocess.Process: ...

    async def wait_ready(self, proc: asyncio.subprocess.Process) -> None: ...


def server_policy(
    backoff_max_s: float, stop_grace_s: float, ready_timeout_s: float = READY_TIMEOUT_S
) -> Policy:
    return Policy(
        backoff=Backoff(base_s=0.5, max_s=backoff_max_s, reset_after_s=STABLE_S),
        ready_timeout_s=ready_timeout_s,
        stop_grace_s=stop_grace_s,
        fatal=frozenset(),
    )


class Supervised:
    """One server under `sup` (added at construction)."""

    def __init__(
        self,
        sup: Supervisor,
        server: Server,
        backoff_max_s: float,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.sup = sup
        self.name = server.name
        sup.add(
            Program(
                server.name,
                server.spawn,
                ready=server.wait_ready,
                policy=server_policy(backoff_max_s, server.stop_grace_s, ready_timeout_s),
                stop_signal=server.stop_signal,
            )
        )

    @property
    def state(self) -> ServerState:
        c = self.sup.children.get(self.name)
        return _STATES[c.state] if c is not None else "starting"

    @property
    def pid(self) -> int:
        return self.sup.pid(self.name)

    @property
    def restarts(self) -> int:
        c = self.sup.children.get(self.name)
        return c.restarts if c is not None else 0

    @property
    def last_error(self) -> str:
        c = self.sup.children.get(self.name)
        return c.last_error if c is not None else ""

    @property
    def is_up(self) -> bool:
        return self.state == "up"

    async def wait_up(self, timeout: float) -> bool:
        """True once the server answers; False after `timeout` or when stopping."""
        return await self.sup.wait_up(self.name, timeout)

    async def stop(self) -> None:
        """Stop the server (gracefully) and return once it is gone."""
        await self.sup.remove(self.name)
