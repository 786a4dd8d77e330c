"""`roost.router.daemon.run`: the router daemon, one or several worker processes.

With one worker the proxy runs in this process. With more, this process only
supervises: each worker is a separate process (spawned, so it starts clean of
this one's state) that binds the same ports with SO_REUSEPORT, so the kernel
spreads connections across them; each follows the route table on its own. A
worker that dies is restarted with backoff; on SIGTERM/SIGINT workers get
TERM, a grace period to finish requests in flight, then KILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from roost.images.sources import Source, ask_holders
from roost.metrics import serve as serve_metrics
from roost.router.bundles import image_cache_ensure
from roost.router.worker import RouterWorker
from roost.settings import Settings
from roost.wire.bootstrap import open_node
from roost.wire.node import Node
from roost.wire.rpc import RpcClient

log = logging.getLogger("roost.router")

GRACE_S = 10.0


def run(
    data_dir: Path,
    settings: Settings,
    name: str = "router",
    port: int | None = None,
    workers: int | None = None,
) -> None:
    """Run the router until SIGTERM/SIGINT (blocking)."""
    port = settings.router_port if port is None else port
    workers = max(1, workers or settings.router_workers)
    if workers == 1:
        run_worker(data_dir, settings, name, port, 0, reuse_port=False)
        return
    _supervise(data_dir, settings, name, port, workers)


def _asyncio_run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def run_worker(
    data_dir: Path, settings: Settings, name: str, port: int, index: int, reuse_port: bool
) -> None:
    _asyncio_run(lambda: _worker_main(data_dir, settings, name, port, index, reuse_port))


async def _worker_main(
    data_dir: Path, settings: Settings, name: str, port: int, index: int, reuse_port: bool
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
                state_dir=state,
                node=node,
                cluster=cluster,
                ensure_bundle=ensure,
                release_bundle=release,
                access_log=access_path,
            ) as worker:
                # Worker N serves its counters on metrics_port + N.
                if settings.metrics_port:
                    REGISTRY.register(worker.ctx.stats)
                    serve_metrics(settings.metrics_port + index, settings.bind_host)
                tls = f", https on {worker.tls_port}" if worker.certs is not None else ""
                log.info(
                    "router worker %d serving http on %s:%d%s", index, worker.host, worker.port, tls
                )
                await stop.wait()
                log.info("router worker %d stopping", index)
        finally:
            for client in (images, controllers):
                if client is not None:
                    await client.close()


def _holders(node: Node, controllers: RpcClient) -> Callable[[str], Awaitable[list[Source]]]:
    """Runners holding a replica of a bundle, as a controller names them: the
    sources a bundle is fetched from when no builder can serve it."""

    async def holders(digest: str) -> list[Source]:
        return await ask_holders(controllers, digest, "", lambda ep: RpcClient(node, [ep]))

    return holders


def _probe(host: str, port: int) -> int:
    """Fail clearly if another process holds the port (SO_REUSEPORT would share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"router: cannot bind {host}:{port}: {exc.strerror}") from None
        return int(s.getsockname()[1])


def _supervise(data_dir: Path, settings: Settings, name: str, port: int, workers: int) -> None:
    port = _probe(settings.bind_host, port)
    if settings.router_tls_port:
        _probe(settings.bind_host, settings.router_tls_port)
    mp = multiprocessing.get_context("spawn")
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[int, Any] = {}
    failures: dict[int, int] = {}
    restart_at: dict[int, float] = {}
    started_at: dict[int, float] = {}

    def start(i: int) -> None:
        p = mp.Process(
            target=run_worker,
            args=(data_dir, settings, name, port, i, True),
            name=f"roost-router-{i}",
            daemon=False,
        )
        p.start()
        procs[i] = p
        started_at[i] = time.monotonic()

    try:
        for i in range(workers):
            start(i)
        log.info("router: %d workers on port %d", workers, port)
        while not stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for i, p in list(procs.items()):
                if p.is_alive():
                    continue
                if i not in restart_at:
                    if now - started_at[i] > 60.0:
                        failures[i] = 0  # it ran fine for a while: not a crash loop
                    failures[i] = failures.get(i, 0) + 1
                    delay = min(30.0, 0.5 * 2 ** (failures[i] - 1))
                    restart_at[i] = now + delay
                    log.error(
                        "router worker %d exited (%s); restarting in %.1fs", i, p.exitcode, delay
                    )
                elif now >= restart_at[i]:
                    del restart_at[i]
                    start(i)
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + GRACE_S
        for p in procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs.values():
            if p.is_alive():
                log.warning("router worker %s did not stop in time: killing it", p.pid)
                p.kill()
                p.join(5)
        for sig, handler in old.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, handler)
