"""sockwrite.put: straight to the socket only while the transport holds none
of the connection's bytes and is not closing; TLS never. Each test runs on
asyncio's loop (what the in-process router tests use) and on uvloop's (what
the router daemon uses), with the module compiled or not, as the router
imports it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from roost.router.sockwrite import put, stream_fd
from roost.selfsigned import generate_self_signed

LOOPS = ["asyncio", "uvloop"]


def run(kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if kind == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


class Sink(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def connected() -> tuple[asyncio.Transport, socket.socket]:
    """A client transport on the running loop and the server's end of it, a
    blocking socket the test reads when it chooses (small buffers: the
    transport's own buffer fills after a few hundred KiB)."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        transport, _ = await loop.create_connection(Sink, *ls.getsockname())
        peer, _ = ls.accept()
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return transport, peer  # type: ignore[return-value]


def read_all(peer: socket.socket, n: int, timeout: float = 20.0) -> bytes:
    peer.settimeout(timeout)
    got = bytearray()
    while len(got) < n:
        chunk = peer.recv(1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("kind", LOOPS)
def test_bytes_wait_behind_what_the_transport_holds(kind: str) -> None:
    """Once the socket took only part of a write, later writes go through the
    transport even when the socket could take them again (the peer read some
    and the loop has not yet flushed): they would overtake the held rest."""

    async def main() -> None:
        transport, peer = await connected()
        fd = stream_fd(transport)
        assert fd == transport.get_extra_info("socket").fileno()
        big = bytes(range(256)) * 16384  # 4 MiB
        queued = put(transport, transport.is_closing, fd, False, big)
        assert queued and transport.get_write_buffer_size() > 0
        # The peer reads while the loop cannot run (no await): the socket has
        # room again, the transport still holds the rest of `big`.
        peer.setblocking(False)
        got = bytearray()
        deadline = time.monotonic() + 10
        while not select.select([], [fd], [], 0)[1]:
            assert time.monotonic() < deadline, "the socket never had room"
            with contextlib.suppress(BlockingIOError):
                got += peer.recv(1 << 20)
            time.sleep(0.001)
        assert transport.get_write_buffer_size() > 0
        queued = put(transport, transport.is_closing, fd, queued, b"tail-1")
        queued = put(transport, transport.is_closing, fd, queued, b"tail-2")
        assert queued
        peer.setblocking(True)
        rest = len(big) + 12 - len(got)
        got += await asyncio.get_running_loop().run_in_executor(None, read_all, peer, rest)
        assert bytes(got) == big + b"tail-1tail-2"
        # Flushed: the next write goes straight to the socket again.
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.01)
        assert put(transport, transport.is_closing, fd, queued, b"again") is False
        assert read_all(peer, 5) == b"again"
        transport.close()
        peer.close()

    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_no_direct_write_once_the_transport_is_closing(kind: str) -> None:
    """After close() the descriptor may be another connection's: bytes written
    then must not reach it."""

    async def main() -> None:
        transport, peer = await connected()
        fd = stream_fd(transport)
        assert fd >= 0
        transport.close()
        for _ in range(5):  # (asyncio closes the socket a loop iteration later)
            await asyncio.sleep(0)
        with pytest.raises(OSError):
            os.fstat(fd)  # closed: the number is free for the next socket
        # Another connection now has that number (the next socket made takes
        # the lowest free one: it may be that already).
        a, b = socket.socketpair()
        if b.fileno() == fd:
            a, b = b, a
        dup = a.fileno() != fd
        if dup:
            os.dup2(a.fileno(), fd)
        try:
            with contextlib.suppress(RuntimeError):  # (uvloop: a closed transport refuses)
                put(transport, transport.is_closing, fd, False, b"stray")
            b.setblocking(False)
            with pytest.raises(BlockingIOError):
                b.recv(100)
        finally:
            if dup:
                os.close(fd)
            a.close()
            b.close()
            peer.close()

    run(kind, main)


@pytest.mark.parametrize("kind", LOOPS)
def test_only_plain_stream_transports_are_written_directly(kind: str) -> None:
    """TCP and Unix transports give their socket; a TLS one never (its bytes
    must be encrypted by the transport first)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, peer = await connected()
        assert stream_fd(transport) >= 0
        transport.close()
        peer.close()

        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "s")
            server = await loop.create_unix_server(Sink, path)
            ut, _ = await loop.create_unix_connection(Sink, path)
            assert stream_fd(ut) == ut.get_extra_info("socket").fileno()
            ut.close()
            server.close()

            cert, key = generate_self_signed(["localhost"])
            (Path(tmp) / "c.pem").write_bytes(cert)
            (Path(tmp) / "k.pem").write_bytes(key)
            sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            sctx.load_cert_chain(Path(tmp) / "c.pem", Path(tmp) / "k.pem")
            server = await loop.create_server(Sink, "127.0.0.1", 0, ssl=sctx)
            port = server.sockets[0].getsockname()[1]
            cctx = ssl.create_default_context()
            cctx.check_hostname = False
            cctx.verify_mode = ssl.CERT_NONE
            tt, _ = await loop.create_connection(Sink, "127.0.0.1", port, ssl=cctx)
            assert tt.get_extra_info("socket") is not None  # (there is a socket under it)
            assert stream_fd(tt) == -1
            # put then hands everything to the transport, which encrypts it.
            assert put(tt, tt.is_closing, stream_fd(tt), False, b"x") is True
            tt.close()
            server.close()

    run(kind, main)
