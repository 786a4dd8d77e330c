"""Runners made of the daemon's own parts (copy store, image cache, RPC
handlers) on real CURVE nodes, with a builder's image store and a real
controller service on SQLite: for the image copy and release phase tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import Store
from roost.images.cache import ImageCache
from roost.images.serve import handle_image_request
from roost.images.sources import RemoteStore
from roost.images.store import ImageStore
from roost.runner.archive import AppDirs
from roost.runner.copies import Copies, CopyDirectory
from roost.runner.images import CachedImages
from roost.runner.layout import Layout
from roost.runner.rpcserver import RunnerRpc
from roost.sessions.server import ExecSessions
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.keys import KeyPair, generate_keypair
from roost.wire.messages import BuildResult, Error, Heartbeat, ImageChunkRequest, Msg
from roost.wire.node import Node
from roost.wire.rpc import RpcClient, RpcServer
from tests.migrated import migrated_sqlite

VENV = {"bin/tool": b"#!/bin/sh\necho tool\n", "pyvenv.cfg": b"relocatable = true\n"}


SPEC = AppSpec(processes={"web": ProcessSpec(name="web", kind="command", command="x", web=True)})


@dataclass
class Runner:
    name: str
    copies: Copies
    images: CachedImages
    cache: ImageCache
    address: str


@dataclass
class World:
    tmp: Path
    keys: dict[str, KeyPair]
    nodes: dict[str, Node]
    stack: contextlib.AsyncExitStack
    builder_store: ImageStore
    controller: Controller
    service: ControllerService
    store: Store  # the controller's tables, for the test's own reads and writes
    servers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    clients: list[RpcClient] = field(default_factory=list)

    def client(self, on: str, *eps: Endpoint) -> RpcClient:
        c = RpcClient(self.nodes[on], list(eps))
        self.clients.append(c)
        return c

    def serve(self, name: str, handler: Callable[[Msg], object]) -> str:
        server = RpcServer(self.nodes[name], "tcp://127.0.0.1:*", handler)  # type: ignore[arg-type]
        self.servers[name] = asyncio.create_task(server.serve())
        self.endpoints[name] = Endpoint(server.address, self.keys[name].public_text)
        return server.address

    async def stop(self, name: str) -> None:
        task = self.servers.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def runner(
        self,
        name: str,
        max_bytes: int = 1 << 30,
        clock: Callable[[], float] = time.time,
        sessions: ExecSessions | None = None,
    ) -> Runner:
        root = self.tmp / name
        builders = [RemoteStore("builder", self.client(name, self.endpoints["builder"]))]
        directory = CopyDirectory(
            self.client(name, self.endpoints["controller"]),
            name,
            lambda ep: RpcClient(self.nodes[name], [ep]),
        )
        copies = Copies(ImageStore(root / "store"), max_bytes, builders, directory, clock)
        cache = ImageCache(root / "cache", 1 << 30)
        images = CachedImages(cache, copies)
        rpc = RunnerRpc(Layout(root), images, sessions or ExecSessions(), None, copies)
        address = self.serve(name, rpc.handlers(AppDirs(Layout(root), 3600)))
        # Its heartbeat: the controller learns its RPC endpoint (as from a real runner).
        self.controller.soft.record(
            Heartbeat(
                host_id=name,
                hostname=name,
                rpc_endpoint=address,
                rpc_key=self.keys[name].public_text,
            ),
            time.monotonic(),
        )
        return Runner(name, copies, images, cache, address)


@contextlib.asynccontextmanager
async def world(tmp_path: Path, hosts: tuple[str, ...]) -> AsyncIterator[World]:
    names = ("builder", "controller", *hosts)
    keys = {n: generate_keypair() for n in names}
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "t")
    async with contextlib.AsyncExitStack() as stack:
        nodes = {
            n: await stack.enter_async_context(Node(keys[n], [k.public for k in keys.values()]))
            for n in names
        }
        w = World(
            tmp=tmp_path,
            keys=keys,
            nodes=nodes,
            stack=stack,
            builder_store=ImageStore(tmp_path / "builder"),
            controller=controller,
            service=ControllerService(
                controller, None, lambda ep: RpcClient(nodes["controller"], [ep])
            ),
            store=store,
        )

        async def builder(msg: Msg) -> Msg:
            if isinstance(msg, ImageChunkRequest):
                return handle_image_request(w.builder_store, msg)
            return Error(message="no")

        w.serve("builder", builder)
        w.serve("controller", w.service.handle)
        try:
            yield w
        finally:
            for c in w.clients:
                await c.close()
            for name in list(w.servers):
                await w.stop(name)
            await controller.store.aclose()


def finished_build(w: World, image: str, build_id: str, static: str = "") -> BuildResult:
    """A finished build of app "rep" (created on first use) as the builder reports it."""
    store = w.store
    if not any(a.name == "rep" for a in store.apps()):
        store.create_app("rep", store.create_account("rep@example.com"))
    store.create_build(build_id, store.app("rep").id)
    return BuildResult(
        build_id=build_id,
        app="rep",
        ok=True,
        image_digest=image,
        static_digest=static,
        spec=SPEC,
    )


def hold_lease(c: Controller) -> None:
    """This controller holds the scheduler lease and knows who is alive (as
    core.Controller's lease loop leaves it, a grace period after taking it)."""
    now = time.monotonic()
    c.fence, c.lease_valid_until, c.leader_since = 1, now + 3600, now - 3600
