"""The builder daemon: builder RPC (BuildRequest) and image store RPC (chunks).

`run(data_dir, settings, name)` binds the "builder" and "images" endpoints
that carry this daemon's key, sends build logs and results to the
controllers, and runs until SIGTERM/SIGINT; then it cancels running builds
(their processes are killed, their files removed) and returns.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from roost.builder.firewall import BuilderFirewall
from roost.builder.layerpack import Storing, serve_while_storing
from roost.builder.manager import BuildManager
from roost.builder.storegc import StoreCollector, ready_layer_blobs
from roost.builder.workspace import Workspace
from roost.daemonize import run_daemon
from roost.images.serve import handle_image_request
from roost.images.store import ImageStore
from roost.metrics import serve as serve_metrics
from roost.settings import Settings
from roost.wire.bootstrap import open_node, own_endpoints
from roost.wire.cluster import ClusterConfig
from roost.wire.dispatch import Handlers, on, pong
from roost.wire.identity import load_peers
from roost.wire.messages import BuildAccepted, BuildRequest, ImageChunkRequest, Msg
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer

log = logging.getLogger("roost.builder")


def builder_handlers(manager: BuildManager) -> Handlers:
    """The table of the builder's "builder" endpoints."""

    async def build(msg: BuildRequest) -> Msg:
        if manager.submit(msg):
            log.info("build %s of %s accepted (%d bytes)", msg.build_id, msg.app, len(msg.archive))
        return BuildAccepted(build_id=msg.build_id)

    return Handlers("builder", [on(BuildRequest, build), pong("builder")])


def images_handlers(store: ImageStore, storing: dict[str, Storing] | None = None) -> Handlers:
    """The table of its "images" endpoints (the image store).

    A blob named but still being stored (`Workspace.storing`: a fresh
    layer's, builder/layerpack.py) is served from what is written of it: a
    copy asked for as its build ends streams while the pack goes on.
    """

    async def chunk(msg: ImageChunkRequest) -> Msg:
        entry = (storing or {}).get(msg.digest)
        if entry is not None and (early := await serve_while_storing(entry, msg)) is not None:
            return early
        return await asyncio.to_thread(handle_image_request, store, msg)

    return Handlers("image store", [on(ImageChunkRequest, chunk), pong("images")])


async def serve(data_dir: Path, settings: Settings, name: str, stop: asyncio.Event) -> None:
    serve_metrics(settings.metrics_port, settings.bind_host)
    ws = await Workspace.open(data_dir / "builder", settings)
    log.info(
        "builder ready: python %s (%s), build user %s%s",
        ws.interp.version, ws.interp.path, ws.user.name,
        "" if ws.user.dropped else " (not root: no privilege separation)",
    )  # fmt: skip
    node, cluster = open_node(data_dir, name)
    members = [(w.role, w.host) for w in load_peers(data_dir / "keys").values()]
    try:
        firewall = await BuilderFirewall.start(settings, cluster, members)
    except BaseException:
        ws.close()  # (an Unavailable, which ends the builder with its message)
        raise
    try:
        await _serve(ws, node, cluster, name, stop)
    finally:
        # Also when the node or a server fails to open: no table left behind.
        ws.close()
        await firewall.close()
    log.info("builder stopped")


async def _serve(
    ws: Workspace, node: Node, cluster: ClusterConfig, name: str, stop: asyncio.Event
) -> None:
    async with node:
        controllers = cluster.of("controller")
        client = RpcClient(node, controllers) if controllers else None

        async def send(msg: Msg) -> None:
            if client is None:
                raise RuntimeError("no controller endpoint in cluster.json")
            await client.call(msg, timeout=5.0, tries=2)

        async def ask(msg: Msg) -> Msg:
            if client is None:
                raise RuntimeError("no controller endpoint in cluster.json")
            # Provisioning a service may take the servicehost up to 40 s.
            return await client.call(msg, timeout=90.0, tries=2)

        me = node.identity
        collector = (
            StoreCollector(ws.store, ask, me.host, lambda: ready_layer_blobs(ws))
            if client is not None and me is not None
            else None
        )
        manager = BuildManager(ws, send, ask=ask, collector=collector)
        servers = [
            RpcServer(node, ep.address, builder_handlers(manager))
            for ep in own_endpoints(cluster, "builder", node)
        ] + [
            RpcServer(node, ep.address, images_handlers(ws.store, ws.storing))
            for ep in own_endpoints(cluster, "images", node)
        ]
        if not servers:
            log.warning("no builder/images endpoint carries key %r: serving nothing", name)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(s.serve()) for s in servers]
                tasks.append(tg.create_task(manager.run()))
                await stop.wait()
                for t in tasks:
                    t.cancel()
        finally:
            if client is not None:
                await client.close()


def run(data_dir: Path, settings: Settings, name: str = "builder") -> None:
    """Run the builder until SIGTERM/SIGINT, then shut down cleanly."""
    run_daemon("builder", lambda stop: serve(data_dir, settings, name, stop))
