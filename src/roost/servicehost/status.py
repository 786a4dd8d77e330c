"""What the servicehost reports: each server's state and disk use, pushed to
the controllers every few seconds (and answered to ServiceHostStatusRequest).

The controllers may not accept the push yet (or be down): a failed push is
logged once when it starts failing and once when it recovers, never per try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from roost import aio
from roost.datadir import quota, weedquota
from roost.datadir.shared import root_for
from roost.servicehost import metrics, pgadmin, retirement
from roost.servicehost.disk import tree_size, usage
from roost.wire.messages import DataUse, KeptCopy, RetiredHosts, ServerStatus, ServiceHostStatus
from roost.wire.rpc import RpcClient

if TYPE_CHECKING:
    from roost.servicehost.host import ServiceHost
    from roost.servicehost.redis import RedisServer

log = logging.getLogger("roost.servicehost")

PUSH_INTERVAL_S = 5.0
PUSH_TIMEOUT_S = 3.0
SIZE_QUERY_TIMEOUT_S = 3.0


async def _redis_memory(server: RedisServer, up: bool) -> tuple[int, int, str]:
    """(maxmemory, used, policy) of a Redis that is up; zeros when unknown."""
    if up:
        with contextlib.suppress(Exception):
            return await aio.wait_for(server.memory(), SIZE_QUERY_TIMEOUT_S)
    return 0, 0, ""


async def collect(host: ServiceHost, sender: str = "") -> ServiceHostStatus:
    servers: list[ServerStatus] = []
    pg_sup = host.pg_sup
    if pg_sup is not None and host.pg is not None:
        port = host.pg.cluster.port
        sizes: dict[str, int] = {}
        roles: dict[str, tuple[int, int]] = {}
        if pg_sup.is_up:
            with contextlib.suppress(Exception):
                sizes = await aio.wait_for(pgadmin.database_sizes(host.pg), SIZE_QUERY_TIMEOUT_S)
            with contextlib.suppress(Exception):
                roles = await aio.wait_for(pgadmin.role_connections(host.pg), SIZE_QUERY_TIMEOUT_S)
        servers.append(
            ServerStatus(
                app="", kind="postgres", state=pg_sup.state, port=port, pid=pg_sup.pid,
                disk_bytes=await asyncio.to_thread(tree_size, host.layout.postgres),
                restarts=pg_sup.restarts, last_error=pg_sup.last_error,
            )
        )  # fmt: skip
        for svc in host.state.of_kind("postgres"):
            limit, sessions = roles.get(svc.username, (0, 0))
            servers.append(
                ServerStatus(
                    app=svc.app, kind="postgres", state=pg_sup.state, port=port,
                    pid=pg_sup.pid, disk_bytes=sizes.get(svc.database, 0),
                    connection_limit=limit, connections=sessions,
                )
            )  # fmt: skip
    redis = sorted(host.redis.items())
    memory = await asyncio.gather(*(_redis_memory(srv, sup.is_up) for _, (srv, sup) in redis))
    for (app, (server, sup)), (maxmemory, used, policy) in zip(redis, memory, strict=True):
        pair = host.pairs.health.get(app) if host.pairs is not None else None
        servers.append(
            ServerStatus(
                app=app, kind="redis", state=sup.state, port=server.svc.port, pid=sup.pid,
                disk_bytes=await asyncio.to_thread(tree_size, server.dir),
                restarts=sup.restarts, last_error=sup.last_error,
                memory_limit_bytes=maxmemory, memory_used_bytes=used, eviction_policy=policy,
                snapshot_problem=server.snapshot_problem,
                redis_role=pair.role if pair else "", redis_peer=pair.peer if pair else "",
                redis_lag_bytes=pair.lag_bytes if pair else 0,
                redis_problem=pair.problem if pair else "",
            )
        )  # fmt: skip
    free, total = usage(host.layout.root)
    kept = [
        KeptCopy(app=r.app, kind=r.kind, name=r.kept, kept_at=r.at)
        for r in sorted(host.state.restores.values(), key=lambda r: r.at)
        if r.step == "swapped" and r.kept
    ]
    data = await asyncio.to_thread(
        data_use,
        root_for(host.layout.data_dir, host.settings.appdata_root),
        host.layout.data_dir,
    )
    return ServiceHostStatus(
        servers=servers, disk_free_bytes=free, disk_total_bytes=total,
        host=sender, sent_at=time.time(), kept=kept, host_id=host.host_id, data=data,
    )  # fmt: skip


def data_use(root: Path, data_dir: Path | None = None) -> list[DataUse]:
    """Each app's data directory with a quota: what it stores, what it may."""
    out = []
    for app in quota.mounted_apps(root):
        with contextlib.suppress(OSError):
            u = quota.usage(root / app)
            out.append(DataUse(app=app, used_bytes=u.used_bytes, quota_bytes=u.quota_bytes))
    # A cluster's shared tree: each app's own mount (roost.datadir.weedquota).
    with contextlib.suppress(OSError):
        for app, w in weedquota.usage(data_dir, root) if data_dir is not None else []:
            out.append(DataUse(app=app, used_bytes=w.used_bytes, quota_bytes=w.quota_bytes))
    return out


async def push_loop(host: ServiceHost, controllers: RpcClient, sender: str) -> None:
    """Send the status to every controller every PUSH_INTERVAL_S, forever."""
    failing = False
    while True:
        try:
            status = await collect(host, sender)
            metrics.record(status)
            results = await controllers.call_all(status, timeout=PUSH_TIMEOUT_S)
            errors = [r for r in results if isinstance(r, BaseException)]
            # Servicehosts replaced for good, perhaps this one (retirement.py).
            for r in results:
                if isinstance(r, RetiredHosts):
                    await retirement.told(host, r)
        except Exception as exc:  # a failed report must never take the servers down
            if not failing:
                log.warning("status report failed: %s", exc, exc_info=True)
            errors = [exc]
        if errors and not failing:
            log.info("status push not accepted (%s); will keep trying quietly", errors[0])
        elif not errors and failing:
            log.info("status push accepted again")
        failing = bool(errors)
        await asyncio.sleep(PUSH_INTERVAL_S)
