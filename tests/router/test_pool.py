"""The instance pool keeps what a burst opened (up to MAX_IDLE_PER_SLOT), so
the next burst reuses it instead of connecting again."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.router.upstream import MAX_IDLE_PER_SLOT
from tests.router.conftest import app

BURST = 100


async def _wave(port: int) -> None:
    # One client connection each, all in flight together (the instance
    # answers after 0.3 s): the router needs BURST instance connections.
    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow?delay=0.3 HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 20)
        assert line.startswith(b"HTTP/1.1 200"), line
        writer.close()

    await asyncio.gather(*(one() for _ in range(BURST)))


async def test_a_burst_keeps_its_instance_connections(backends: Any, router: Any) -> None:
    assert MAX_IDLE_PER_SLOT >= BURST
    b = await backends("a1")
    async with router([app("a", b)], upstream_idle=30.0) as r:
        await _wave(r.port)
        slot = next(iter(r.ctx.balancer.slots.values()))
        first = {id(up) for up in slot.idle}
        assert len(first) == BURST  # (64 were kept before, the rest closed)
        await _wave(r.port)
        assert {id(up) for up in slot.idle} == first  # reused: no new connect
