"""One router worker: listening sockets, the proxy, and the tasks that feed it.

`RouterWorker` is an async context manager: entering binds the HTTP (and
HTTPS) ports, or listens on sockets it is handed (`sockets`, inherited by
socket activation), and starts the background tasks (route feed, static
bundles, deadline sweep); leaving stops accepting at once and drains the
connections it holds (`drain.py`: requests in flight finish, keep-alive
connections are closed without a reset), then waits for its tasks.
Tests use it directly with `routes=` and no cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from roost import aio
from roost.proc.activation import BACKLOG
from roost.router import native
from roost.router.accesslog import AccessLog
from roost.router.balance import Balancer
from roost.router.bundles import BundleKeeper, Ensure
from roost.router.client import protocol_factory
from roost.router.context import Context, Limits
from roost.router.drain import IDLE_S, Drain
from roost.router.feed import RouteFeed
from roost.router.report import StatsReporter
from roost.router.table import RouteTable, build_table
from roost.router.tls import CertStore
from roost.router.tracker import RouteTracker
from roost.settings import Settings
from roost.wire.cluster import ClusterConfig
from roost.wire.messages import AppRoute
from roost.wire.node import Node

log = logging.getLogger("roost.router")

SWEEP_INTERVAL = 0.25
DRAIN_TICK = 0.05


class RouterWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        host: str | None = None,
        port: int = 0,
        tls_port: int | None = None,
        reuse_port: bool = False,
        sockets: Mapping[str, socket.socket] | None = None,
        state_dir: Path | None = None,
        node: Node | None = None,
        cluster: ClusterConfig | None = None,
        routes: list[AppRoute] | None = None,
        ensure_bundle: Ensure | None = None,
        release_bundle: Any = None,
        limits: Limits | None = None,
        access_log: Path | None = None,
        drain_s: float | None = None,
        drain_idle_s: float = IDLE_S,
        refresh_s: float = 15.0,
        initial_sync_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.host = host if host is not None else settings.bind_host
        self.port = port
        self.tls_port = tls_port  # None: no TLS listener
        self.reuse_port = reuse_port
        # Inherited listeners ("http", and "https" for TLS): used instead of binding.
        self.sockets = dict(sockets or {})
        if self.sockets:
            self.tls_port = 0 if "https" in self.sockets else None
        self.state_dir = state_dir
        self.node = node
        self.cluster = cluster
        self.initial_routes = routes
        self.ensure_bundle = ensure_bundle
        self.release_bundle = release_bundle
        self.limits = limits or Limits.from_settings(settings)
        self.access_path = access_log
        self.drain_s = settings.router_drain_s if drain_s is None else drain_s
        self.drain_idle_s = drain_idle_s
        self.refresh_s = refresh_s
        self.initial_sync_s = initial_sync_s
        self.ctx: Context
        self.feed: RouteFeed | None = None
        self.certs: CertStore | None = None
        self._servers: list[asyncio.Server] = []
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._access: AccessLog | None = None

    # ---------------------------------------------------------------- life cycle

    async def __aenter__(self) -> RouterWorker:
        s = self.settings
        if native.COMPILED:
            log.info("request path: %s", native.STATUS)
        else:
            log.warning("request path: %s (slower; scripts/install compiles it)", native.STATUS)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        try:
            if self.access_path is not None:
                self._access = AccessLog(
                    self.access_path, s.router_access_log_bytes, s.router_access_log_keep
                )
            self.ctx = Context(
                limits=self.limits,
                spawn=self._tg.create_task,
                access=self._access,
                balancer=Balancer(s.router_max_fails, s.router_eject_s),
                default_domain=s.default_domain,
                host_id=s.router_host_id,
            )
            self.bundles = BundleKeeper(self.ctx, self.ensure_bundle)
            self.bundles.on_release = self.release_bundle
            if self.tls_port is not None:
                if self.state_dir is None:
                    raise ValueError("a TLS listener needs a state_dir for its certificates")
                self.certs = CertStore(self.state_dir / "tls", s.default_domain)
            if self.initial_routes is not None:
                self.install(build_table(1, 0, self.initial_routes, s.default_domain))
            self._tasks.append(self._tg.create_task(self._sweep()))
            self._tasks.append(self._tg.create_task(self.bundles.run()))
            if self.node is not None and self.cluster is not None:
                tracker = RouteTracker(self.ctx.table)
                self.feed = RouteFeed(
                    self.node, self.cluster, tracker, self.install, refresh_s=self.refresh_s
                )
                self._tasks.append(self._tg.create_task(self.feed.run()))
                # Its request counters, to every controller, for the dashboard's charts.
                reporter = StatsReporter(self.node, self.cluster, self.ctx.counts)
                self._tasks.append(self._tg.create_task(reporter.run()))
                # Listening with no table would answer 404 for every app: wait for the
                # first snapshot (other workers, or routers, serve meanwhile), but not
                # forever, since the controllers may all be down.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.initial_sync_s
                while not tracker.synced and loop.time() < deadline:
                    await asyncio.sleep(0.02)
                if not tracker.synced:
                    log.warning("no route table from any controller yet: serving without one")
            await self._listen()
        except BaseException:
            await self._stop_tasks()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Stop accepting at once: on a shared socket the next connections wait
        # in its backlog for another process (closing our copy of an inherited
        # socket leaves it listening in whoever else holds it).
        for server in self._servers:
            server.close()  # (closes its socket: never close one behind its back)
        await self._drain()
        for slot in self.ctx.balancer.slots.values():
            for up in slot.idle:
                up.close()
            slot.idle = []
        await self._stop_tasks()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await aio.wait_for(server.wait_closed(), 1.0)
        if self._access is not None:
            self._access.close()

    async def _drain(self) -> None:
        """Finish what is in flight, close keep-alive connections without a
        reset, then whatever is left at the timeout (drain.py)."""
        ctx = self.ctx
        ctx.draining = True
        for client in ctx.clients:
            for ex in (client.active, *client.queue):
                if ex is None or ex.done or ex.local or (ex.up is not None and ex.up.started):
                    continue
                ex.keep_alive = False  # (its response has not begun: it can say close)
        loop = asyncio.get_running_loop()
        drain = Drain(loop.time(), self.drain_s, self.drain_idle_s)
        while True:
            now = loop.time()
            for client in list(ctx.clients):
                if drain.close(now, _busy(client), client.idle_since):
                    client.closed = True
                    if client.transport is not None:
                        client.transport.close()
            if drain.over(now, len(ctx.clients)):
                break
            await asyncio.sleep(DRAIN_TICK)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            with contextlib.suppress(asyncio.CancelledError):
                await tg.__aexit__(None, None, None)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = self.ctx
        if self.sockets:
            self.host = str(self.sockets["http"].getsockname()[0])
        server = await loop.create_server(
            protocol_factory(ctx, b"http"),
            backlog=BACKLOG,  # (listen() again on an inherited socket: keep it large)
            **self._where("http", self.port),
        )
        self._servers.append(server)
        self.port = _bound_port(server)
        if self.certs is not None:
            certs = self.certs

            try:
                tls = await loop.create_server(
                    protocol_factory(ctx, b"https"),
                    ssl=certs.server_context,
                    backlog=BACKLOG,
                    ssl_handshake_timeout=self.limits.header_timeout,
                    **self._where("https", self.tls_port or 0),
                )
            except OSError as exc:
                # Plain HTTP still works: refusing to route at all would be worse.
                log.error(
                    "cannot listen for HTTPS on %s:%s (%s): TLS is off",
                    self.host,
                    self.tls_port,
                    exc,
                )
                self.certs = None
                https = self.sockets.pop("https", None)
                if https is not None:
                    https.close()
                return
            self._servers.append(tls)
            self.tls_port = _bound_port(tls)

    def _where(self, name: str, port: int) -> dict[str, Any]:
        """create_server's arguments for the listener `name`: its inherited
        socket, or the address to bind."""
        if self.sockets:
            return {"sock": self.sockets[name]}
        return {"host": self.host, "port": port, "reuse_port": self.reuse_port or None}

    # ---------------------------------------------------------------- routes

    def install(self, table: RouteTable) -> None:
        """Swap in a new route table (from the feed, or directly in tests)."""
        gone, came = self.ctx.swap_table(table)
        if self.certs is not None and any(e.route.certificates for e in (*gone, *came)):
            self.certs.update(table)
        if any(e.route.static_bundle for e in (*gone, *came)):
            self.bundles.update(table)

    def set_routes(self, routes: list[AppRoute], version: int | None = None) -> None:
        v = self.ctx.table.version + 1 if version is None else version
        self.install(build_table(v, 0, routes, self.settings.default_domain))

    # ---------------------------------------------------------------- housekeeping

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.ctx.sweep(loop.time())
            if self._access is not None:
                self._access.flush()


def _bound_port(server: asyncio.Server) -> int:
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    return 0


def _busy(client: Any) -> bool:
    """A request on it is being read or answered, it carries an upgraded
    stream, or it is closing already (then it is left to finish)."""
    return (
        client.closed
        or client.active is not None
        or client.cur is not None
        or client.tunnel is not None
        or client.upgrading is not None
    )
