"""Stand-ins on loopback for a pair's members, as a client probing them
sees them (roost.patroni.order_members): a Patroni REST API answering
`GET /primary` with a status, a port that answers, and a port that never
does, like a host down without a reset (a power cut, a partition).

The silent port is real TCP with no answer: a listening socket whose
accept queue is full (backlog 0, filled and never accepted) has its SYNs
dropped by the kernel (net.ipv4.tcp_abort_on_overflow 0, the default), so
a connect to it is retried until the caller gives up, as to a dead host.
Each stand-in takes its own 127.77.x.y address, so members of one test
share port numbers as a pair's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

from tests.conftest import free_port


@contextlib.contextmanager
def silent_port(host: str, port: int) -> Iterator[None]:
    """`host`:`port` takes no connection and refuses none while open."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect((host, port))
            fillers.append(c)
        # The queue holds the first; wait until a fresh connect hangs.
        deadline = time.monotonic() + 5
        while not _hangs(host, port):
            assert time.monotonic() < deadline, f"{host}:{port} does not go silent"
            time.sleep(0.05)
        yield
    finally:
        for c in fillers:
            c.close()
        listener.close()


def _hangs(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        try:
            probe.connect((host, port))
        except TimeoutError:
            return True
        except OSError:
            return False
        return False


@contextlib.asynccontextmanager
async def patroni_rest(host: str, port: int, status: int) -> AsyncIterator[list[str]]:
    """A REST API at `host`:`port` answering every request with `status`
    (200 for `GET /primary` on Patroni's leader, 503 on another member);
    yields the request lines it was sent."""
    heard: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.append((await reader.readline()).decode().strip())
        while (await reader.readline()).strip():
            pass
        writer.write(f"HTTP/1.0 {status} Whatever\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, host, port)
    try:
        yield heard
    finally:
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def open_port(host: str, port: int) -> Iterator[socket.socket]:
    """`host`:`port` takes connections (the kernel completes them; they
    wait in the yielded listener's queue, never accepted, for a test to
    count with `connections`)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(16)
    try:
        yield listener
    finally:
        listener.close()


def connections(listener: socket.socket) -> int:
    """How many connections wait in `listener`'s queue (each accepted and closed)."""
    listener.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def ports() -> tuple[int, int]:
    """A PostgreSQL and a REST port for a test's stand-ins."""
    pg = free_port()
    rest = free_port()
    while rest == pg:
        rest = free_port()
    return pg, rest
