"""Receiving the route table from the controllers (the I/O around `RouteTracker`).

Two tasks: one reads publications on topic "routes" from every controller's
PUB socket and feeds them to the tracker; the other asks any controller for a
snapshot whenever the tracker wants one, retrying with capped, jittered
backoff, and every `refresh_s` anyway: deltas published while a subscriber was
reconnecting leave no gap until the next one, so a quiet table is re-checked
(a snapshot at our own version changes nothing). When every controller is
unreachable nothing changes: the router keeps serving the last table it had.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from roost import aio
from roost.proc.backoff import Backoff, Retry
from roost.router.table import RouteTable
from roost.router.tracker import RouteTracker
from roost.wire.cluster import ClusterConfig
from roost.wire.messages import RouteSnapshot, RouteSnapshotRequest
from roost.wire.node import Node
from roost.wire.pubsub import Subscriber
from roost.wire.rpc import RemoteError, RpcClient, RpcTimeout

log = logging.getLogger("roost.router.feed")

OnTable = Callable[[RouteTable], None]


class RouteFeed:
    def __init__(
        self,
        node: Node,
        cluster: ClusterConfig,
        tracker: RouteTracker,
        on_table: OnTable,
        *,
        snapshot_timeout: float = 5.0,
        backoff_max: float = 5.0,
        refresh_s: float = 15.0,
    ) -> None:
        self.tracker = tracker
        self.on_table = on_table
        self.snapshot_timeout = snapshot_timeout
        self.backoff_max = backoff_max
        self.refresh_s = refresh_s
        pubs = cluster.of("controller-pub")
        ctrls = cluster.of("controller")
        self._sub = Subscriber(node, pubs, ["routes"]) if pubs else None
        self._rpc = RpcClient(node, ctrls) if ctrls else None
        self._wake = asyncio.Event()
        self.snapshots = 0  # applied snapshot replies, for tests and stats
        if self._sub is None:
            log.warning("no controller-pub endpoint: route changes will not be received")
        if self._rpc is None:
            log.warning("no controller endpoint: route snapshots cannot be requested")

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                if self._sub is not None:
                    tg.create_task(self._listen())
                if self._rpc is not None:
                    tg.create_task(self._resync())
        finally:
            if self._sub is not None:
                self._sub.close()
            if self._rpc is not None:
                await self._rpc.close()

    def _publish(self) -> None:
        self.on_table(self.tracker.table)

    async def _listen(self) -> None:
        assert self._sub is not None
        self._wake.set()
        while True:
            batch = await self._sub.recv(timeout=1.0)
            changed = False
            for topic, msg, gap in batch:
                if topic == "routes":
                    changed |= self.tracker.on_publication(msg, gap)
            if changed:
                self._publish()
            if self.tracker.want_snapshot:
                self._wake.set()

    async def _resync(self) -> None:
        assert self._rpc is not None
        # Many routers lost the controllers together: jitter spreads their asks.
        retry = Retry(Backoff(base_s=0.1, max_s=self.backoff_max, jitter=0.2))
        self._wake.set()
        while True:
            try:
                await aio.wait_for(self._wake.wait(), timeout=self.refresh_s)
            except TimeoutError:
                # Publications sent while we were disconnected are lost without a
                # trace until the next one arrives: check the version now and then.
                self.tracker.want_snapshot = True
            self._wake.clear()
            while self.tracker.want_snapshot:
                try:
                    reply = await self._rpc.call(
                        RouteSnapshotRequest(), timeout=self.snapshot_timeout
                    )
                except (RpcTimeout, RemoteError) as exc:
                    self.tracker.snapshot_failed()
                    log.warning(
                        "route snapshot request failed (%s); serving the last table (version %d), "
                        "retrying in %.1fs",
                        exc,
                        self.tracker.table.version,
                        retry.next_delay,
                    )
                    await asyncio.sleep(retry.failed())
                    continue
                if not isinstance(reply, RouteSnapshot):
                    log.warning(
                        "controller answered a snapshot request with %s", type(reply).__name__
                    )
                    await asyncio.sleep(retry.failed())
                    continue
                retry.succeeded()
                self.snapshots += 1
                if self.tracker.on_snapshot(reply):
                    log.info(
                        "route table at version %d (%d apps)",
                        self.tracker.table.version,
                        len(self.tracker.table),
                    )
                    self._publish()
                if self.tracker.want_snapshot:
                    await asyncio.sleep(0.05)  # deltas still do not chain: ask again shortly
