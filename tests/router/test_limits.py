"""Size limits and timeouts: what a hostile or stuck peer gets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.router.conftest import RawClient, app


async def test_header_limits(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)], max_header_bytes=4096, max_headers=20) as r:
        for raw, status in [
            (b"GET / HTTP/1.1\r\nHost: s.localhost\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
            (
                b"GET / HTTP/1.1\r\nHost: s.localhost\r\n"
                + b"".join(b"X-%d: v\r\n" % i for i in range(30))
                + b"\r\n",
                431,
            ),
            (b"GET /" + b"u" * 5000 + b" HTTP/1.1\r\nHost: s.localhost\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\nHost: s.localhost\r\nHost: other\r\n\r\n", 400),
            (b"GARBAGE\r\n\r\n", 400),
        ]:
            c = await RawClient.open(r.port)
            await c.send(raw)
            got = await c.read_all()
            assert got.startswith(b"HTTP/1.1 %d" % status), got[:80]
            assert b"Connection: close" in got
            await c.close()
        # A header trickled in small pieces is bounded the same way.
        c = await RawClient.open(r.port)
        await c.send(b"GET / HTTP/1.1\r\nHost: s.localhost\r\nX-Big: ")
        try:
            for _ in range(10):
                await c.send(b"a" * 1000)
                await asyncio.sleep(0.01)
        except ConnectionError:
            pass
        got = await c.read_all()
        assert got.startswith(b"HTTP/1.1 431")
        assert one.requests == []  # nothing reached the app


async def test_body_limits(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)], max_body_bytes=1000) as r:
        c = await RawClient.open(r.port)
        await c.send(b"POST /echo HTTP/1.1\r\nHost: s.localhost\r\nContent-Length: 5000\r\n\r\n")
        got = await c.read_all()  # answered before any body byte is sent
        assert got.startswith(b"HTTP/1.1 413")
        c = await RawClient.open(r.port)
        await c.send(
            b"POST /echo HTTP/1.1\r\nHost: s.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"200\r\n"
            + b"x" * 512
            + b"\r\n"
        )
        try:
            for _ in range(3):
                await c.send(b"200\r\n" + b"x" * 512 + b"\r\n")
        except ConnectionError:
            pass
        got = await c.read_all()
        assert got.startswith(b"HTTP/1.1 413")
        async with httpx.AsyncClient() as hc:  # within the limit: fine
            ok = await hc.post(
                f"http://127.0.0.1:{r.port}/echo",
                headers={"Host": "s.localhost"},
                content=b"y" * 900,
            )
            assert ok.json()["body_size"] == 900


async def test_slowloris_is_cut_off(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)], header_timeout=0.6) as r:
        c = await RawClient.open(r.port)
        await c.send(b"GET / HTTP/1.1\r\nHost: s.localhost\r\n")
        got = b""
        # Each header line arrives in time, but the head as a whole never completes.
        for i in range(200):
            try:
                await c.send(b"X-Trickle-%d: y\r\n" % i)
            except ConnectionError:
                break
            try:
                got += await asyncio.wait_for(c.reader.read(4096), 0.1)
            except TimeoutError:
                continue
            if got:
                break
        assert got.startswith(b"HTTP/1.1 408")
        assert await c.closed()
        # A connection that never sends a byte is closed too.
        idle = await RawClient.open(r.port)
        assert await idle.closed()
        assert one.requests == []


async def test_stalled_request_body(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)], idle_timeout=0.6) as r:
        c = await RawClient.open(r.port)
        await c.send(b"POST /echo HTTP/1.1\r\nHost: s.localhost\r\nContent-Length: 10\r\n\r\nab")
        got = await c.read_all()
        assert got.startswith(b"HTTP/1.1 408")


async def test_first_byte_timeout_gives_504(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)], first_byte_timeout=0.5) as r, httpx.AsyncClient() as c:
        resp = await c.get(
            f"http://127.0.0.1:{r.port}/slow?delay=5", headers={"Host": "s.localhost"}
        )
        assert resp.status_code == 504 and "took too long" in resp.text


async def test_idle_keep_alive_is_closed(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)], idle_timeout=0.5) as r:
        c = await RawClient.open(r.port)
        resp, _ = await c.request("GET", "/id", "s.localhost")
        assert resp.status_code == 200
        assert await c.closed()


async def test_instance_silent_mid_body_aborts_the_client(backends: Any, router: Any) -> None:
    one = await backends("one")
    one.gate.clear()  # the instance stops before its last chunk, forever
    async with router([app("s", one)], idle_timeout=0.6) as r:
        c = await RawClient.open(r.port)
        await c.send(b"GET /stream?n=3&delay=0 HTTP/1.1\r\nHost: s.localhost\r\n\r\n")
        got = await c.read_all()  # EOF comes: the router gave up on the instance
        assert got.startswith(b"HTTP/1.1 200") and b"chunk-1;" in got
        assert not got.endswith(b"0\r\n\r\n")  # truncated, so the client can tell
        one.gate.set()
