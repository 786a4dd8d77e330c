"""The controller's wire service behind real CURVE keys: a runner speaks only
as itself, and only a runner heartbeats.

The ControllerService is the daemon's (real SQLite state database); its RPC
server's Node is built as `open_node` builds it, from the data directory's
keys and peers.json.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.cluster import Endpoint
from roost.wire.identity import ensure_member, identity, load_peers
from roost.wire.keys import load_keypair
from roost.wire.messages import Heartbeat, HeartbeatReply, ImageRetain, ImageRetainRequest
from roost.wire.node import Node
from roost.wire.rpc import RemoteError, RpcClient, RpcServer
from tests.migrated import migrated_sqlite

HOSTS = {"runner-a": "10.0.0.21", "runner-b": "10.0.0.22"}


@asynccontextmanager
async def _controller(
    tmp_path: Path,
) -> AsyncIterator[tuple[Controller, Callable[[str], RpcClient]]]:
    keys = tmp_path / "keys"
    ctl = ensure_member(keys, "controller", identity("controller", "10.0.0.11"))
    for name, host in HOSTS.items():
        ensure_member(keys, name, identity("runner", host))
    ensure_member(keys, "gateway", identity("gateway", "10.0.0.41"))
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "test")
    controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), None)
    service = ControllerService(controller, builders=None)
    peers = load_peers(keys)
    nodes: list[Node] = []
    clients: list[RpcClient] = []
    async with Node(load_keypair(keys, "controller"), peers) as sn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", service.handle)
        task = asyncio.create_task(server.serve())

        def client_as(name: str) -> RpcClient:
            node = Node(load_keypair(keys, name), peers)
            node.start()
            nodes.append(node)
            clients.append(RpcClient(node, [Endpoint(server.address, ctl.public_text)]))
            return clients[-1]

        try:
            yield controller, client_as
        finally:
            for c in clients:
                await c.close()
            for n in nodes:
                await n.aclose()
            task.cancel()
            await controller.store.aclose()


async def test_a_runner_cannot_heartbeat_as_another_host(tmp_path: Path) -> None:
    async with _controller(tmp_path) as (controller, client_as):
        a = client_as("runner-a")
        forged = Heartbeat(host_id="10.0.0.22", hostname="b", memory_mb=1 << 20)
        with pytest.raises(RemoteError, match=r"runner:10\.0\.0\.21 may not heartbeat as host"):
            await a.call(forged, timeout=5, tries=1)
        assert not controller.soft.alive("10.0.0.22")  # B was never marked up by A
        # Its own heartbeat, with its own key for its endpoint, is taken.
        own = Heartbeat(host_id="10.0.0.21", hostname="a", rpc_key=a_key(tmp_path))
        assert isinstance(await a.call(own, timeout=5), HeartbeatReply)
        assert controller.soft.alive("10.0.0.21")
        # B's own key speaks for B.
        b = client_as("runner-b")
        await b.call(Heartbeat(host_id="10.0.0.22", hostname="b"), timeout=5)
        assert controller.soft.alive("10.0.0.22")


async def test_a_runner_cannot_drop_another_hosts_copies(tmp_path: Path) -> None:
    async with _controller(tmp_path) as (controller, client_as):
        await controller.store.add_copy("sha256:" + "1" * 64, "10.0.0.22")
        a = client_as("runner-a")
        with pytest.raises(RemoteError, match="may not speak for the copies"):
            await a.call(ImageRetainRequest(host_id="10.0.0.22", held=[]), timeout=5, tries=1)
        assert await controller.store.host_copies("10.0.0.22") == {"sha256:" + "1" * 64}
        reply = await client_as("runner-b").call(
            ImageRetainRequest(host_id="10.0.0.22", held=[]), timeout=5
        )
        assert isinstance(reply, ImageRetain)


async def test_only_runners_heartbeat(tmp_path: Path) -> None:
    async with _controller(tmp_path) as (controller, client_as):
        gw = client_as("gateway")
        with pytest.raises(RemoteError, match=r"a gateway .* may not send Heartbeat"):
            await gw.call(Heartbeat(host_id="10.0.0.41", hostname="g"), timeout=5, tries=1)
        assert controller.soft.alive_hosts() == []


def a_key(tmp_path: Path) -> str:
    return load_keypair(tmp_path / "keys", "runner-a").public_text
