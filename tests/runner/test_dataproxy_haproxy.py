"""The data proxy's adapter with a real HAProxy: it follows the primary and
reloads without dropping a connection.

Two fake members, each a TCP server that greets with its name plus an HTTP
server answering Patroni's `GET /primary` (200 on the primary, 503 on the
standby), on loopback ports of this host.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from roost.runner.dataproxy import (
    HAPROXY,
    LISTENERS_FILE,
    DataProxy,
    ProxyListener,
    encode_listeners,
    follow,
)
from tests.runner.dataproxykit import (
    echo,
    greeting,
    lands_on,
    members,
    only_up,
    port,
    running,
)

pytestmark = pytest.mark.skipif(not shutil.which(HAPROXY), reason="haproxy is not installed")


async def test_follows_the_primary_and_cuts_the_old_ones_sessions(tmp_path: Path) -> None:
    free_port = port()
    async with members() as (a, b):
        a.primary = True
        proxy = DataProxy(tmp_path)
        lst = ProxyListener(
            "postgres",
            "pair",
            free_port,
            (("127.0.0.1", a.port, a.rest_port), ("127.0.0.1", b.port, b.rest_port)),
        )
        try:
            await proxy.apply([lst])
            await only_up(proxy, "postgres-pair", a)
            await lands_on(free_port, "a")
            _, r, w = await greeting(free_port)
            assert await echo(r, w, "x") == "a:x"
            a.primary, b.primary = False, True
            await only_up(proxy, "postgres-pair", b)
            await lands_on(free_port, "b")
            # The session to the old primary was cut, not left writing there.
            assert await asyncio.wait_for(r.read(), 10) in (b"",)
            w.close()
        finally:
            await proxy.close()


async def test_a_reload_keeps_open_connections_and_adds_listeners(tmp_path: Path) -> None:
    one, two = port(), port()
    async with members() as (a, b):
        a.primary = b.primary = True
        proxy = DataProxy(tmp_path)
        first = ProxyListener("postgres", "one", one, (("127.0.0.1", a.port, a.rest_port),))
        second = ProxyListener("postgres", "two", two, (("127.0.0.1", b.port, b.rest_port),))
        try:
            assert await proxy.apply([first])
            master = proxy.pid
            await lands_on(one, "a")
            _, r, w = await greeting(one)
            assert not await proxy.apply([first]), "the same listeners changed nothing"
            assert await proxy.apply([first, second])
            await lands_on(two, "b")
            # Opened before the reload, still served by the old worker.
            assert await echo(r, w, "still") == "a:still"
            assert proxy.pid == master, "reloaded in place, not restarted"
            w.close()
        finally:
            await proxy.close()


async def test_follow_serves_what_the_listeners_file_says_as_it_changes(tmp_path: Path) -> None:
    one, two = port(), port()
    path = tmp_path / LISTENERS_FILE
    async with members() as (a, b):
        a.primary = b.primary = True
        first = ProxyListener("postgres", "one", one, (("127.0.0.1", a.port, a.rest_port),))
        second = ProxyListener("postgres", "two", two, (("127.0.0.1", b.port, b.rest_port),))
        path.write_bytes(encode_listeners([first]))
        proxy = DataProxy(tmp_path / "proxy")
        stop = asyncio.Event()
        following = asyncio.create_task(follow(path, proxy, stop, interval=0.1))
        try:
            await lands_on(one, "a")
            _, r, w = await greeting(one)
            path.write_bytes(encode_listeners([first, second]))
            await lands_on(two, "b")
            assert await echo(r, w, "kept") == "a:kept"
            path.write_bytes(b"{not json")  # kept what it had
            await asyncio.sleep(0.5)
            assert following.done() is False
            await lands_on(two, "b")
            w.close()
        finally:
            stop.set()
            await asyncio.wait_for(following, 30)
        assert proxy.pid is None, "stopped with the follower"
        with pytest.raises(OSError):
            await greeting(one)


async def test_no_listeners_start_no_haproxy(tmp_path: Path) -> None:
    proxy = DataProxy(tmp_path, binary="/nonexistent/haproxy")
    stop = asyncio.Event()
    stop.set()
    await follow(tmp_path / LISTENERS_FILE, proxy, stop)  # no file: one machine
    assert proxy.pid is None and not (tmp_path / "haproxy.cfg").exists()


async def test_a_hand_over_leaves_haproxy_serving_and_the_next_follower_adopts_it(
    tmp_path: Path,
) -> None:
    one, two = port(), port()
    path = tmp_path / LISTENERS_FILE
    home = tmp_path / "proxy"
    async with members() as (a, b):
        a.primary = b.primary = True
        first = ProxyListener("postgres", "one", one, (("127.0.0.1", a.port, a.rest_port),))
        second = ProxyListener("postgres", "two", two, (("127.0.0.1", b.port, b.rest_port),))
        path.write_bytes(encode_listeners([first]))
        old, new = DataProxy(home), DataProxy(home)
        stop = asyncio.Event()
        following = asyncio.create_task(follow(path, old, stop, 0.1, hand_over=lambda: True))
        try:
            await lands_on(one, "a")
            master = old.pid
            assert master is not None
            _, r, w = await greeting(one)
            stop.set()
            await asyncio.wait_for(following, 30)
            # Handed over: still serving the connection opened before.
            assert old.pid is None and running(master)
            assert await echo(r, w, "kept") == "a:kept"
            stop = asyncio.Event()
            following = asyncio.create_task(follow(path, new, stop, 0.1))
            path.write_bytes(encode_listeners([first, second]))
            await lands_on(two, "b")
            assert new.pid == master, "adopted and reloaded, not started again"
            assert await echo(r, w, "again") == "a:again"
        finally:
            stop.set()
            await asyncio.wait_for(following, 30)
            await old.close()
        # A follower that does not hand over stops it.
        assert new.pid is None and not running(master)
        assert await asyncio.wait_for(r.read(), 10) == b""
        w.close()


async def test_a_recorded_pid_that_is_not_our_haproxy_is_never_adopted(tmp_path: Path) -> None:
    free = port()
    async with members() as (a, _b):
        a.primary = True
        lst = ProxyListener("postgres", "one", free, (("127.0.0.1", a.port, a.rest_port),))
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / "haproxy.pid").write_text(f"{os.getpid()}\n")  # this test, not HAProxy
        proxy = DataProxy(tmp_path)
        try:
            assert await proxy.apply([lst])
            assert proxy.pid not in (None, os.getpid())
            await lands_on(free, "a")
        finally:
            await proxy.close()
        assert proxy.pid is None
