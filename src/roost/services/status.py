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
from typing import TYPE_CHECKING

from roost import aio
from roost.services import metrics, pgadmin
from roost.services.disk import tree_size, usage
from roost.wire.messages import ServerStatus, ServiceHostStatus
from roost.wire.rpc import RpcClient

if TYPE_CHECKING:
    from roost.services.host import ServiceHost

log = logging.getLogger("roost.services")

PUSH_INTERVAL_S = 5.0
PUSH_TIMEOUT_S = 3.0
SIZE_QUERY_TIMEOUT_S = 3.0


async def collect(host: ServiceHost, sender: str = "") -> ServiceHostStatus:
    servers: list[ServerStatus] = []
    pg_sup = host.pg_sup
    if pg_sup is not None and host.pg is not None:
        port = host.pg.cluster.port
        sizes: dict[str, int] = {}
        if pg_sup.is_up:
            with contextlib.suppress(Exception):
                sizes = await aio.wait_for(pgadmin.database_sizes(host.pg), SIZE_QUERY_TIMEOUT_S)
        servers.append(
            ServerStatus(
                app="", kind="postgres", state=pg_sup.state, port=port, pid=pg_sup.pid,
                disk_bytes=await asyncio.to_thread(tree_size, host.layout.postgres),
                restarts=pg_sup.restarts, last_error=pg_sup.last_error,
            )
        )  # fmt: skip
        for svc in host.state.of_kind("postgres"):
            servers.append(
                ServerStatus(
                    app=svc.app, kind="postgres", state=pg_sup.state, port=port,
                    pid=pg_sup.pid, disk_bytes=sizes.get(svc.database, 0),
                )
            )  # fmt: skip
    for app, (server, sup) in sorted(host.redis.items()):
        servers.append(
            ServerStatus(
                app=app, kind="redis", state=sup.state, port=server.svc.port, pid=sup.pid,
                disk_bytes=await asyncio.to_thread(tree_size, server.dir),
                restarts=sup.restarts, last_error=sup.last_error,
            )
        )  # fmt: skip
    free, total = usage(host.layout.root)
    return ServiceHostStatus(
        servers=servers, disk_free_bytes=free, disk_total_bytes=total,
        host=sender, sent_at=time.time(),
    )  # fmt: skip


async def push_loop(host: ServiceHost, controllers: RpcClient, sender: str) -> None:
    """Send the status to every controller every PUSH_INTERVAL_S, forever."""
    failing = False
    while True:
        try:
            status = await collect(host, sender)
            metrics.record(status)
            results = await controllers.call_all(status, timeout=PUSH_TIMEOUT_S)
            errors = [r for r in results if isinstance(r, BaseException)]
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
