"""Heartbeats: tell every controller what this host runs; take assignments back.

Every `interval` (and early, when an instance changes state, so a release
switch does not wait a full period for "up") the runner sends a Heartbeat to
EVERY controller replica at once with a short timeout: soft state on every
replica stays fresh, and a dead replica costs one timeout, never a stall.
Replies may carry an Assignment; `fencing.pick` decides whether to converge
to it. When no controller answers, the runner keeps what it has running and
says so once in its log; whatever the next accepted assignment says then
applies at once (instances it no longer holds are stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import psutil

from roost import __version__
from roost.runner.fencing import Held, Verdict, is_newer, pick
from roost.runner.model import Record
from roost.wire.messages import (
    Assignment,
    AssignmentReady,
    Heartbeat,
    HeartbeatReply,
    InstanceStatus,
    Msg,
)

log = logging.getLogger("roost.runner")

MiB = 1024 * 1024
# Early beats (an instance changed state, a nudge) go at once while their
# budget lasts: EARLY_BURST of them, one more earned every MIN_GAP_S. A
# rollout's few changes (a new assignment, each new instance up) are each
# reported at once, where a fixed gap after every beat held the second of
# two instances up 20 ms apart for 80 ms more, and the release's promotion
# with it; a runner whose instances churn still beats at most 1/MIN_GAP_S
# times a second.
MIN_GAP_S = 0.1
EARLY_BURST = 3
# Reply timeout while no controller answers (see HeartbeatLoop.timeout).
UNREACHABLE_TIMEOUT_S = 0.5


def tree_memory_mb(roots: Iterable[int]) -> dict[int, float]:
    """Resident memory of each root process and all its descendants, in MiB."""
    return {pid: mb for pid, (mb, _) in tree_usage(roots).items()}


def tree_usage(roots: Iterable[int]) -> dict[int, tuple[float, float]]:
    """Resident memory (MiB) and CPU time used (seconds) of each root process
    and all its descendants; CPU time counts children they reaped too (a
    gunicorn worker that was replaced), so it only grows while the root lives.

    One scan of the process table serves every instance (psutil's per-process
    `children()` would rescan it for each); absent processes count as 0.
    """
    wanted = [pid for pid in roots if pid > 0]
    if not wanted:
        return {}
    rss: dict[int, int] = {}
    cpu_ms: dict[int, int] = {}
    parent: dict[int, int] = {}
    for proc in psutil.process_iter(["ppid", "memory_info", "cpu_times"]):
        mem = proc.info.get("memory_info")
        if mem is not None:  # None: vanished, or not ours to read
            rss[proc.pid] = mem.rss
            parent[proc.pid] = proc.info["ppid"]
            t = proc.info.get("cpu_times")
            if t is not None:
                used = t.user + t.system + t.children_user + t.children_system
                cpu_ms[proc.pid] = int(used * 1000)
    memory = sum_trees(wanted, rss, parent)
    cpu = sum_trees(wanted, cpu_ms, parent)
    return {pid: (round(memory[pid] / MiB, 1), cpu[pid] / 1000) for pid in wanted}


def sum_trees(
    roots: Iterable[int], rss: Mapping[int, int], parent: Mapping[int, int]
) -> dict[int, int]:
    """Per root, the sum of `rss` over the root and its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    for root in roots:
        total, stack, seen = 0, [root], set()
        while stack:
            pid = stack.pop()
            if pid not in seen:
                seen.add(pid)
                total += rss.get(pid, 0)
                stack.extend(children.get(pid, ()))
        out[root] = total
    return out


def host_addresses(bind_host: str) -> list[str]:
    """Addresses other hosts may reach this one at: the bind address first."""
    out: list[str] = []
    if bind_host and bind_host not in ("0.0.0.0", "::"):
        out.append(bind_host)
    with contextlib.suppress(OSError):
        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                ip = addr.address
                if addr.family == socket.AF_INET and not ip.startswith("127.") and ip not in out:
                    out.append(ip)
    if not out:
        out.append("127.0.0.1")
    return out


def instance_status(rec: Record, memory_mb: float, cpu_seconds: float = 0.0) -> InstanceStatus:
    a = rec.assignment
    return InstanceStatus(
        instance_id=a.instance_id,
        app=a.app,
        release=a.release,
        process_type=a.process_type,
        state=rec.state,
        pid=rec.pid,
        port=rec.port,
        unix_socket=rec.unix_socket,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds,
        restarts=rec.restarts,
        started_at=rec.started_wall,
        command=rec.command,
        last_error=rec.last_error,
        unhealthy=rec.unhealthy and rec.state in ("crashed", "backoff"),
    )


def build_heartbeat(
    *,
    host_id: str,
    hostname: str,
    addresses: list[str],
    records: Iterable[Record],
    held: Held,
    memory: Mapping[int, float],
    now: float,
    rpc_endpoint: str = "",
    rpc_key: str = "",
    cpu: Mapping[int, float] | None = None,
) -> Heartbeat:
    cpu = cpu or {}
    statuses = [
        instance_status(
            rec,
            memory.get(rec.pid, 0.0) if rec.pid else 0.0,
            cpu.get(rec.pid, 0.0) if rec.pid else 0.0,
        )
        for rec in sorted(records, key=lambda r: r.instance_id)
    ]
    return Heartbeat(
        host_id=host_id,
        hostname=hostname,
        addresses=addresses,
        memory_mb=int(psutil.virtual_memory().total // MiB),
        cpus=os.cpu_count() or 1,
        instances=statuses,
        fence=held.fence,
        version=held.version,
        sent_at=now,
        rpc_endpoint=rpc_endpoint,
        rpc_key=rpc_key,
        release=__version__,
    )


@dataclass
class EarlyBeats:
    """The budget of early beats, a token bucket. Pure: times are passed in."""

    tokens: float = EARLY_BURST
    at: float = float("-inf")  # when `tokens` was counted

    def _have(self, now: float) -> float:
        return min(float(EARLY_BURST), self.tokens + (now - self.at) / MIN_GAP_S)

    def wait_s(self, now: float) -> float:
        """How long from `now` before an early beat may go."""
        return max(0.0, (1.0 - self._have(now)) * MIN_GAP_S)

    def spend(self, now: float) -> None:
        self.tokens, self.at = self._have(now) - 1.0, now


class Caller(Protocol):
    """What the loop needs of an RpcClient."""

    async def call_all(self, msg: Msg, timeout: float = 5.0) -> list[Msg | BaseException]: ...


class HeartbeatLoop:
    def __init__(
        self,
        *,
        client: Caller,
        host_id: str,
        bind_host: str,
        interval: float,
        records: Callable[[], Iterable[Record]],
        changed: asyncio.Event,
        on_assignment: Callable[[Assignment], None],
        wall: Callable[[], float] = time.time,
        rpc_endpoint: str = "",
        rpc_key: str = "",
    ) -> None:
        self.client = client
        self.rpc_endpoint = rpc_endpoint
        self.rpc_key = rpc_key
        self.host_id = host_id
        self.held = Held()
        self.reachable: bool | None = None
        self._last_refused: tuple[int, int] | None = None
        self._hostname = socket.gethostname()
        self._addresses = host_addresses(bind_host)
        self._interval = interval
        self._records = records
        self._changed = changed
        self._on_assignment = on_assignment
        self._wall = wall

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        early = EarlyBeats()
        while True:
            began = loop.time()
            self._changed.clear()
            await self.beat()
            # Sleep out the period, waking early (but not too often) on changes.
            remaining = self._interval - (loop.time() - began)
            if remaining <= 0:
                await asyncio.sleep(MIN_GAP_S)  # a beat as long as a period: not back to back
                continue
            woken = False
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation that arrives as the event is set (a runner
            # stopping its instances sets it), and the loop never ends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
                    woken = True
            if woken:
                if wait := early.wait_s(loop.time()):
                    await asyncio.sleep(wait)
                early.spend(loop.time())

    def hint(self, msg: AssignmentReady) -> None:
        """A controller has a newer assignment than the one held: beat now
        (within the loop's budget of early beats)."""
        if is_newer(self.held, msg.fence, msg.version):
            self._changed.set()

    async def beat(self) -> None:
        records = list(self._records())
        # Reading /proc for every process is blocking I/O: keep it off the loop.
        usage = await asyncio.to_thread(tree_usage, [r.pid for r in records])
        hb = build_heartbeat(
            host_id=self.host_id,
            hostname=self._hostname,
            addresses=self._addresses,
            records=records,
            held=self.held,
            memory={pid: mb for pid, (mb, _) in usage.items()},
            cpu={pid: seconds for pid, (_, seconds) in usage.items()},
            now=self._wall(),
            rpc_endpoint=self.rpc_endpoint,
            rpc_key=self.rpc_key,
        )
        replies = await self.client.call_all(hb, timeout=self.timeout())
        answered = [r for r in replies if isinstance(r, HeartbeatReply)]
        self._note_reachability(bool(answered), replies)
        offered = [r.assignment for r in answered if r.assignment is not None]
        if not offered:
            return
        held, accepted, rejected = pick(self.held, self.host_id, offered)
        for asg, verdict in rejected:
            # A stale leader repeats itself every heartbeat: say it once.
            if (asg.fence, asg.version) == self._last_refused:
                continue
            self._last_refused = (asg.fence, asg.version)
            level = logging.DEBUG if verdict is Verdict.OLD_VERSION else logging.WARNING
            log.log(
                level,
                "refused assignment fence=%d version=%d for %s (%s; holding fence=%d version=%d)",
                asg.fence,
                asg.version,
                asg.host_id,
                verdict.value,
                self.held.fence,
                self.held.version,
            )
        if accepted is not None:
            log.info(
                "accepted assignment fence=%d version=%d: %d instances",
                accepted.fence,
                accepted.version,
                len(accepted.instances),
            )
            self.held = held
            self._on_assignment(accepted)

    def timeout(self) -> float:
        """How long a heartbeat waits for replies.

        Cut off from every controller, the runner knocks about twice a
        second instead: the beat that goes out after a partition heals is
        the one that tells it to stop instances whose work moved elsewhere
        meanwhile, and waiting out a long timeout would keep those stale
        copies alive that much longer.
        """
        timeout = min(max(self._interval, 0.5), 2.0)
        if self.reachable is False:
            timeout = min(timeout, UNREACHABLE_TIMEOUT_S)
        return timeout

    def _note_reachability(self, ok: bool, replies: list[Msg | BaseException]) -> None:
        if ok and self.reachable is not True:
            log.info("controllers reachable")
        elif not ok and self.reachable is not False:
            errors = "; ".join(str(r) for r in replies if isinstance(r, BaseException))
            log.warning("no controller answered (%s); instances keep running as they are", errors)
        self.reachable = ok
