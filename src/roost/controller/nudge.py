"""Telling runners a new assignment waits for them.

A runner learns its assignment from the reply to its heartbeat, once a
period (ROOST_HEARTBEAT_S, 1 s): on average half a period between a release
being made and its instances starting, the largest share of a code-only
push's time to live. So after a pass the lease holder sends each runner
whose assignment moved an `AssignmentReady` on its RPC endpoint, and the
runner beats at once. It is only a hint (the assignment itself still comes
in a heartbeat reply, fenced as ever); a lost one costs what it saves.

Sends never hold up a pass: each is a task of its own, at most one in
flight per host (a newer change is fetched by the beat the one in flight
causes, or the next period's). One client per runner endpoint is kept, so
a busy cluster does not pay a CURVE handshake per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterable, Mapping

from roost.controller.assign import HostAssignment
from roost.controller.softstate import HostSeen
from roost.wire.cluster import Endpoint
from roost.wire.messages import AssignmentReady
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.controller")

NUDGE_TIMEOUT_S = 1.0


def targets(
    hosts: Iterable[str],
    seen: Mapping[str, HostSeen],
    assignments: Mapping[str, HostAssignment],
    fence: int,
) -> list[tuple[str, Endpoint, AssignmentReady]]:
    """Which of the `hosts` whose assignment moved can be told so: alive,
    with an RPC endpoint. Pure."""
    out = []
    for host_id in hosts:
        s = seen.get(host_id)
        asg = assignments.get(host_id)
        if s is None or s.down_since is not None or asg is None:
            continue
        hb = s.heartbeat
        if hb.rpc_endpoint and hb.rpc_key:
            ready = AssignmentReady(fence=fence, version=asg.version)
            out.append((host_id, Endpoint(hb.rpc_endpoint, hb.rpc_key), ready))
    return out


class Nudger:
    def __init__(self) -> None:
        self._clients: dict[str, tuple[Endpoint, RpcClient]] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}

    def send(
        self,
        targets: Iterable[tuple[str, Endpoint, AssignmentReady]],
        client_for: Callable[[Endpoint], RpcClient],
    ) -> None:
        """Nudge each (host, its runner's endpoint, what waits for it)."""
        for host_id, ep, msg in targets:
            if host_id in self._inflight:
                continue
            kept = self._clients.get(host_id)
            if kept is None or kept[0] != ep:
                if kept is not None:  # the runner restarted on a new endpoint or key
                    self._closing(kept[1])
                kept = self._clients[host_id] = (ep, client_for(ep))
            task = asyncio.create_task(self._send(kept[1], msg))
            self._inflight[host_id] = task
            task.add_done_callback(functools.partial(self._done, host_id))

    def _done(self, host_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(host_id, None)

    async def _send(self, client: RpcClient, msg: AssignmentReady) -> None:
        try:
            await client.call(msg, timeout=NUDGE_TIMEOUT_S, tries=1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the heartbeat brings it all the same
            log.debug("assignment nudge not delivered: %s", exc)

    def forget(self, hosts: Iterable[str]) -> None:
        """Close the clients of hosts that are gone."""
        for host_id in hosts:
            kept = self._clients.pop(host_id, None)
            if kept is not None:
                self._closing(kept[1])

    def _closing(self, client: RpcClient) -> None:
        task = asyncio.create_task(client.close())
        task.add_done_callback(_quiet)

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        for task in list(self._inflight.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        clients, self._clients = self._clients, {}
        for _ep, client in clients.values():
            await client.close()


def _quiet(task: asyncio.Task[None]) -> None:
    """Read a finished close's outcome, so asyncio never logs it as unread."""
    if not task.cancelled():
        task.exception()
