"""Room on disk for the Redis servers' own snapshots (the full-disk story).

Theory of operation: a Redis server writes a snapshot of everything it
holds (BGSAVE from its `save` points, or an AOF rewrite) beside the old one,
and only then replaces it: with the disk full the write fails half-way,
and, worse, it may fill the disk every other server and PostgreSQL write to.
maxmemory bounds what one server holds; this bounds when it may write it.

Every CHECK_S the guard compares, per file system, the free space with what
the servers on it would write: a snapshot is at most about the memory the
server uses (an RDB is more compact than memory). Servers are given room
smallest first (so most of them keep their snapshots), each taking its size
from what is left after a fixed reserve; a server that does not fit gets its
snapshots turned off (`save ""`, no AOF rewrite) with a log line and a
reason in the status the controllers show, and back on once it fits with a
margin (so it does not flap at the edge). Its AOF still records every
write; backupd's pulls are diskless and need no room here. `plan` decides
(pure); `guard_loop` measures and applies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from roost import aio

if TYPE_CHECKING:
    from roost.servicehost.host import ServiceHost
    from roost.servicehost.redis import RedisServer

log = logging.getLogger("roost.servicehost")

CHECK_S = 10.0
RESERVE_BYTES = 64 * 2**20  # never planned into: logs, PostgreSQL's next WAL segments
RESUME_MARGIN = 1.25  # a server whose snapshots are off needs this much more to resume
QUERY_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Room:
    """One Redis server as the guard sees it."""

    app: str
    used_bytes: int  # memory in use: about the most a snapshot writes
    device: int  # the file system its directory is on
    free_bytes: int  # free on that file system
    off: bool  # its snapshots are off now


def _size(n: float) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def plan(rooms: Sequence[Room], reserve: int = RESERVE_BYTES) -> dict[str, str]:
    """app -> why its snapshots must be off now ("": they may run)."""
    out: dict[str, str] = {}
    by_device: defaultdict[int, list[Room]] = defaultdict(list)
    for r in rooms:
        by_device[r.device].append(r)
    for group in by_device.values():
        free = min(r.free_bytes for r in group)
        left = free - reserve
        for r in sorted(group, key=lambda r: (r.used_bytes, r.app)):
            need = r.used_bytes * (RESUME_MARGIN if r.off else 1.0)
            if need <= left:
                out[r.app] = ""
                left -= r.used_bytes
            else:
                out[r.app] = (
                    f"snapshots off: a snapshot of {_size(r.used_bytes)} would not fit in the "
                    f"{_size(free)} free on the disk (with {_size(reserve)} kept free and room "
                    "for the other servers' first); they resume when there is room"
                )
    return out


async def check(servers: Mapping[str, RedisServer], reserve: int = RESERVE_BYTES) -> dict[str, str]:
    """Measure these Redis servers (those up), and turn their snapshots off
    or on as `plan` says; its verdicts."""
    rooms: list[Room] = []
    for app, server in servers.items():
        try:
            _, used, _ = await aio.wait_for(server.memory(), QUERY_TIMEOUT_S)
            device = os.stat(server.dir).st_dev
            free = shutil.disk_usage(server.dir).free
        except Exception as exc:  # a server restarting meanwhile: next time
            log.debug("snapshot room of %s unknown: %s", app, exc)
            continue
        rooms.append(Room(app, used, device, free, bool(server.snapshot_problem)))
    verdicts = plan(rooms, reserve)
    for app, problem in verdicts.items():
        server = servers[app]
        if bool(problem) == bool(server.snapshot_problem):
            server.snapshot_problem = problem  # (the figures in the reason move)
            continue
        await server.set_snapshots(problem)
        if problem:
            log.warning("redis of %s: %s", app, problem)
        else:
            log.info("redis of %s: snapshots on again (there is room on the disk)", app)
    return verdicts


async def guard_loop(host: ServiceHost) -> None:
    """`check` the host's Redis servers every CHECK_S, until cancelled; a
    failed check is logged (once until one succeeds) and never stops it."""
    failing = False
    while True:
        try:
            await check({app: srv for app, (srv, sup) in host.redis.items() if sup.is_up})
        except Exception as exc:
            if not failing:
                log.warning("could not check the Redis servers' snapshot room: %s", exc)
            failing = True
        else:
            failing = False
        await asyncio.sleep(CHECK_S)
