"""Bodies stream through the router in both directions, never buffered whole."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import httpx

from tests.router.conftest import RawClient, app, header


async def test_response_streams_before_it_is_finished(backends: Any, router: Any) -> None:
    one = await backends("one")
    one.gate.clear()  # the instance holds back its last chunk until we say so
    async with router([app("s", one)]) as r, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{r.port}/stream?n=4&delay=0"
        async with c.stream("GET", url, headers={"Host": "s.localhost"}) as resp:
            assert resp.headers["transfer-encoding"] == "chunked"
            seen = b""
            chunks = resp.aiter_raw()
            while b"chunk-2;" not in seen:
                seen += await chunks.__anext__()
            assert 3 not in one.stream_sent  # got the start while the end is not even sent
            one.gate.set()
            async for more in chunks:
                seen += more
        assert seen == b"chunk-0;chunk-1;chunk-2;chunk-3;"


async def test_request_body_streams_to_the_instance(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)]) as r:
        # Chunked upload: the first piece reaches the instance before the rest exists.
        c = await RawClient.open(r.port)
        await c.send(
            b"POST /upload HTTP/1.1\r\nHost: s.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nfirst\r\n"
        )
        await asyncio.wait_for(one.first_piece.wait(), 5)
        await c.send(b"7\r\n-second\r\n0\r\n\r\n")
        status, body = (await c.raw_responses(1))[0]
        assert status == 200 and json.loads(body)["body_size"] == 12
        assert b"".join(one.upload_pieces) == b"first-second"
        await c.close()
        # Content-Length upload, same property.
        one.first_piece.clear()
        one.upload_pieces.clear()
        c = await RawClient.open(r.port)
        await c.send(b"PUT /upload HTTP/1.1\r\nHost: s.localhost\r\nContent-Length: 8\r\n\r\nabcd")
        await asyncio.wait_for(one.first_piece.wait(), 5)
        await c.send(b"efgh")
        status, body = (await c.raw_responses(1))[0]
        assert status == 200 and json.loads(body)["body_size"] == 8
        await c.close()


async def test_large_bodies_both_ways(backends: Any, router: Any) -> None:
    one = await backends("one")
    payload = bytes(range(256)) * 20_000  # 5 MB
    async with router([app("s", one)]) as r, httpx.AsyncClient(timeout=30) as c:
        base = f"http://127.0.0.1:{r.port}"

        async def gen() -> Any:
            for i in range(0, len(payload), 100_000):
                yield payload[i : i + 100_000]

        resp = await c.post(f"{base}/echo", headers={"Host": "s.localhost"}, content=gen())
        info = resp.json()
        assert info["body_size"] == len(payload)
        assert info["body_sha256"] == hashlib.sha256(payload).hexdigest()
        big = await c.get(f"{base}/big?n=6000000", headers={"Host": "s.localhost"})
        assert len(big.content) == 6_000_000


async def test_close_delimited_response_is_rechunked(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)]) as r:
        c = await RawClient.open(r.port)
        resp, body = await c.request("GET", "/eof", "s.localhost")
        assert body == b"until-the-end"
        assert header(resp, "transfer-encoding") == "chunked"
        # ... so the client connection stays usable.
        resp, body = await c.request("GET", "/id", "s.localhost")
        assert body == b"one"
        await c.close()


async def test_websocket_style_upgrade_passes_through(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)]) as r:
        c = await RawClient.open(r.port)
        await c.send(
            b"GET /ws HTTP/1.1\r\nHost: s.localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: roost-test\r\n\r\nearly"
        )
        got = b""
        while b"EARLY" not in got:
            got += await asyncio.wait_for(c.reader.read(4096), 5)
        assert got.startswith(b"HTTP/1.1 101")
        assert b"\r\nupgrade: roost-test" in got.lower()
        await c.send(b"hello through the tunnel")
        echoed = b""
        while len(echoed) < len(b"hello through the tunnel"):
            echoed += await asyncio.wait_for(c.reader.read(4096), 5)
        assert echoed == b"HELLO THROUGH THE TUNNEL"
        await c.close()


async def test_refused_upgrade_is_a_normal_response(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("s", one)]) as r:
        c = await RawClient.open(r.port)
        await c.send(
            b"GET /id HTTP/1.1\r\nHost: s.localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: roost-test\r\n\r\n"
        )
        raw = await c.read_all()  # the router closes after a refused upgrade
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"one")
        await c.close()
