"""A host's sentinel and an app's Redis pair as the servicehost runs them
(real redis-server processes on loopback, under supervised.Servers): the
replica streams from its master, the sentinel takes the master from
`register`, keeps what it learned across a hand-over (adopted, same pid) and
a restart (its own file), and forgets the master on `unregister`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from roost.servicehost import redisrepl, sentinelproc
from roost.servicehost.binaries import find_binaries
from roost.servicehost.host import free_port
from roost.servicehost.redis import ADMIN_USER, RedisServer
from roost.servicehost.redisrepl import Replication
from roost.servicehost.sentinel import Monitor, SentinelSpec, master_name
from roost.servicehost.sentinelproc import SentinelServer
from roost.servicehost.state import Service
from roost.servicehost.supervised import Servers, Supervised
from roost.servicehost.user import ServiceUser

ME = ServiceUser(name="me", uid=os.getuid(), gid=os.getgid(), dropped=False)
LOG = logging.getLogger("test")
PASSWORD = "sentinel-pw"
LOCAL = "127.0.0.1"


def copy(port: int) -> Service:
    """One copy of the app's Redis (on loopback the two need two ports)."""
    return Service(
        app="blog", kind="redis", port=port, password="app-pw", memory_mb=16,
        admin_password="admin-pw", backup_password="backup-pw",
    )  # fmt: skip


async def until_true(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_a_pair_and_its_sentinel_under_the_servicehosts_supervisor(tmp_path: Path) -> None:
    leftovers: list[int] = []  # pids started: none may outlive the test
    try:
        await _pair_and_sentinel(tmp_path, leftovers)
    finally:
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def _pair_and_sentinel(tmp_path: Path, leftovers: list[int]) -> None:
    bins = find_binaries()
    logs = tmp_path / "logs"
    logs.mkdir()
    p1 = free_port()
    p2 = free_port(taken={p1})
    ps = free_port(taken={p1, p2})
    spec = SentinelSpec(ps, [LOCAL], LOCAL, PASSWORD, tmp_path / "sentinel")
    master = RedisServer(bins, tmp_path / "r1", logs, ME, copy(p1), [LOCAL])
    master.replication = Replication(LOCAL, "replica-pw")
    replica = RedisServer(bins, tmp_path / "r2", logs, ME, copy(p2), [LOCAL])
    replica.replication = Replication(LOCAL, "replica-pw", (LOCAL, p1))
    # Two copies on one host: two names under one supervisor.
    master.name, replica.name = "redis[blog-1]", "redis[blog-2]"
    name = master_name("blog")
    monitor = Monitor(name, LOCAL, p1, ADMIN_USER, "admin-pw")
    servers = Servers(LOG)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(servers.run())
        sentinel = SentinelServer(bins.redis_server, spec, logs, ME)
        sups = [Supervised(servers, s, 0.5) for s in (master, replica, sentinel)]
        for s in sups:
            assert await s.wait_up(30), s.last_error
            leftovers.append(s.pid)
        sentinel_pid = sups[2].pid

        async def streaming() -> bool:
            return redisrepl.judge(await master.replication_view()) == ""

        await until_true(streaming)
        view = await replica.replication_view()
        assert (view.role, view.master_port, view.link_up) == ("slave", p1, True)

        assert await sentinelproc.register([(LOCAL, ps)], PASSWORD, [monitor]) == {}
        # Again: nothing changes (the plan only corrects what differs).
        assert await sentinelproc.register([(LOCAL, ps)], PASSWORD, [monitor]) == {}
        sentinels = [(LOCAL, ps)]
        assert await sentinelproc.ask_master(sentinels, PASSWORD, name, quorum=1) == (LOCAL, p1)
        # One sentinel is not a quorum of two.
        assert await sentinelproc.ask_master(sentinels, PASSWORD, name) is None
        # A sentinel that does not answer is reported, not waited for.
        dead = (LOCAL, free_port(taken={p1, p2, ps}))
        failed = await sentinelproc.register([*sentinels, dead], PASSWORD, [monitor])
        assert list(failed) == [dead]
        servers.release()  # the daemon hands over: every server keeps running

    # The next daemon adopts the sentinel, which still watches the master.
    again = Servers(LOG)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(again.run())
        s = Supervised(again, SentinelServer(bins.redis_server, spec, logs, ME), 0.5)
        assert await s.wait_up(30) and s.pid == sentinel_pid
        assert await sentinelproc.ask_master(sentinels, PASSWORD, name, quorum=1) == (LOCAL, p1)
        # Stopped and started anew: its own file remembers the master.
        await s.stop()
        s = Supervised(again, SentinelServer(bins.redis_server, spec, logs, ME), 0.5)
        assert await s.wait_up(30) and s.pid != sentinel_pid
        leftovers.append(s.pid)
        assert await sentinelproc.ask_master(sentinels, PASSWORD, name, quorum=1) == (LOCAL, p1)
        assert await sentinelproc.unregister(sentinels, PASSWORD, name) == {}
        assert await sentinelproc.unregister(sentinels, PASSWORD, name) == {}  # idempotent
        assert await sentinelproc.ask_master(sentinels, PASSWORD, name, quorum=1) is None
        # The pair's copies, adopted too, are stopped with the rest.
        for server, before in zip((master, replica), leftovers, strict=False):
            adopted = Supervised(again, server, 0.5)
            assert await adopted.wait_up(30) and adopted.pid == before
        again.stop()
    assert not [pid for pid in leftovers if running(pid)]


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
