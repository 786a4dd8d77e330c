"""An instance that never answers a connect: the sweep gives the connect up
at its deadline (`Relay.connect_timeout`), as a failed connect."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from roost.wire.messages import AppRoute, Backend
from tests.router.conftest import backend_of


@pytest.fixture
def silent() -> Iterator[Backend]:
    """An instance whose port takes no more connections: a listener with a
    backlog of one, already full, so the kernel drops every further SYN and
    a connect waits until someone gives it up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    filler = socket.create_connection(("127.0.0.1", port))
    probe = socket.socket()
    probe.settimeout(0.3)
    with pytest.raises(TimeoutError):  # (the premise: a connect to it hangs)
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield Backend(instance_id="silent", host="127.0.0.1", port=port)
    filler.close()
    listener.close()


async def test_a_connect_past_its_deadline_is_a_502(router: Any, silent: Backend) -> None:
    route = AppRoute(app="a", hostnames=["a.localhost"], backends=[silent])
    async with router([route], connect_timeout=0.5) as r, httpx.AsyncClient(timeout=20) as c:
        resp = await c.get(f"http://127.0.0.1:{r.port}/", headers={"Host": "a.localhost"})
        assert resp.status_code == 502 and "Bad gateway" in resp.text
        slot = next(iter(r.ctx.balancer.slots.values()))
        # (counted against the instance: one failure ejects it by default)
        assert slot.ejected_until > 0 and slot.outstanding == 0 and not slot.idle
        # Nothing of the given-up connects is left running.
        await asyncio.sleep(0.1)
        assert not any(t.get_coro().__name__ == "_connect" for t in asyncio.all_tasks())


async def test_a_connect_past_its_deadline_goes_to_another_instance(
    backends: Any, router: Any, silent: Backend
) -> None:
    good = await backends("good")
    route = AppRoute(app="a", hostnames=["a.localhost"], backends=[silent, backend_of(good)])
    async with router([route], connect_timeout=0.5) as r, httpx.AsyncClient(timeout=20) as c:
        url = f"http://127.0.0.1:{r.port}/id"
        got = [(await c.get(url, headers={"Host": "a.localhost"})).text for _ in range(4)]
        assert got == ["good"] * 4
        slots = {s.backend.instance_id: s for s in r.ctx.balancer.slots.values()}
        assert slots["silent"].ejected_until > 0 and slots["good"].ejected_until == 0


async def test_a_client_leaving_during_a_connect_cancels_it(router: Any, silent: Backend) -> None:
    route = AppRoute(app="a", hostnames=["a.localhost"], backends=[silent])
    async with router([route], connect_timeout=30.0) as r:
        _, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
        await writer.drain()

        def connecting() -> bool:
            return any(t.get_coro().__name__ == "_connect" for t in asyncio.all_tasks())

        for _ in range(100):
            if connecting():
                break
            await asyncio.sleep(0.02)
        assert connecting()
        # A reset: a FIN alone could be a half-close still waiting for its answer.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        for _ in range(100):
            if not connecting():
                break
            await asyncio.sleep(0.02)
        assert not connecting()
        slot = next(iter(r.ctx.balancer.slots.values()))
        # (the client left: not the instance's failure)
        assert slot.outstanding == 0 and slot.fails == 0 and slot.ejected_until == 0
