"""Two real servicehost daemons on namespace hosts running an app's Redis as
a pair (issue 16): the first makes the master and answers with the copy the
second needs; the second makes the replica; each runs a sentinel, and
`roost sentinel` runs the third on another host. Their status pushes say who is master, replica and
what is wrong. The master's host dies under an app writing through the
data proxy: the replica takes over, nothing acknowledged is lost, the
survivor reports it has no replica; the dead host's daemon, started again,
starts its copy as the new master's replica, and the problem clears.
Removal makes the sentinels forget the master first."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest

from roost.servicehost import redispairs, sentinelproc
from roost.servicehost.sentinel import masters_seen
from roost.servicehost.state import Service
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity, load_peers, save_peers
from roost.wire.keys import KeyPair
from roost.wire.messages import (
    Msg,
    ServerStatus,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceHostStatusRequest,
    ServiceProvision,
    ServiceRemoved,
)
from roost.wire.node import Node
from roost.wire.rpc import RpcClient
from tests.cluster.harness import Host, Network
from tests.cluster.redispair import (
    SENTINEL_PORT,
    RedisPair,
    failover_through_proxy,
    until,
)

pytestmark = pytest.mark.cluster

APP = "blog"
RPC_PORT = 5700
SENTINEL_PASSWORD = "the-clusters-sentinel-password"


class Servicehosts:
    """Two servicehosts' data directories (keys, address book, sentinel key)
    and a controller key both admit, which the test speaks with."""

    def __init__(self, net: Network, hosts: list[Host], controller: Host) -> None:
        self.net = net
        self.hosts = hosts
        self.controller_keys = ensure_member(
            net.base / "controller-keys", "controller", identity("controller", controller.ip)
        )
        endpoints: dict[str, list[Endpoint]] = {"servicehost": [], "controller": []}
        endpoints["controller"].append(
            Endpoint(f"tcp://{controller.ip}:{RPC_PORT}", self.controller_keys.public_text)
        )
        self.endpoint: dict[str, Endpoint] = {}
        for h in hosts:
            keys = h.data / "keys"
            pair = ensure_member(keys, "servicehost", identity("servicehost", h.ip))
            peers = load_peers(keys)
            peers[self.controller_keys.public] = identity("controller", controller.ip)
            save_peers(keys, peers)
            (keys / redispairs.SENTINEL_KEY).write_text(SENTINEL_PASSWORD + "\n")
            ep = Endpoint(f"tcp://{h.ip}:{RPC_PORT}", pair.public_text)
            endpoints["servicehost"].append(ep)
            self.endpoint[h.name] = ep
        for h in [*hosts, controller]:
            ClusterConfig(endpoints=endpoints).save(h.data / "cluster.json")
        keys = controller.data / "keys"
        keys.mkdir(mode=0o700)
        (keys / redispairs.SENTINEL_KEY).write_text(SENTINEL_PASSWORD + "\n")

    def start(self, h: Host, role: str = "servicehost") -> None:
        env = {**os.environ, "ROOST_LOG_LEVEL": "INFO", "ROOST_SENTINEL_PORT": str(SENTINEL_PORT)}
        argv = [sys.executable, "-m", "roost", "--data", str(h.data), role]
        self.net.spawn(h, argv, env, h.data.parent / f"{role}.log")

    @asynccontextmanager
    async def client(self, h: Host) -> AsyncIterator[RpcClient]:
        keys: KeyPair = self.controller_keys
        async with Node(keys, []) as node:
            c = RpcClient(node, [self.endpoint[h.name]])
            try:
                yield c
            finally:
                await c.close()

    async def call(self, h: Host, msg: Msg, timeout: float = 60.0) -> Msg:
        async with self.client(h) as c:
            return await c.call(msg, timeout=timeout, tries=1)

    async def redis_row(self, h: Host) -> ServerStatus | None:
        try:
            st = await self.call(h, ServiceHostStatusRequest(), timeout=5)
        except Exception:
            return None
        assert isinstance(st, ServiceHostStatus)
        return next((s for s in st.servers if s.kind == "redis" and s.app == APP), None)

    async def postgres_up(self, h: Host) -> bool:
        try:
            st = await self.call(h, ServiceHostStatusRequest(), timeout=5)
        except Exception:
            return False
        assert isinstance(st, ServiceHostStatus)
        return any(s.app == "" and s.kind == "postgres" and s.state == "up" for s in st.servers)


def tail(h: Host) -> str:
    logs = sorted(h.data.parent.glob("*.log"))
    return "\n".join(p.read_text(errors="replace")[-6000:] for p in logs)


@asynccontextmanager
async def three_hosts(network: Network) -> AsyncIterator[tuple[Servicehosts, Host, Host, Host]]:
    """Two servicehosts and a controller's host with `roost sentinel`, up;
    their logs printed when the test fails."""
    os.chmod(network.base, 0o711)  # the service user walks down to each host's data
    sh1, sh2, ctl = (network.add_host(n) for n in ("sh1", "sh2", "ctl"))
    for h in (sh1, sh2, ctl):
        h.data.mkdir(parents=True)
        os.chmod(h.data.parent, 0o711)
    hosts = Servicehosts(network, [sh1, sh2], ctl)
    try:
        await start_all(hosts, sh1, sh2, ctl)
        yield hosts, sh1, sh2, ctl
    except BaseException:
        print("\n".join(f"--- {h.name}\n{tail(h)}" for h in (sh1, sh2, ctl)))
        raise


async def start_all(hosts: Servicehosts, sh1: Host, sh2: Host, ctl: Host) -> None:
    for h in (sh1, sh2):
        hosts.start(h)
    hosts.start(ctl, "sentinel")  # the third sentinel, on a controller's host
    for h in (sh1, sh2):
        await until(partial(hosts.postgres_up, h), 180, f"{h.name}'s servicehost")


async def provision_pair(
    network: Network, hosts: Servicehosts, sh1: Host, sh2: Host, ctl: Host
) -> RedisPair:
    """The app's Redis made on sh1 and copied to sh2, as the controller does."""

    first = await hosts.call(sh1, ServiceProvision(app=APP, kind="redis"))
    assert isinstance(first, ServiceCredentials) and first.copy is not None
    assert first.copy.master_host == sh1.ip
    second = await hosts.call(sh2, ServiceProvision(app=APP, kind="redis", copy_of=first.copy))
    assert isinstance(second, ServiceCredentials)
    assert (second.host, second.port, second.password) == (sh2.ip, first.port, first.password)
    # Asked again, the same answer (idempotent, as every provision).
    again = await hosts.call(sh2, ServiceProvision(app=APP, kind="redis", copy_of=first.copy))
    assert isinstance(again, ServiceCredentials) and again.port == second.port

    svc = Service(
        app=APP, kind="redis", port=first.port, password=first.password,
        admin_password=first.copy.admin_password,
    )  # fmt: skip
    pair = RedisPair(network, sh1, sh2, ctl, svc=svc, sentinel_password=SENTINEL_PASSWORD)
    await until(pair._ready, 60, "the replica streaming and three sentinels acquainted")
    await until(partial(healthy, hosts, pair, sh1, sh2), 30, "status saying master and replica")
    return pair


async def healthy(hosts: Servicehosts, pair: RedisPair, master: Host, replica: Host) -> bool:
    """Both copies report their role, each other as peer, and no problem."""
    a, b = await hosts.redis_row(master), await hosts.redis_row(replica)
    port = pair.svc.port
    return (
        a is not None and b is not None
        and (a.redis_role, a.redis_problem, b.redis_role, b.redis_problem)
        == ("master", "", "replica", "")
        and a.redis_peer == f"{replica.ip}:{port}" and b.redis_peer == f"{master.ip}:{port}"
    )  # fmt: skip


async def test_two_servicehosts_run_an_apps_redis_as_a_sentinel_watched_pair(
    network: Network, tmp_path: Path
) -> None:
    async with three_hosts(network) as (hosts, sh1, sh2, ctl):
        pair = await provision_pair(network, hosts, sh1, sh2, ctl)
        await _failover(hosts, pair, tmp_path)


async def _failover(hosts: Servicehosts, pair: RedisPair, tmp_path: Path) -> None:
    sh1, sh2 = pair.sh1, pair.sh2
    failover = await failover_through_proxy(pair, tmp_path / "proxy")
    print(f"redis writes resumed {failover.unavailable_s:.1f} s after the master's host died")
    assert failover.acked and not failover.lost

    async def survivor_alone() -> bool:
        row = await hosts.redis_row(sh2)
        return row is not None and row.redis_role == "master" and "no replica" in row.redis_problem

    await until(survivor_alone, 30, "the survivor reporting it has no replica")

    # The dead host's daemon again: its copy follows the new master.
    hosts.start(sh1)
    healed = partial(healthy, hosts, pair, sh2, sh1)
    await until(healed, 120, "the old master back as the new one's replica")
    last = failover.acked[-1]
    async with pair.admin(pair.addr(sh1)) as r:
        assert await r.call("GET", f"k{last}") == str(last)

    # Removal: the sentinels forget the master before any copy stops.
    for h in (sh1, sh2):
        gone = await hosts.call(h, ServiceDeprovision(app=APP, kind="redis"), timeout=120)
        assert isinstance(gone, ServiceRemoved) and gone.backup_path
    for addr in pair.sentinels:
        async with sentinelproc.client(addr, SENTINEL_PASSWORD) as r:
            assert pair.name not in masters_seen(await r.call("SENTINEL", "MASTERS"))


async def aof_on_disk(pair: RedisPair, host: Host) -> None:
    """Rewrite `host`'s copy's AOF from what it holds now and return once
    that rewrite has finished: its new base file is fsynced before the
    manifest names it."""
    addr = pair.addr(host)

    async def idle() -> bool:
        now = await pair.info(addr, "persistence")
        return now["aof_rewrite_in_progress"] == "0" and now["aof_rewrite_scheduled"] == "0"

    await until(idle, 60, f"{host.name}'s running AOF rewrite to end")  # one begun before
    async with pair.admin(addr) as r:
        await r.call("BGREWRITEAOF")
    await until(idle, 60, f"{host.name}'s AOF rewrite")
    assert (await pair.info(addr, "persistence"))["aof_last_bgrewrite_status"] == "ok"


async def test_every_host_restarted_at_once_brings_the_pair_back_with_its_data(
    network: Network,
) -> None:
    async with three_hosts(network) as (hosts, sh1, sh2, ctl):
        pair = await provision_pair(network, hosts, sh1, sh2, ctl)
        async with pair.admin(pair.addr(sh1)) as r:
            for n in range(200):
                await r.call("SET", f"k{n}", str(n))
            assert int(await r.call("WAIT", "1", "5000")) == 1
        # On disk on both: a copy's AOF is fsynced once a second (appendfsync
        # everysec, Redis's default: a power cut may take the last second of
        # writes, which no copy then has), so each rewrites its AOF, which is
        # fsynced before it replaces the old one.
        for h in (sh1, sh2):
            await aof_on_disk(pair, h)
        # A power cut of every host at once (servers and sentinels with them).
        for h in (sh1, sh2, ctl):
            await asyncio.to_thread(network.kill_host, h)
        await start_all(hosts, sh1, sh2, ctl)
        # Each copy in the role it last had (no sentinel agreed yet when they
        # started), the sentinels from their own files: the same pair, healthy.
        await until(partial(healthy, hosts, pair, sh1, sh2), 120, "the pair back, healthy")
        for h in (sh1, sh2):
            async with pair.admin(pair.addr(h)) as r:
                values = await r.call("MGET", *(f"k{n}" for n in range(200)))
            assert values == [str(n) for n in range(200)], f"{h.name} lost data"
        assert await pair.master() == pair.addr(sh1)
