"""Each router worker's request counters, sent to every controller for the
dashboard's charts (roost.controller.history keeps the series).

Counters go cumulative, every REPORT_EVERY_S: a report lost to a busy or
absent controller loses nothing, the next one carries the same totals. The
request path is untouched: a report reads the counts as they stand (a dict
copied between two requests, on the worker's own loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from roost.router.stats import BUCKETS, CLASSES, RequestCounts
from roost.wire.cluster import ClusterConfig
from roost.wire.messages import RouterStats
from roost.wire.node import Node
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.router")

REPORT_EVERY_S = 5.0
REPORT_TIMEOUT_S = 2.0
REPORTED_CLASSES = 5  # 1xx .. 5xx: what RouterStats carries


def router_stats(source: str, started: float, counts: RequestCounts) -> RouterStats:
    """The counts as one message: per app, requests by status class and the
    latency histogram (requests with no app, unknown hosts, are left out)."""
    requests: dict[str, list[int]] = {}
    latency: dict[str, list[int]] = {}
    for app, row in list(counts.apps.items()):
        if app:
            name = app.decode("latin-1")
            n = row.values()
            requests[name] = n[1 : 1 + REPORTED_CLASSES]
            latency[name] = n[CLASSES : CLASSES + len(BUCKETS)]
    return RouterStats(source=source, started=started, requests=requests, latency=latency)


class StatsReporter:
    def __init__(
        self,
        node: Node,
        cluster: ClusterConfig,
        counts: RequestCounts,
        every: float = REPORT_EVERY_S,
    ) -> None:
        self.counts = counts
        self.every = every
        # One worker process: its counters begin with it.
        self.source = f"{socket.gethostname()}/{os.getpid()}"
        self.started = time.time()
        controllers = cluster.of("controller")
        self._rpc = RpcClient(node, controllers) if controllers else None

    async def run(self) -> None:
        if self._rpc is None:
            return
        try:
            while True:
                await asyncio.sleep(self.every)
                msg = router_stats(self.source, self.started, self.counts)
                # One result per controller, errors included (call_all gathers
                # them): a silent controller gets the same totals next time.
                for result in await self._rpc.call_all(msg, timeout=REPORT_TIMEOUT_S):
                    if isinstance(result, BaseException) and not isinstance(result, TimeoutError):
                        log.debug("request counters not taken: %s", result)
        finally:
            await self._rpc.close()
