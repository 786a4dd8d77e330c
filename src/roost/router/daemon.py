"""`roost.router.daemon.run`: the router daemon, one or several worker processes.

With one worker the proxy runs in this process. With more, this process only
supervises (`roost.proc.supervise`): each worker is a separate process
(`roost router --worker N`, started clean of this one's state, with exactly
its settings) that binds the same ports with SO_REUSEPORT, so the kernel
spreads connections across them; each follows the route table on its own. A
worker that dies is restarted with backoff; each dies with the router if the
router is killed. Every process logs like every other daemon
(`roost.daemonize.run_daemon`).

Listening sockets handed over by socket activation (`roost.proc.activation`:
a systemd .socket unit, or `roost up`, which binds them once and keeps them
across router restarts), named "http" and "https" (unnamed: in that order),
are used instead of binding: by the router itself, or passed down to every
worker. Then a restart fails no request: connections wait in the sockets'
backlog while no router accepts.

SIGTERM, SIGINT and SIGUSR2 all end the router the same way (it holds no
tenant to leave running): it stops accepting at once and drains its
connections (`drain.py`, at most ROOST_ROUTER_DRAIN_S); a supervisor gives
its workers TERM, that long and a little more, then KILL.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from prometheus_client import REGISTRY

from roost.daemonize import run_daemon
from roost.images.sources import RemoteStore, ask_holders
from roost.metrics import serve as serve_metrics
from roost.proc import activation, spawn
from roost.proc.backoff import Backoff
from roost.proc.children import Policy
from roost.proc.exits import ConfigError, Unavailable
from roost.proc.supervise import Program, Supervisor
from roost.router.accesstail import AccessTail
from roost.router.bundles import image_cache_ensure
from roost.router.worker import RouterWorker
from roost.settings import Settings
from roost.wire.bootstrap import open_node
from roost.wire.node import Node
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.router")

# Young objects a worker lets pile up before a collection (CPython's default
# is 700). See `settle_gc`.
GC_YOUNG = 10_000

# How much longer than its drain a worker gets before KILL.
GRACE_S = 5.0
LISTENERS = ("http", "https")


def worker_policy(settings: Settings) -> Policy:
    """A worker is restarted 0.5 s after it dies, doubling to 30 s while it
    keeps dying; one that served a minute starts the count again."""
    backoff = Backoff(base_s=0.5, max_s=30.0, reset_after_s=60.0)
    return Policy(backoff=backoff, stop_grace_s=settings.router_drain_s + GRACE_S)


def run(
    data_dir: Path,
    settings: Settings,
    name: str = "router",
    port: int | None = None,
    workers: int | None = None,
    worker: int | None = None,
) -> None:
    """Run the router until SIGTERM/SIGINT/SIGUSR2 (blocking).

    `worker`: run as that worker of a router with several (its supervisor
    started this process; the port is shared with SO_REUSEPORT, or handed
    down by socket activation).
    """
    port = settings.router_port if port is None else port
    workers = max(1, workers or settings.router_workers)
    if worker is not None:
        main = partial(_worker_main, data_dir, settings, name, port, worker, True)
    elif workers == 1:
        main = partial(_worker_main, data_dir, settings, name, port, 0, False)
    else:
        main = partial(_supervise, data_dir, settings, name, port, workers)
    run_daemon("router", main)


async def _worker_main(
    data_dir: Path,
    settings: Settings,
    name: str,
    port: int,
    index: int,
    reuse_port: bool,
    stop: asyncio.Event,
) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, stop.set)
    sockets = inherited_sockets()
    if not sockets and not reuse_port:  # alone on its ports: another process holding one is fatal
        for p in (port, settings.router_tls_port):
            if p:
                _probe(settings.bind_host, p)
    state = data_dir / "router"
    state.mkdir(parents=True, exist_ok=True)
    node, cluster = open_node(data_dir, name)
    access = settings.router_access_log
    access_path = None if access == "-" else Path(access) if access else state / "access.log"
    async with node:
        images: RpcClient | None = None
        controllers: RpcClient | None = None
        ensure = release = None
        if cluster.of("images"):
            images = RpcClient(node, cluster.of("images"))
        if cluster.of("controller"):
            controllers = RpcClient(node, cluster.of("controller"))
        if images is not None or controllers is not None:
            ensure, release = image_cache_ensure(
                state / "bundles" / f"w{index}",
                settings.image_cache_bytes,
                images,
                _holders(node, controllers) if controllers is not None else None,
            )
        else:
            log.warning("no image store endpoint: static bundles cannot be fetched")
        try:
            async with RouterWorker(
                settings,
                port=port,
                tls_port=settings.router_tls_port or None,
                reuse_port=reuse_port,
                sockets=sockets,
                state_dir=state,
                node=node,
                cluster=cluster,
                ensure_bundle=ensure,
                release_bundle=release,
                access_log=access_path,
            ) as worker:
                settle_gc()
                # Worker N serves its counters on metrics_port + N.
                if settings.metrics_port:
                    REGISTRY.register(worker.ctx.stats)
                    serve_metrics(settings.metrics_port + index, settings.bind_host)
                tls = f", https on {worker.tls_port}" if worker.certs is not None else ""
                log.info(
                    "router worker %d serving http on %s:%d%s", index, worker.host, worker.port, tls
                )
                async with asyncio.TaskGroup() as tg:
                    # One worker reads the file they all append to (accesstail.py).
                    tail = None
                    if index == 0 and controllers is not None and access_path is not None:
                        tail = tg.create_task(AccessTail(access_path, controllers).run())
                    await stop.wait()
                    if tail is not None:
                        tail.cancel()
                log.info("router worker %d stopping", index)
        finally:
            for client in (images, controllers):
                if client is not None:
                    await client.close()


def settle_gc() -> None:
    """A worker's garbage collection, once it serves (issue 21, the p99).

    A steady request makes no object the collector tracks, but a burst of new
    connections does (transports, tasks, coroutines, futures, handles: tens per
    connection, alive until it is set up). Measured, 100 new client
    connections each needing an instance connection set off five or six
    young-generation collections and one of the middle generation, 1-3 ms of
    such a burst's 10, each walking every object of the burst still alive.
    Connections no longer end in cycles (client.py's `_DEAD_PARSER`), so
    their objects go by their counts; everything made while starting
    (modules, settings, the first table: some 30,000 objects) is frozen out
    of the collector's walks (`gc.freeze`), and a collection waits for
    10,000 young objects, more than a burst of a few hundred connections
    holds at once."""
    gc.collect()  # (garbage now is not frozen for good)
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


def _holders(node: Node, controllers: RpcClient) -> Callable[[str], Awaitable[list[RemoteStore]]]:
    """Runners holding a copy of a bundle, as a controller names them: the
    sources a bundle is fetched from when no builder can serve it."""

    async def holders(digest: str) -> list[RemoteStore]:
        return await ask_holders(controllers, digest, "", lambda ep: RpcClient(node, [ep]))

    return holders


def inherited_sockets() -> dict[str, socket.socket]:
    """The listening sockets handed to this process by socket activation,
    by name ("http", "https"); empty when none were. ConfigError when they
    are not what a router can serve on."""
    got = activation.take()
    if not got:
        return {}
    names = [name for name, _ in got]
    if all(name == "unknown" for name in names) and len(got) <= len(LISTENERS):
        names = list(LISTENERS[: len(got)])  # unnamed: http, then https
    if len(set(names)) != len(names) or not set(names) <= set(LISTENERS):
        raise ConfigError(
            f"inherited sockets named {':'.join(names)}: a router takes 'http' and 'https'"
        )
    if "http" not in names:
        raise ConfigError("inherited sockets have no 'http' one")
    fds = [fd for _, fd in got]
    return {name: activation.listening_tcp(fd, name) for name, fd in zip(names, fds, strict=True)}


def _probe(host: str, port: int) -> int:
    """Fail clearly if another process holds the port (SO_REUSEPORT would share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise Unavailable(f"cannot bind {host}:{port}: {exc.strerror}") from None
        return int(s.getsockname()[1])


def worker_program(
    data_dir: Path,
    settings: Settings,
    name: str,
    port: int,
    i: int,
    sockets: dict[str, socket.socket] | None = None,
) -> Program:
    """Worker `i`: `roost router --worker i`, with exactly our settings,
    and our inherited `sockets` handed down to it the same way."""
    argv = [sys.executable, "-m", "roost", "--data", str(data_dir), "router"]
    argv += ["--name", name, "--port", str(port), "--worker", str(i)]
    env = {**os.environ, **settings.to_env()}
    fds = [(n, s.fileno()) for n, s in (sockets or {}).items()]
    if fds:
        argv = activation.launcher(fds, argv)
    # Its stderr passes through us: a fatal exit is reported with its words.
    start = partial(
        spawn.start, argv, env=env, stderr=subprocess.PIPE, pass_fds=[fd for _, fd in fds]
    )
    return Program(f"router worker {i}", start, policy=worker_policy(settings))


async def _supervise(
    data_dir: Path, settings: Settings, name: str, port: int, workers: int, stop: asyncio.Event
) -> None:
    """Start `workers` worker processes and keep them running until `stop`
    (roost.proc.supervise: restarts with backoff; TERM, grace, KILL at stop).
    A worker's configuration error ends the router with it."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, stop.set)
    sockets = inherited_sockets()
    if sockets:
        port = int(sockets["http"].getsockname()[1])
    else:
        port = _probe(settings.bind_host, port)
        if settings.router_tls_port:
            _probe(settings.bind_host, settings.router_tls_port)
    sup = Supervisor(logger=log)
    for i in range(workers):
        sup.add(worker_program(data_dir, settings, name, port, i, sockets))
    how = "inherited sockets" if sockets else "SO_REUSEPORT"
    log.info("router: %d workers on port %d (%s)", workers, port, how)
    await sup.run_until(stop)
