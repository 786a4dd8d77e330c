"""roost.cli.httpget: the one GET `roost up`'s readiness probes make, against
real sockets (an asyncio server that answers as written); tests/e2e start
`roost up`, whose probes use it against the controller's uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from roost.cli import httpget


@asynccontextmanager
async def serving(answer: bytes, seen: list[bytes] | None = None) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(request)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_json_answer_with_its_length_and_the_request_it_answered() -> None:
    body = json.dumps([{"host_id": "h1", "state": "up"}]).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    seen: list[bytes] = []
    async with serving(answer, seen) as url:
        status, got = await httpget.get(f"{url}/api/hosts?x=1", headers={"Authorization": "t"})
    assert (status, json.loads(got)) == (200, [{"host_id": "h1", "state": "up"}])
    request = seen[0].decode().lower()
    assert request.startswith("get /api/hosts?x=1 http/1.1\r\n")
    assert "\r\nauthorization: t\r\n" in request and "\r\nconnection: close\r\n" in request


async def test_a_chunked_answer_and_an_error_status() -> None:
    chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"4\r\nnot \r\n3\r\nyet\r\n0\r\n\r\n"
    async with serving(chunked) as url:
        assert await httpget.get(url) == (503, b"not yet")


async def test_no_server_garbage_and_silence_are_oserrors() -> None:
    async with serving(b"") as url:
        pass  # closed: nothing listens there now
    with pytest.raises(OSError):
        await httpget.get(url)
    async with serving(b"SSH-2.0-OpenSSH\r\n\r\n") as url:
        with pytest.raises(httpget.GetError):
            await httpget.get(url)
    async with serving(b"") as url:  # closes without a word
        with pytest.raises(httpget.GetError):
            await httpget.get(url)

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            await httpget.get(f"http://127.0.0.1:{port}/", timeout=0.3)
    finally:
        server.close()


async def test_not_an_http_url_is_a_valueerror() -> None:
    for url in ("ftp://x/", "http:///nohost", "tcp://127.0.0.1:1"):
        with pytest.raises(ValueError):
            await httpget.get(url)
