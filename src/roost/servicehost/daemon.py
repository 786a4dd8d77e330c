"""The servicehost daemon (`roost servicehost`): PostgreSQL and Redis for every app.

Start: find the server binaries (a clear error naming the packages when they
are missing), bind the "servicehost" RPC endpoints, initdb on first run, start
PostgreSQL and every app's Redis, or adopt those an earlier daemon left
running on this data directory (supervised.py). Two ways to end:

  SIGTERM/SIGINT  full stop: stop answering, stop the status push, then stop
                  every server gracefully (PostgreSQL: fast shutdown; Redis:
                  SIGTERM, its SHUTDOWN, which saves) and return once all
                  have exited.
  SIGUSR2         hand-over: stop answering and return at once, leaving
                  every server serving, with its connections, for the next
                  daemon (an upgrade, a restart) to adopt.

A SIGKILL or a crash leaves the servers serving too: they are not its
children (detached.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from pathlib import Path

from roost.daemonize import run_daemon
from roost.datadir import quota, weednode, weedquota
from roost.datadir.shared import root_for
from roost.metrics import serve as serve_metrics
from roost.proc.exits import ConfigError
from roost.servicehost import handover, pgpair, redispairs, snaproom
from roost.servicehost.adopt import Adoption
from roost.servicehost.appdata import AppData
from roost.servicehost.backupsource import BackupSources
from roost.servicehost.binaries import find_binaries
from roost.servicehost.datasession import DataSessions
from roost.servicehost.host import ServiceHost, limits_problem
from roost.servicehost.layout import Layout
from roost.servicehost.pairjoin import PairSwap
from roost.servicehost.provision import Provisioning
from roost.servicehost.redispairs import RedisPairs
from roost.servicehost.restores import Restores
from roost.servicehost.status import push_loop
from roost.servicehost.user import ensure_service_user
from roost.sessions.server import ExecSessions
from roost.settings import Settings
from roost.wire.bootstrap import endpoint_host, open_node, own_endpoints
from roost.wire.dispatch import Handlers, on, pong
from roost.wire.messages import AppRemoved
from roost.wire.rpc import RpcClient, RpcServer

log = logging.getLogger("roost.servicehost")

ROLE = "servicehost"
# How long a start waits for the shared tree's mount (its filer and master
# are on the controller hosts, which a cluster starts first).
MOUNT_WAIT_S = 120.0


def handlers(
    host: ServiceHost, appdata: AppData, data: DataSessions, restores: Restores | None = None
) -> Handlers:
    """The servicehost's table: its services, app data directories (sessions
    and pulls), deleted apps' archives, and backupd's pulls and restores
    (of an app, or of a lost servicehost's services: adopt.py)."""
    restores = restores or Restores(host, appdata)
    return Handlers(
        "the servicehost",
        [
            *host.entries(),
            *Provisioning(host).entries(),
            *data.entries(),
            on(AppRemoved, appdata.on_removed),
            *BackupSources(host, appdata).entries(),
            *restores.entries(),
            *Adoption(host).entries(),
            *PairSwap(host).entries(),
            pong("servicehost"),
        ],
    )


async def serve(
    data_dir: Path, settings: Settings, name: str = "servicehost", stop: asyncio.Event | None = None
) -> None:
    """The daemon's body; returns after `stop` is set and every server is
    down, or after SIGUSR2 with every server left serving."""
    stopping = stop or asyncio.Event()
    await handover.serving(stopping, lambda over: _serve(data_dir, settings, name, stopping, over))


async def _serve(
    data_dir: Path,
    settings: Settings,
    name: str,
    stop: asyncio.Event,
    handing_over: Callable[[], bool],
) -> None:
    problem = limits_problem(settings)
    if problem is not None:
        raise ConfigError(problem)
    serve_metrics(settings.metrics_port, settings.bind_host)
    bins = find_binaries()
    user = await asyncio.to_thread(ensure_service_user, settings.services_user)
    node, cluster = open_node(data_dir, name)
    root = root_for(data_dir, settings.appdata_root)
    # A cluster's shared tree (datadir/weedplan.py): this host's volume
    # server and mount, left running on a hand-over like the servers.
    async with node, weednode.running(data_dir, ROLE, root, handing_over) as weed:
        if weed is not None and not await weed.wait_mounted(MOUNT_WAIT_S):
            # Marking a plain directory would hide it under the mount later.
            raise OSError(f"the shared tree is not mounted at {root} after {MOUNT_WAIT_S:g}s")
        endpoints = own_endpoints(cluster, ROLE, node)
        if not endpoints:
            raise ConfigError(
                f"{data_dir / 'cluster.json'} has no {ROLE!r} endpoint for key {name!r}"
            )
        public = endpoint_host(endpoints[0].address)
        backupds = [endpoint_host(ep.address) for ep in cluster.of("backupd")]
        host = ServiceHost(Layout(data_dir), settings, bins, user, name, public, backupds)
        pair_config = redispairs.load_config(data_dir, cluster, settings.sentinel_port)
        if pair_config is not None:  # a cluster's servicehost: Redis pairs (redispairs.py)
            host.pairs = RedisPairs(host, pair_config)
        if (data_dir / pgpair.PAIR_FILE).exists():  # apps' PostgreSQL on its pair (pairdb.py)
            host.pg_pair = pgpair.load_plan(data_dir)
        own = node.identity
        host.host_id = own.host if own is not None else ""
        # Apps' data directories (rsync/scp/sftp via gateways, pulls by runners).
        owner = (user.uid, user.gid) if user.dropped else None
        appdata = AppData(
            root,
            owner,
            archive=Layout(data_dir).root / "archive",
        )
        # Loop images on the host's disk: for a plain tree (one machine) only,
        # not inside a mount an operator made (ROOST_APPDATA_ROOT). In the
        # cluster's shared tree, a mount of each app's own (weedquota.py).
        appdata.quota_mb = 0 if settings.appdata_root else settings.data_quota_mb
        appdata.quotas = not settings.appdata_root
        if weed is not None:
            appdata.shared_quota = functools.partial(weedquota.ensure, data_dir, root)
        appdata.create()
        execs = ExecSessions(idle_s=settings.exec_idle_s, grace_s=settings.stop_grace_s)
        restores = Restores(host, appdata)
        table = handlers(host, appdata, DataSessions(appdata, execs, user), restores)
        servers = [RpcServer(node, ep.address, table) for ep in endpoints]
        controller_eps = cluster.of("controller")
        controllers = RpcClient(node, controller_eps) if controller_eps else None
        try:
            async with asyncio.TaskGroup() as tg:
                await host.start(tg)
                helpers = [tg.create_task(s.serve()) for s in servers]
                helpers.append(tg.create_task(appdata.purge_loop(settings.archive_days * 86400)))
                helpers.append(tg.create_task(restores.purge_loop(settings.archive_days * 86400)))
                helpers.append(tg.create_task(snaproom.guard_loop(host)))
                if host.pairs is not None:
                    helpers.append(tg.create_task(host.pairs.watch_loop()))
                tg.create_task(execs.run())
                if controllers is not None:
                    helpers.append(tg.create_task(push_loop(host, controllers, name)))
                log.info("servicehost %s serving on %s", name, [s.address for s in servers])
                await stop.wait()
                over = handing_over()
                log.info("servicehost %s", "handing over" if over else "stopping")
                for t in helpers:
                    t.cancel()
                execs.shutdown()
                await (host.release() if over else host.shutdown())
        finally:
            if controllers is not None:
                await controllers.close()
            # Apps' trees with a quota: unmounted here, kept by the sandboxes
            # that still bind them; the next start mounts the same devices.
            await asyncio.to_thread(quota.release, appdata.root)
    log.info("servicehost %s stopped", name)


def run(data_dir: Path, settings: Settings, name: str = "servicehost") -> None:
    """Run the servicehost until SIGTERM/SIGINT; returns once every server is stopped."""
    run_daemon("servicehost", lambda stop: serve(data_dir, settings, name, stop))
