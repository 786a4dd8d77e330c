"""A router that ends drains without failing a client: the decision (pure,
fake clock) and a real worker on an inherited socket handing over to the next."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from roost.proc.activation import BACKLOG
from roost.router.drain import Drain
from roost.router.worker import RouterWorker
from roost.settings import Settings
from tests.router.conftest import RawClient, app, header


def test_an_idle_connection_closes_once_quiet_for_idle_s() -> None:
    d = Drain(started=100.0, timeout_s=10.0, idle_s=1.0)
    assert not d.close(100.0, busy=False, idle_since=99.5)  # its client may be about to reuse it
    assert d.close(100.5, busy=False, idle_since=99.5)
    assert d.close(100.0, busy=False, idle_since=50.0)  # quiet long before the drain began


def test_a_busy_connection_is_kept_until_the_timeout() -> None:
    d = Drain(started=100.0, timeout_s=10.0, idle_s=1.0)
    assert not d.close(105.0, busy=True, idle_since=0.0)
    assert not d.close(109.99, busy=True, idle_since=0.0)
    assert d.close(110.0, busy=True, idle_since=0.0)
    assert d.close(110.0, busy=False, idle_since=109.9)  # at the timeout, everything


def test_the_drain_is_over_when_nothing_is_open_or_time_is_up() -> None:
    d = Drain(started=100.0, timeout_s=10.0)
    assert d.over(100.0, 0)
    assert not d.over(109.0, 3)
    assert d.over(110.0, 3)


@pytest.fixture
def listener() -> Any:
    """A listening socket as `roost up` or systemd would hand it over."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    yield sock
    sock.close()


async def test_handover_on_a_shared_socket(
    backends: Any, listener: socket.socket, tmp_path: Path
) -> None:
    one = await backends("one")
    port = listener.getsockname()[1]

    def worker() -> RouterWorker:
        # (each gets its own copy of the descriptor, as a process would)
        return RouterWorker(
            Settings(), sockets={"http": listener.dup()}, routes=[app("hello", one)], drain_s=10.0
        )

    first = await worker().__aenter__()
    held = await RawClient.open(port)
    keep = await RawClient.open(port)
    idle = await RawClient.open(port)
    try:
        for c in (keep, idle):
            resp, body = await c.request("GET", "/id", "hello.localhost")
            assert body == b"one" and header(resp, "connection") is None  # kept alive
        one.gate.clear()
        await held.send(b"GET /held HTTP/1.1\r\nHost: hello.localhost\r\n\r\n")
        while not any(r["path"] == "/held" for r in one.requests):
            await asyncio.sleep(0.01)

        ending = asyncio.create_task(first.__aexit__(None, None, None))
        await asyncio.sleep(0)  # (the drain has begun: it stopped accepting)
        assert first.ctx.draining
        # A keep-alive client reusing its connection is answered, told to close.
        resp, body = await keep.request("GET", "/id", "hello.localhost")
        assert body == b"one" and header(resp, "connection") == "close"
        assert await keep.closed()
        # A new connection waits in the socket's backlog: nobody accepts it yet.
        fresh = await RawClient.open(port)
        await fresh.send(
            b"POST /echo HTTP/1.1\r\nHost: hello.localhost\r\nContent-Length: 2\r\n\r\nhi"
        )
        # The request in flight gets its response, with Connection: close.
        one.gate.set()
        answer = await held.read_all()  # (to the end: the router closes after it)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\none")
        assert b"\r\nConnection: close\r\n" in answer
        # The idle connection is closed once quiet for a while; then the drain is over.
        assert await idle.closed()
        await ending
        assert not first.ctx.clients

        second = await worker().__aenter__()
        try:
            resp, body = await fresh.response()
            assert resp.status_code == 200 and b'"body_size": 2' in body
        finally:
            await second.__aexit__(None, None, None)
    finally:
        for c in (held, keep, idle):
            await c.close()
