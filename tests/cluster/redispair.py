"""An app's Redis pair (a master and its replica) and three sentinels on
namespace hosts, for tests/cluster/test_redis_sentinel.py and
bench/stateful_failover_redis.py.

Every configuration comes from the servicehost's own renderers (redis.py's
render_conf with redisrepl's lines, sentinel.py's render_conf) and the
masters are registered by sentinelproc.register, so what is tested is what
a servicehost writes. The servers run as root here, straight from
redis-server: the servicehost's supervision of them is tested on its own.

`Writer` is an app writing through one address, the runner-local data
proxy (runner/dataproxy.py: HAProxy sending each connection to the copy
that answers role:master), connecting again on any error; each write is
followed by WAIT 1, and only a write the replica acknowledged counts as
kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from roost.runner.dataproxy import DataProxy, ProxyListener, ProxyServer
from roost.servicehost import redisrepl, sentinelproc
from roost.servicehost.host import free_port
from roost.servicehost.redis import ADMIN_USER, render_conf
from roost.servicehost.redisrepl import Replication
from roost.servicehost.resp import RedisAdmin, RedisError, parse_info
from roost.servicehost.sentinel import Monitor, SentinelSpec, master_name
from roost.servicehost.sentinel import render_conf as sentinel_conf
from roost.servicehost.state import Service
from tests.cluster.harness import Host, Network

APP = "blog"
PORT = 7001
SENTINEL_PORT = 26379
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
ERRORS = (OSError, RedisError, TimeoutError, asyncio.IncompleteReadError)

Address = tuple[str, int]
T = TypeVar("T")


def redis_bin() -> str:
    for d in ENV["PATH"].split(":"):
        if os.access(f"{d}/redis-server", os.X_OK):
            return f"{d}/redis-server"
    raise RuntimeError("redis-server is not installed (apt-get install redis-server)")


@dataclass
class RedisPair:
    net: Network
    sh1: Host  # the master at first
    sh2: Host  # its replica
    third: Host  # a sentinel only (the controller's host in a cluster)
    svc: Service = field(
        default_factory=lambda: Service(
            app=APP,
            kind="redis",
            port=PORT,
            password="app-pw",
            memory_mb=64,
            admin_password="admin-pw",
            backup_password="backup-pw",
        )
    )
    replica_password: str = "replica-pw"
    sentinel_password: str = "sentinel-pw"

    @property
    def name(self) -> str:
        return master_name(APP)

    @property
    def sentinels(self) -> list[Address]:
        return [(h.ip, SENTINEL_PORT) for h in (self.sh1, self.sh2, self.third)]

    def addr(self, host: Host) -> Address:
        return (host.ip, self.svc.port)

    def start_redis(self, host: Host, master: Address | None) -> None:
        d = host.data / "redis"
        d.mkdir(parents=True, exist_ok=True)
        repl = Replication(host.ip, self.replica_password, master)
        conf = render_conf(self.svc, d, ["127.0.0.1", host.ip], replication=repl)
        (d / "redis.conf").write_text(conf)
        self.net.spawn(host, [redis_bin(), str(d / "redis.conf")], ENV, host.data / "redis.log", d)

    def start_sentinel(self, host: Host) -> None:
        d = host.data / "sentinel"
        d.mkdir(parents=True, exist_ok=True)
        spec = SentinelSpec(
            SENTINEL_PORT, ["127.0.0.1", host.ip], host.ip, self.sentinel_password, d
        )
        conf = d / "sentinel.conf"
        if not conf.exists():  # Sentinel's own memory once it runs (sentinel.py)
            conf.write_text(sentinel_conf(spec))
        argv = [redis_bin(), str(conf), "--sentinel"]
        self.net.spawn(host, argv, ENV, host.data / "sentinel.log", d)

    def admin(self, addr: Address) -> RedisAdmin:
        return RedisAdmin(addr[0], addr[1], ADMIN_USER, self.svc.admin_password, 2.0)

    async def info(self, addr: Address, section: str) -> dict[str, str]:
        async with self.admin(addr) as r:
            return parse_info(await r.call("INFO", section))

    async def register(self) -> dict[Address, str]:
        master = self.addr(self.sh1)
        monitor = Monitor(self.name, master[0], master[1], ADMIN_USER, self.svc.admin_password)
        return await sentinelproc.register(self.sentinels, self.sentinel_password, [monitor])

    async def start(self, timeout: float = 60.0) -> None:
        """Both copies and three sentinels up, the replica streaming, and
        every sentinel knowing the other two (a failover needs them)."""
        self.start_redis(self.sh1, None)
        self.start_redis(self.sh2, self.addr(self.sh1))
        for h in (self.sh1, self.sh2, self.third):
            self.start_sentinel(h)
        await until(self._registered, timeout, "the sentinels to take the master")
        await until(self._ready, timeout, "the replica streaming and the sentinels acquainted")

    async def _registered(self) -> bool:
        return not await self.register()

    async def _ready(self) -> bool:
        try:
            info = await self.info(self.addr(self.sh1), "replication")
            if "state=online" not in info.get("slave0", ""):
                return False
            for s in self.sentinels:
                async with sentinelproc.client(s, self.sentinel_password) as r:
                    flat = await r.call("SENTINEL", "MASTER", self.name)
                fields = dict(zip(flat[::2], flat[1::2], strict=False))
                if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                    return False
        except ERRORS:
            return False
        return True

    async def rejoined(self, host: Host) -> bool:
        """Is `host`'s copy a replica streaming from its master?"""
        try:
            view = redisrepl.read_view(await self.info(self.addr(host), "replication"))
        except ERRORS:
            return False
        return view.role == "slave" and view.link_up

    async def master(self) -> Address | None:
        return await sentinelproc.ask_master(self.sentinels, self.sentinel_password, self.name)


async def until(
    pred: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Await `pred()` until it is truthy (its value), or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class Writer:
    """The app: SET then WAIT 1, through `target` (the runner-local data
    proxy's one address, or whichever master the sentinels name); on any
    error it connects again."""

    pair: RedisPair
    target: Callable[[], Awaitable[Address | None]]
    acked: list[int] = field(default_factory=list)  # writes the replica acknowledged
    done: list[float] = field(default_factory=list)  # when each accepted write returned
    _n: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            addr = await self.target()
            if addr is not None:
                with contextlib.suppress(*ERRORS):
                    await self._write_to(addr, stop)
            await asyncio.sleep(0.05)

    async def _write_to(self, addr: Address, stop: asyncio.Event) -> None:
        async with RedisAdmin(addr[0], addr[1], "default", self.pair.svc.password, 2.0) as r:
            while not stop.is_set():
                n = self._n
                self._n += 1
                await r.call("SET", f"k{n}", str(n))
                self.done.append(time.monotonic())
                if int(await r.call("WAIT", "1", "300")) >= 1:
                    self.acked.append(n)

    def first_write_after(self, t: float) -> float | None:
        return next((w for w in self.done if w > t), None)


def proxy_listener(pair: RedisPair, local_port: int) -> ProxyListener:
    """The runner-local proxy's listener for the pair: both copies, the
    app's password for its role:master check."""
    port = pair.svc.port
    servers = [ProxyServer(h.ip, port, port) for h in (pair.sh1, pair.sh2)]
    return ProxyListener("redis", APP, local_port, tuple(servers), pair.svc.password)


@dataclass(frozen=True)
class Failover:
    unavailable_s: float  # the master's host killed -> the next write accepted
    acked: list[int]  # writes the replica acknowledged
    lost: list[int]  # of those, not on the new master


async def kill_master_under_writes(
    pair: RedisPair, address: Address, wait_s: float = 60.0, before: int = 20
) -> Failover:
    """Write through `address` until `before` writes are acknowledged, kill
    the master's host (sh1), write on until a write is accepted again and
    the sentinels agree on sh2; what was lost of the acknowledged writes."""

    async def fixed() -> Address:
        return address

    writer = Writer(pair, fixed)
    stop = asyncio.Event()

    async def acked_some() -> bool:
        return len(writer.acked) >= before

    async def written_after_kill() -> bool:
        return writer.first_write_after(dead_at) is not None

    async with asyncio.TaskGroup() as tg:
        tg.create_task(writer.run(stop))
        await until(acked_some, 30, "acknowledged writes before the fault")
        killed_at = time.monotonic()
        await asyncio.to_thread(pair.net.kill_host, pair.sh1)
        dead_at = time.monotonic()  # a write before this may have reached the old master
        await until(written_after_kill, wait_s, "a write through the same address")
        stop.set()
    first = writer.first_write_after(dead_at)
    assert first is not None
    new = pair.addr(pair.sh2)

    async def sentinels_agree() -> bool:
        # The sentinel that ran the failover tells the other by its hello messages.
        return await pair.master() == new

    await until(sentinels_agree, wait_s, "the sentinels to agree on the new master")
    async with pair.admin(new) as r:
        values = await r.call("MGET", *(f"k{n}" for n in writer.acked))
    lost = [n for n, v in zip(writer.acked, values, strict=True) if v != str(n)]
    return Failover(first - killed_at, list(writer.acked), lost)


async def failover_through_proxy(pair: RedisPair, home: Path) -> Failover:
    """`kill_master_under_writes` with the app writing through a runner's
    data proxy (HAProxy in `home`, a redis listener over both copies)."""
    proxy = DataProxy(home)
    try:
        port = free_port()
        await proxy.apply([proxy_listener(pair, port)])
        return await kill_master_under_writes(pair, ("127.0.0.1", port))
    finally:
        await proxy.close()
