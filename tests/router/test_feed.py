"""The route table arrives from controllers over real CURVE sockets: snapshot on
connect, deltas, resync after a gap, and the last table kept while every
controller is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.router.worker import RouterWorker
from roost.settings import Settings
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.keys import KeyPair, generate_keypair
from roost.wire.messages import AppRoute, Msg, Ok, RouteDelta, RouteSnapshot, RouteSnapshotRequest
from roost.wire.node import Node
from roost.wire.pubsub import Publisher
from roost.wire.rpc import RpcServer
from tests.router.conftest import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeController:
    """Serves RouteSnapshotRequest and publishes deltas, like a controller."""

    def __init__(self, key: KeyPair, router_key: bytes, rpc_port: int, pub_port: int) -> None:
        self.key = key
        self.router_key = router_key
        self.rpc_addr = f"tcp://127.0.0.1:{rpc_port}"
        self.pub_addr = f"tcp://127.0.0.1:{pub_port}"
        self.routes: dict[str, AppRoute] = {}
        self.version = 1
        self.snapshot_requests = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self.pub: Publisher | None = None

    async def _handle(self, msg: Msg) -> Msg:
        if isinstance(msg, RouteSnapshotRequest):
            self.snapshot_requests += 1
            return RouteSnapshot(version=self.version, routes=list(self.routes.values()))
        return Ok()

    async def start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        node = await self._stack.enter_async_context(Node(self.key, [self.router_key]))
        server = RpcServer(node, self.rpc_addr, self._handle)
        self.pub = Publisher(node, self.pub_addr)
        task = asyncio.get_running_loop().create_task(server.serve())

        async def stop_task() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop_task)
        self._stack.callback(self.pub.close)

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def change(
        self, upserts: list[AppRoute] = (), removals: list[str] = (), *, lose: bool = False
    ) -> None:  # type: ignore[assignment]
        base = self.version
        self.version += 1
        for r in upserts:
            self.routes[r.app] = r
        for name in removals:
            self.routes.pop(name, None)
        if not lose:
            assert self.pub is not None
            await self.pub.publish(
                "routes",
                RouteDelta(
                    base_version=base,
                    version=self.version,
                    upserts=list(upserts),
                    removals=list(removals),
                ),
            )


async def until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[FakeController, RouterWorker]]:
    ckey, rkey = generate_keypair(), generate_keypair()
    ctl = FakeController(ckey, rkey.public, free_port(), free_port())
    await ctl.start()
    config = ClusterConfig(
        endpoints={
            "controller": [Endpoint(ctl.rpc_addr, ckey.public_text)],
            "controller-pub": [Endpoint(ctl.pub_addr, ckey.public_text)],
        }
    )
    async with Node(rkey, []) as node:
        worker = RouterWorker(
            Settings(),
            host="127.0.0.1",
            port=0,
            node=node,
            cluster=config,
            drain_s=0.2,
            drain_idle_s=0.0,
            refresh_s=1.0,
        )
        async with worker:
            yield ctl, worker
    await ctl.stop()


async def status(worker: RouterWorker, host: str) -> tuple[int, str]:
    async with httpx.AsyncClient() as c:
        r = await c.get(f"http://127.0.0.1:{worker.port}/id", headers={"Host": host})
        return r.status_code, r.text


async def test_snapshot_then_deltas(backends: Any, cluster: Any) -> None:
    ctl, worker = cluster
    one, two = await backends("one"), await backends("two")
    await ctl.change([app("a", one)])

    async def a_served() -> bool:
        return await status(worker, "a.localhost") == (200, "one")

    await until(a_served)
    await ctl.change([app("b", two)])

    async def b_served() -> bool:
        return await status(worker, "b.localhost") == (200, "two")

    await until(b_served)
    await ctl.change(removals=["a"])

    async def a_gone() -> bool:
        return (await status(worker, "a.localhost"))[0] == 404

    await until(a_gone)
    assert worker.ctx.table.version == ctl.version


async def test_gap_triggers_a_resync(backends: Any, cluster: Any) -> None:
    ctl, worker = cluster
    one = await backends("one")
    await ctl.change([app("a", one)])

    async def synced() -> bool:
        return worker.ctx.table.version == ctl.version and await status(worker, "a.localhost") == (
            200,
            "one",
        )

    await until(synced)
    before = ctl.snapshot_requests
    await ctl.change([app("lost", one)], lose=True)  # this publication never arrives
    await ctl.change([app("c", one)])  # ...so this one does not chain: resync

    async def caught_up() -> bool:
        return worker.ctx.table.version == ctl.version

    await until(caught_up)
    assert ctl.snapshot_requests > before
    assert await status(worker, "lost.localhost") == (200, "one")
    assert await status(worker, "c.localhost") == (200, "one")


async def test_last_table_kept_while_controllers_are_down(backends: Any, cluster: Any) -> None:
    ctl, worker = cluster
    one = await backends("one")
    await ctl.change([app("a", one)])

    async def synced() -> bool:
        return await status(worker, "a.localhost") == (200, "one")

    await until(synced)
    await ctl.stop()
    # Nothing to talk to: requests keep flowing on the last table.
    for _ in range(5):
        assert await status(worker, "a.localhost") == (200, "one")
        await asyncio.sleep(0.1)
    # The controller comes back with changes made meanwhile (a restart: no delta chain).
    ctl.routes["b"] = app("b", one)
    ctl.version += 5
    await ctl.start()
    await ctl.change([app("c", one)])

    async def caught_up() -> bool:
        return worker.ctx.table.version == ctl.version

    await until(caught_up, timeout=20)
    assert await status(worker, "b.localhost") == (200, "one")
