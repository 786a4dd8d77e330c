"""Fake pair members for the data proxy's tests: each a TCP server that greets
with its name and an HTTP server answering Patroni's `GET /primary` (200 on
the primary, 503 on the standby), on loopback; and waits on what the proxy does."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psutil

from roost.runner.dataproxy import (
    DataProxy,
)


class Member:
    def __init__(self, name: str) -> None:
        self.name = name
        self.primary = False
        self.port = 0
        self.rest_port = 0
        self._servers: list[asyncio.Server] = []

    async def _data(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(f"{self.name}\n".encode())
        try:
            while line := await r.readline():
                w.write(f"{self.name}:{line.decode()}".encode())
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    async def _rest(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        status = "200 OK" if self.primary else "503 Service Unavailable"
        w.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await w.drain()
        w.close()

    async def start(self) -> None:
        for handler in (self._data, self._rest):
            self._servers.append(await asyncio.start_server(handler, "127.0.0.1", 0))
        self.port = self._servers[0].sockets[0].getsockname()[1]
        self.rest_port = self._servers[1].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for s in self._servers:
            s.close()


@asynccontextmanager
async def members() -> AsyncIterator[tuple[Member, Member]]:
    a, b = Member("a"), Member("b")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def greeting(port: int) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    line = await asyncio.wait_for(r.readline(), 5)
    return line.decode().strip(), r, w


async def lands_on(port: int, name: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen, _, w = await greeting(port)
            w.close()
            if seen == name:
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"connections to {port} never reached {name} (last: {seen!r})")


async def only_up(proxy: DataProxy, listener: str, member: Member, within: float = 30) -> None:
    """Wait until the proxy's checks call `member` the one server up."""
    want = {listener: [f"127_0_0_1_{member.port}"]}
    deadline = time.monotonic() + within
    seen: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        try:
            seen = {k: v for k, v in (await proxy.up()).items() if k == listener}
        except OSError:
            pass
        if seen == want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{listener}: up {seen}, wanted {want}")


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter, text: str) -> str:
    w.write(f"{text}\n".encode())
    await w.drain()
    return (await asyncio.wait_for(r.readline(), 5)).decode().strip()


def running(pid: int) -> bool:
    """Not gone, nor a zombie (detached, it is reaped by init, if at all)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
