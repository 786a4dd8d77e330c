"""Roles over real CURVE: who may send what, and who may read route tables.

Every daemon's Node knows each admitted key as a role on a host; these tests
build Nodes as `open_node` does (from a data directory's keys and peers.json)
and attack with the keys another role holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roost.proc.exits import ConfigError
from roost.wire.bootstrap import open_node
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity, load_peers
from roost.wire.keys import KeyPair, load_keypair
from roost.wire.messages import (
    Msg,
    Ok,
    Ping,
    RouteDelta,
    ServiceDeprovision,
    ServiceProvision,
)
from roost.wire.node import Node
from roost.wire.pubsub import Publisher, Subscriber
from roost.wire.rpc import RemoteError, RpcClient, RpcServer


def _members(keys: Path, *roles: str) -> dict[str, KeyPair]:
    return {role: ensure_member(keys, role, identity(role, f"{role}-host")) for role in roles}


def _node(keys: Path, name: str) -> Node:
    return Node(load_keypair(keys, name), load_peers(keys))


async def test_a_runner_key_cannot_send_what_only_a_controller_may(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pairs = _members(keys, "servicehost", "controller", "runner")
    handled: list[Msg] = []

    async def handler(msg: Msg) -> Msg:
        handled.append(msg)
        return Ok()

    async with (
        _node(keys, "servicehost") as sn,
        _node(keys, "runner") as rn,
        _node(keys, "controller") as cn,
    ):
        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        task = asyncio.create_task(server.serve())
        ep = Endpoint(server.address, pairs["servicehost"].public_text)
        runner, controller = RpcClient(rn, [ep]), RpcClient(cn, [ep])
        try:
            drop = ServiceDeprovision(app="victim", kind="postgres")
            with pytest.raises(RemoteError, match=r"a runner .*may not send ServiceDeprovision"):
                await runner.call(drop, timeout=5, tries=1)
            assert handled == []  # refused before the handler
            assert await runner.call(Ping(), timeout=5) == Ok()  # anyone may ping
            assert await controller.call(drop, timeout=5) == Ok()
            assert handled == [Ping(), drop]
        finally:
            await runner.close()
            await controller.close()
            task.cancel()


async def test_open_node_admits_only_listed_keys_as_their_role(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pairs = _members(keys, "servicehost", "controller")
    ClusterConfig().save(tmp_path / "cluster.json")
    node, _ = open_node(tmp_path, "servicehost")
    assert node.identity == identity("servicehost", "servicehost-host")
    assert node.caller("controller:controller-host") is not None
    who = node.caller("controller:controller-host")
    assert who is not None and who.key == pairs["controller"].public_text
    assert node.caller("controller:elsewhere") is None
    node.close()


def test_a_broken_address_book_or_key_is_a_configuration_error(tmp_path: Path) -> None:
    _members(tmp_path / "keys", "servicehost")
    with pytest.raises(ConfigError, match=r"cluster.json cannot be used: .*No such file"):
        open_node(tmp_path, "servicehost")
    (tmp_path / "cluster.json").write_text('{"endpoints": ')
    with pytest.raises(ConfigError, match=r"cluster.json cannot be used: .*truncated"):
        open_node(tmp_path, "servicehost")
    ClusterConfig().save(tmp_path / "cluster.json")
    with pytest.raises(ConfigError, match=r"keys in .* cannot be used: .*router.key_secret"):
        open_node(tmp_path, "router")


async def test_route_publications_reach_routers_only(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pairs = _members(keys, "controller", "router", "runner")
    async with (
        _node(keys, "controller") as pn,
        _node(keys, "router") as rn,
        _node(keys, "runner") as xn,
    ):
        pub = Publisher(pn, "tcp://127.0.0.1:*")
        ep = Endpoint(pub.address, pairs["controller"].public_text)
        router, runner = Subscriber(rn, [ep], ["routes"]), Subscriber(xn, [ep], ["routes"])
        try:
            got: dict[str, list[Msg]] = {"router": [], "runner": []}
            for i in range(100):
                await pub.publish("routes", RouteDelta(base_version=i, version=i + 1))
                for name, sub in (("router", router), ("runner", runner)):
                    got[name] += [m for _, m, _ in await sub.recv(timeout=0.02)]
                if got["router"]:
                    break
            assert got["router"], "the router never got a publication"
            # A runner (tenants' code runs there) never reads route tables:
            # they carry every app's TLS private keys.
            assert got["runner"] == []
        finally:
            router.close()
            runner.close()
            pub.close()


async def test_a_subscriber_takes_routes_only_from_a_controller_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pairs = _members(keys, "controller", "router", "runner")
    async with _node(keys, "router") as rn:
        fake = Endpoint("tcp://127.0.0.1:1", pairs["runner"].public_text)
        with pytest.raises(ValueError, match="may not publish routes"):
            Subscriber(rn, [fake], ["routes"])
        Subscriber(
            rn, [Endpoint("tcp://127.0.0.1:1", pairs["controller"].public_text)], ["routes"]
        ).close()


async def test_a_provision_sent_as_a_gateway_is_refused_with_the_role_named(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pairs = _members(keys, "servicehost", "gateway")

    async def handler(msg: Msg) -> Msg:
        raise AssertionError("the handler must not run")

    async with _node(keys, "servicehost") as sn, _node(keys, "gateway") as gn:
        server = RpcServer(sn, "tcp://127.0.0.1:*", handler)
        task = asyncio.create_task(server.serve())
        client = RpcClient(gn, [Endpoint(server.address, pairs["servicehost"].public_text)])
        try:
            with pytest.raises(RemoteError, match=r"gateway:gateway-host.*only controller"):
                await client.call(ServiceProvision(app="x", kind="redis"), timeout=5, tries=1)
        finally:
            await client.close()
            task.cancel()
