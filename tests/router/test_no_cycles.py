"""A connection the router is done with is freed by its reference count, not
left in a cycle for the garbage collector (client.py's and upstream.py's
`_DEAD_PARSER`, `open_upstream`'s factory): a burst of new connections then
sets off no collection while its requests wait (daemon.settle_gc)."""

from __future__ import annotations

import asyncio
import collections
import gc
from typing import Any

from tests.router.conftest import app

WATCHED = {"ClientConnection", "Upstream", "HttpRequestParser", "HttpResponseParser", "Reframer"}


async def _one_request(port: int, extra: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /id HTTP/1.1\r\nHost: a.localhost\r\n" + extra + b"\r\n")
    await writer.drain()
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"a1"):
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        assert chunk, data
        data += chunk
    writer.close()
    await writer.wait_closed()
    return data


async def test_connections_leave_no_cycles(backends: Any, router: Any) -> None:
    b = await backends("a1")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        async with router([app("a", b)]) as r:
            # Each on its own client connection and, at once, its own instance
            # connection (a cold pool), the plain lane and the general path
            # (a header the lane leaves to it).
            answers = await asyncio.gather(
                *(_one_request(r.port) for _ in range(10)),
                *(_one_request(r.port, b"X-Other:  spaced\r\n") for _ in range(10)),
            )
            assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
            await asyncio.sleep(0.1)  # (the clients' connection_lost)
        # (leaving the router closed its pooled instance connections)
        await asyncio.sleep(0.1)
        gc.collect()
        left = collections.Counter(type(o).__name__ for o in gc.garbage)
        assert {k: v for k, v in left.items() if k in WATCHED} == {}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
