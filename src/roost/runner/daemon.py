"""The runner daemon: supervisor + heartbeats + log shipping on one event loop.

Shutdown (SIGTERM/SIGINT): the supervisor stops every instance (TERM to its
process group, grace, KILL) and returns once all are reaped; then one last
heartbeat (so the controllers see the host empty at once) and one last log
flush go out, each bounded by a timeout, and the sockets close.

Hand-over (SIGUSR2; and what a crash or SIGKILL amounts to): the runner
exits promptly and leaves every instance running under its shim
(`roost.runner.shim`), its cgroup and the firewall's table in place. At
start, before its tenancy sweeps leftover cgroups and before its first
heartbeat, a runner adopts the instances its predecessor left
(`shimclient.discover`), so it reports them as running, with the same ids,
ports and states, well within the controllers' grace for a silent host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from pathlib import Path

import zmq
from prometheus_client import CollectorRegistry

from roost import aio, metrics
from roost.daemonize import run_daemon
from roost.datadir import weednode
from roost.datadir.shared import root_for, serves_here
from roost.images.cache import ImageCache
from roost.images.sources import RemoteStore
from roost.images.store import ImageStore
from roost.proc.exits import ConfigError, Unavailable
from roost.runner import s3local, shimsession
from roost.runner.archive import AppDirs
from roost.runner.confine import TenantDefaults
from roost.runner.copies import Copies, CopyDirectory
from roost.runner.dataproxy import LISTENERS_FILE, DataProxy, follow
from roost.runner.datasync import DataSync, RefreshingImages
from roost.runner.firewall import RunnerFirewall
from roost.runner.heartbeat import HeartbeatLoop, host_addresses
from roost.runner.images import CachedImages
from roost.runner.layout import Layout, PortAllocator
from roost.runner.logbuffer import LogBuffer
from roost.runner.metrics import RunnerCollector
from roost.runner.model import Policy
from roost.runner.proxyfeed import ProxyFeed
from roost.runner.rpcserver import RunnerRpc
from roost.runner.s3local import LocalS3
from roost.runner.shimclient import discover
from roost.runner.shipper import LogShipper
from roost.runner.supervisor import Supervisor
from roost.sessions.server import ExecSessions
from roost.settings import Settings, parse_port_range
from roost.tenant.launch import Tenancy, TenantError
from roost.tenant.toolmask import host_build_tools
from roost.wire.bootstrap import open_node
from roost.wire.dispatch import Handlers
from roost.wire.identity import load_peers
from roost.wire.messages import DATA_PROXY_HOST
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer

log = logging.getLogger("roost.runner")

LOG_BUFFER_LINES = 20_000
# How long a start waits for the shared tree's mount before it goes on.
MOUNT_WAIT_S = 60.0
FINAL_SEND_TIMEOUT_S = 2.0


def run(
    data_dir: Path, settings: Settings, name: str = "runner", host_id: str | None = None
) -> None:
    """Run the runner until SIGTERM/SIGINT (every instance stopped) or SIGUSR2
    (every instance left running for the next runner)."""
    run_daemon("runner", lambda stop: serve(data_dir, settings, name, host_id, stop))


def policy_from(settings: Settings) -> Policy:
    return Policy(
        backoff_max_s=settings.restart_backoff_max_s,
        startup_timeout_s=settings.startup_timeout_s,
        stop_grace_s=settings.stop_grace_s,
        health_every_s=settings.health_every_s,
    )


def probe_host(bind_host: str) -> str:
    """Where to knock on an instance: the bind address, unless it means "here"."""
    if bind_host in ("", "0.0.0.0", "::", "localhost") or bind_host.startswith("127."):
        return "127.0.0.1"
    return bind_host


async def serve(
    data_dir: Path,
    settings: Settings,
    name: str = "runner",
    host_id: str | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """The daemon's body; returns when `stop` is set (or on SIGTERM/SIGINT)."""
    layout = Layout(
        data_dir,
        root_for(data_dir, settings.appdata_root),
        own_tree=serves_here(data_dir, settings.appdata_root),
    )
    layout.data_quota_mb = settings.data_quota_mb
    layout.create()
    hid = layout.host_id(host_id or settings.runner_host_id)
    node, cluster = open_node(data_dir, name)
    controller_eps = cluster.of("controller")
    if not controller_eps:
        raise ConfigError(f"{data_dir / 'cluster.json'} lists no controller endpoint")
    stop = stop or asyncio.Event()
    handover = Handover()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        loop.add_signal_handler(signal.SIGUSR2, handover.request, stop)
        handled.append(signal.SIGUSR2)
    log.info("runner %s starting (host id %s, data %s)", name, hid, data_dir)
    try:
        # A cluster's shared tree (datadir/weedplan.py): this host's volume
        # server and mount, left running on a hand-over like the instances.
        weed_parts = weednode.running(
            data_dir, "runner", layout.appdata_root, lambda: handover.requested
        )
        async with node, weed_parts as weed:
            if weed is not None and not await weed.wait_mounted(MOUNT_WAIT_S):
                # Instances start on pulled copies until it is (Layout.live).
                log.warning("the shared tree is not mounted at %s yet", layout.appdata_root)
            # Before any tenant code: raises when it cannot be protected.
            members = [(w.role, w.host) for w in load_peers(data_dir / "keys").values()]
            firewall = await RunnerFirewall.start(settings, cluster, members, hid)
            # One client per concern: a client that times out resets its
            # socket, which must not disturb the other's requests in flight.
            heartbeats = RpcClient(node, controller_eps)
            logs = RpcClient(node, controller_eps)
            directory = CopyDirectory(
                RpcClient(node, controller_eps), hid, lambda ep: RpcClient(node, [ep])
            )
            # One source per builder: a store that lacks a blob answers with a
            # (final) Error, so each store must be asked on its own.
            builders = [
                RemoteStore(f"builder {ep.address}", RpcClient(node, [ep]))
                for ep in cluster.of("images")
            ]
            copies = Copies(
                ImageStore(layout.store), settings.copy_store_bytes, builders, directory
            )
            # Apps' data directories are on the first servicehost, where the
            # gateways write them (gateway/server.py): a client rotating over
            # all would pull an empty copy from the others and apply it.
            data_eps = cluster.of("servicehost")[:1]
            data_client = RpcClient(node, data_eps) if data_eps else None
            clients = [heartbeats, logs, directory.controllers, *(b.client for b in builders)]
            try:
                await _serve(
                    layout, settings, hid, heartbeats, logs, copies, stop, node, data_client,
                    firewall, handover,
                )  # fmt: skip
                # Only once every instance is stopped: on a hand-over, or a
                # crash (an exception here), they still run behind it.
                if not handover.requested:
                    await firewall.close()
            finally:
                for client in [*clients, data_client]:
                    if client is not None:
                        await client.close()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("runner %s stopped", name)


async def _serve(
    layout: Layout,
    settings: Settings,
    host_id: str,
    heartbeats: RpcClient,
    logs: RpcClient,
    copies: Copies,
    stop: asyncio.Event,
    node: Node | None = None,
    data_client: RpcClient | None = None,
    firewall: RunnerFirewall | None = None,
    handover: Handover | None = None,
) -> None:
    fw = firewall or RunnerFirewall.off()
    leaving = handover or Handover()
    # First of all: the instances a predecessor left running (their cgroups
    # are not leftovers to sweep).
    found = await discover(layout.shims)
    runs_root = layout.root / "session-shims"  # and the runs and cron jobs
    runs = await shimsession.discover(runs_root)
    shipper = LogShipper(logs, LogBuffer(LOG_BUFFER_LINES, time.time))
    images = CachedImages(ImageCache(layout.images, settings.image_cache_bytes), copies)
    # Apps' data directories follow the servicehost's canonical copies.
    data = DataSync(
        data_client,
        layout,
        settings.data_sync_s,
        lambda: {r.assignment.app for r in sup.records.values()},
    )
    # `run APP CMD` sessions, relayed by gateways, and image copies served to
    # other hosts, on this host's own RPC server.
    execs = ExecSessions(
        idle_s=settings.exec_idle_s,
        grace_s=settings.stop_grace_s,
        holder=shimsession.ShimHolder(runs_root),
    )
    # Every tenant process (instance, run, cron) starts confined through this.
    try:
        tenancy = Tenancy.for_daemon(
            f"runner-{host_id}",
            settings.sandbox,
            keep={r.unit for r, _ in found if r.unit}
            | {str(r.extra.get("unit")) for r, _ in runs if r.extra.get("unit")},
        )
    except TenantError as exc:
        raise Unavailable(f"cannot confine apps: {exc}") from None
    hidden_files, hidden_dirs = host_build_tools()
    defaults = TenantDefaults(
        memory_mb=settings.instance_memory_mb,
        pids=settings.tenant_pids_max,
        cpu_weight=settings.tenant_cpu_weight,
        tmp_mb=settings.tenant_tmp_mb,
        hidden_files=hidden_files,
        hidden_dirs=hidden_dirs,
    )
    fw.live_session = execs.has
    runner_rpc = RunnerRpc(layout, images, execs, data, copies, tenancy, defaults)
    runner_rpc.local_s3 = LocalS3(s3local.own_gateway(weednode.load(layout.data_dir)))
    # Deleted apps' homes: archived on AppRemoved, and before a reused name's use.
    dirs = AppDirs(layout, settings.archive_days * 86400)
    # What the data proxy serves, from assignments and `run` sessions (proxyfeed.py).
    feed = ProxyFeed(layout.data_dir / LISTENERS_FILE, execs.has)
    runner_rpc.proxy_feed = feed
    rpc = _rpc_server(node, settings, runner_rpc.handlers(dirs, fw), layout.root / "rpc-port")
    sup = Supervisor(
        layout=layout,
        images=RefreshingImages(images, data),
        policy=policy_from(settings),
        emit=shipper.emit,
        probe_host=probe_host(settings.bind_host),
        tenancy=tenancy,
        tenant_defaults=defaults,
        ports=PortAllocator(ports=parse_port_range(settings.instance_ports)),
    )
    sup.adopt(found)
    data.owner_of = sup.data_owner
    heartbeat = HeartbeatLoop(
        client=heartbeats,
        host_id=host_id,
        bind_host=settings.bind_host,
        interval=settings.heartbeat_interval_s,
        records=lambda: list(sup.records.values()),
        changed=sup.changed,
        on_assignment=lambda asg: fw.gate(
            dirs.claim_all(feed.assigned(runner_rpc.local_s3.assignments(asg.instances))),
            sup.set_desired,
        ),
        rpc_endpoint=rpc.address if rpc is not None else "",
        rpc_key=node.keypair.public_text if node is not None and rpc is not None else "",
    )
    # Assignments and cron runs carry the same lease's token: either fences both.
    runner_rpc.assignment_fence = lambda: heartbeat.held.fence
    runner_rpc.assignment_ready = heartbeat.hint
    registry = CollectorRegistry()
    registry.register(
        RunnerCollector(
            records=lambda: list(sup.records.values()),
            dropped_log_lines=lambda: shipper.buffer.dropped_total,
            reachable=lambda: heartbeat.reachable,
        )
    )
    metrics.serve(settings.metrics_port, settings.bind_host, registry)
    async with asyncio.TaskGroup() as tg:
        supervising = tg.create_task(sup.run())
        beating = tg.create_task(heartbeat.run())
        shipping = tg.create_task(shipper.run())
        helpers = [tg.create_task(execs.run()), tg.create_task(data.run())]
        helpers.append(tg.create_task(fw.run()))
        helpers.append(tg.create_task(dirs.run()))
        # The data proxy: one address per database pair (runner/dataproxy.py);
        # nothing runs while DATA/dataproxy.json lists no listener. A
        # hand-over leaves it serving apps' connections for the next runner.
        proxy = DataProxy(layout.root / "dataproxy", bind=DATA_PROXY_HOST)
        listeners = layout.data_dir / LISTENERS_FILE
        following = follow(listeners, proxy, stop, hand_over=lambda: leaving.requested)
        helpers.append(tg.create_task(following))
        # Before any request about them; their service allowances with them.
        await fw.adopt_sessions(await runner_rpc.adopt(runs))
        if rpc is not None:
            helpers.append(tg.create_task(rpc.serve()))
        await stop.wait()
        for task in helpers[1:]:
            task.cancel()
        execs.shutdown(hand_over=leaving.requested)
        running = sum(1 for r in sup.records.values() if r.has_process)
        if leaving.requested:
            log.info("handing over: leaving %d instances running", running)
            sup.handover()
        else:
            log.info("stopping %d instances", running)
            sup.shutdown()
        await supervising
        beating.cancel()
        await asyncio.wait([beating])
        if not leaving.requested:  # a successor reports what still runs
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(heartbeat.beat(), FINAL_SEND_TIMEOUT_S)
        shipping.cancel()
        await asyncio.wait([shipping])
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(shipper.flush(tries=1), FINAL_SEND_TIMEOUT_S)
    if not leaving.requested:
        tenancy.close()  # every instance is down: our cgroups go too


class Handover:
    """SIGUSR2 asked the runner to exit and leave its instances running."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, stop: asyncio.Event) -> None:
        self.requested = True
        stop.set()


def _rpc_server(
    node: Node | None, settings: Settings, handlers: Handlers, remembered: Path
) -> RpcServer | None:
    """Bind the runner's RPC server; its address as other hosts reach it.

    With no port set, the one its predecessor on this DATA had (`remembered`)
    when it is free: a gateway relaying a `run` session holds that address,
    and finds the session again there once the new runner adopted it."""
    if node is None:
        return None
    server: RpcServer | None = None
    if not settings.runner_rpc_port:
        with contextlib.suppress(OSError, ValueError, zmq.ZMQError):
            port = int(remembered.read_text())
            server = RpcServer(node, f"tcp://{settings.bind_host}:{port}", handlers)
    if server is None:
        port_or_any = settings.runner_rpc_port or "*"
        server = RpcServer(node, f"tcp://{settings.bind_host}:{port_or_any}", handlers)
    with contextlib.suppress(OSError):
        remembered.write_text(server.address.rsplit(":", 1)[1])
    if settings.bind_host in ("0.0.0.0", "::", ""):
        host = host_addresses(settings.bind_host)[0]
        server.address = f"tcp://{host}:{server.address.rsplit(':', 1)[1]}"
    return server
