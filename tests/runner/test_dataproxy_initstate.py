"""A server the data proxy has not checked yet takes no connection (real
HAProxy): a new listener's servers, on a fresh start and on a reload, are
down until their first check passes, so nothing reaches a standby or a Redis
replica in the moment before HAProxy knows which member is the primary.

Each member's Patroni answer is held until the test releases it, so the
window before the first check is as long as the test needs (HAProxy checks
a new server at once; without the hold the window is a few milliseconds).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from roost.runner.dataproxy import HAPROXY, DataProxy, ProxyListener
from tests.runner.dataproxykit import Member, lands_on, only_up, port

pytestmark = pytest.mark.skipif(not shutil.which(HAPROXY), reason="haproxy is not installed")


class HeldMember(Member):
    """A member whose Patroni answers no check until `release`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()
        self.connections = 0

    async def _data(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        await super()._data(r, w)

    async def _rest(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.asked.set()
        await self.answer.wait()
        await super()._rest(r, w)


async def reaches_nobody(free_port: int, *members: HeldMember) -> None:
    """Connections made while every check is pending reach no member."""
    for _ in range(4):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", free_port)
        except OSError:
            continue
        try:
            # Refused by HAProxy (no server up): closed without a greeting.
            assert await asyncio.wait_for(r.readline(), 5) == b""
        finally:
            w.close()
    seen = {m.name: m.connections for m in members}
    assert not any(seen.values()), f"reached before a check passed: {seen}"


async def pending_checks(*members: HeldMember) -> None:
    for m in members:
        await asyncio.wait_for(m.asked.wait(), 10)


async def test_a_new_listeners_servers_are_down_until_checked(tmp_path: Path) -> None:
    one, two = port(), port()
    a, b = HeldMember("a"), HeldMember("b")
    c, d = HeldMember("c"), HeldMember("d")
    for m in (a, b, c, d):
        await m.start()
    a.primary = c.primary = True
    first = ProxyListener(
        "postgres",
        "one",
        one,
        (("127.0.0.1", a.port, a.rest_port), ("127.0.0.1", b.port, b.rest_port)),
    )
    second = ProxyListener(
        "postgres",
        "two",
        two,
        (("127.0.0.1", c.port, c.rest_port), ("127.0.0.1", d.port, d.rest_port)),
    )
    proxy = DataProxy(tmp_path)
    try:
        # A fresh HAProxy: both servers pending their first check.
        assert await proxy.apply([first])
        await pending_checks(a, b)
        await reaches_nobody(one, a, b)
        a.answer.set()
        b.answer.set()
        await only_up(proxy, "postgres-one", a)
        await lands_on(one, "a")
        # A listener added by a reload: its servers pending, the old one's kept.
        assert await proxy.apply([first, second])
        await pending_checks(c, d)
        await reaches_nobody(two, c, d)
        await lands_on(one, "a", within=5)
        c.answer.set()
        d.answer.set()
        await only_up(proxy, "postgres-two", c)
        await lands_on(two, "c")
        assert b.connections == d.connections == 0, "a standby took a connection"
    finally:
        await proxy.close()
        for m in (a, b, c, d):
            m.answer.set()
            await m.stop()
