"""Retry rules and passive health checks (ejection)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from roost.router.relay import safe_to_retry
from roost.wire.messages import AppRoute, Backend
from tests.router.conftest import RawClient, app, backend_of


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connecting is refused


async def test_connect_failure_is_retried_and_the_instance_ejected(
    backends: Any, router: Any
) -> None:
    good = await backends("good")
    dead = Backend(instance_id="dead", host="127.0.0.1", port=dead_port())
    route = AppRoute(app="a", hostnames=["a.localhost"], backends=[dead, backend_of(good)])
    async with router([route]) as r, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{r.port}/id"
        got = [(await c.get(url, headers={"Host": "a.localhost"})).text for _ in range(6)]
        assert got == ["good"] * 6  # the first one was retried on the good instance
        slots = {s.backend.instance_id: s for s in r.ctx.balancer.slots.values()}
        assert slots["dead"].ejected_until > r.ctx.loop.time()
        assert slots["good"].ejected_until == 0.0
        # POST too: nothing was sent to the dead instance, so trying another is safe.
        resp = await c.post(url, headers={"Host": "a.localhost"}, content=b"x")
        assert resp.status_code == 200


async def test_ejection_ends_after_its_time(backends: Any, router: Any) -> None:
    good = await backends("good")
    port = dead_port()
    dead = Backend(instance_id="dead", host="127.0.0.1", port=port)
    route = AppRoute(app="a", hostnames=["a.localhost"], backends=[dead, backend_of(good)])
    async with router([route], settings=None) as r, httpx.AsyncClient() as c:
        r.ctx.balancer.eject_s = 0.3
        url = f"http://127.0.0.1:{r.port}/id"
        await c.get(url, headers={"Host": "a.localhost"})
        dead_slot = next(
            s for s in r.ctx.balancer.slots.values() if s.backend.instance_id == "dead"
        )
        assert dead_slot.ejected_until > 0
        # While ejected, requests never go near it: round-robin would alternate otherwise.
        for _ in range(4):
            assert (await c.get(url, headers={"Host": "a.localhost"})).text == "good"
        await asyncio.sleep(0.8)  # (ejection is judged on the coarse sweep clock)
        # Back in rotation: the next pick tries it again (and ejects it again).
        texts = [(await c.get(url, headers={"Host": "a.localhost"})).text for _ in range(2)]
        assert texts == ["good", "good"] and dead_slot.ejected_until > r.ctx.loop.time()


async def test_all_instances_down_gives_502(router: Any) -> None:
    bs = [Backend(instance_id=f"d{i}", host="127.0.0.1", port=dead_port()) for i in range(2)]
    async with router([AppRoute(app="a", hostnames=[], backends=bs)]) as r:
        async with httpx.AsyncClient() as c:
            resp = await c.get(f"http://127.0.0.1:{r.port}/", headers={"Host": "a.localhost"})
        assert resp.status_code == 502 and "Bad gateway" in resp.text


async def test_idempotent_request_retried_when_nothing_came_back(
    backends: Any, router: Any
) -> None:
    broken, good = await backends("broken"), await backends("good")
    broken.drop = True  # takes the request, closes without a byte
    async with router([app("a", broken, good)]) as r, httpx.AsyncClient() as c:
        resp = await c.get(f"http://127.0.0.1:{r.port}/id", headers={"Host": "a.localhost"})
        assert resp.status_code == 200 and resp.text == "good"
        assert [q["method"] for q in broken.requests] == ["GET"]  # it was sent, then retried


async def test_an_idempotent_request_sent_in_parts_is_replayed_whole(
    backends: Any, router: Any
) -> None:
    """A PUT whose body went out in parts after its head (each kept to replay
    after the head) reaches the second instance whole, in order."""
    import hashlib

    broken, good = await backends("broken"), await backends("good")
    broken.drop = True

    async def parts() -> Any:
        for part in (b"one-", b"two-", b"three"):
            yield part
            await asyncio.sleep(0.05)

    async with router([app("a", broken, good)]) as r, httpx.AsyncClient() as c:
        resp = await c.put(
            f"http://127.0.0.1:{r.port}/echo", headers={"Host": "a.localhost"}, content=parts()
        )
        assert resp.status_code == 200
        echo = resp.json()
        assert echo["body_size"] == 13
        assert echo["body_sha256"] == hashlib.sha256(b"one-two-three").hexdigest()
        assert [q["method"] for q in broken.requests] == ["PUT"]


async def test_non_idempotent_request_never_retried_after_sending(
    backends: Any, router: Any
) -> None:
    broken, good = await backends("broken"), await backends("good")
    broken.drop = True
    async with router([app("a", broken, good)]) as r, httpx.AsyncClient() as c:
        resp = await c.post(
            f"http://127.0.0.1:{r.port}/echo", headers={"Host": "a.localhost"}, content=b"pay"
        )
        assert resp.status_code == 502
        assert [q["method"] for q in broken.requests] == ["POST"]
        assert good.requests == []  # the payment was not sent twice


def test_which_failed_requests_are_safe_to_retry() -> None:
    # Never sent (the connection failed): any method, body or not.
    assert safe_to_retry(False, b"POST", False, False)
    # Sent, nothing back: idempotent methods whose bytes are all still held.
    for method in (b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"):
        assert safe_to_retry(True, method, True, False)
    assert not safe_to_retry(True, b"PUT", False, False)  # its body outgrew the replay buffer
    assert not safe_to_retry(True, b"POST", True, False)
    assert not safe_to_retry(True, b"PATCH", True, False)
    # Something came back: the instance acted on it; never again.
    assert not safe_to_retry(True, b"GET", True, True)


async def test_a_retry_goes_to_the_instances_of_the_current_table(
    backends: Any, router: Any
) -> None:
    """A request that began before the route table replaced its instance (a
    redeploy) and that the instance, going away, drops unanswered is retried
    on the instance that replaced it."""
    old, new = await backends("old"), await backends("new")
    old.drop = True
    old.gate.clear()  # reads the request, then holds it until let go, then closes
    async with router([app("a", old)]) as r, httpx.AsyncClient() as c:
        sent = asyncio.create_task(
            c.get(f"http://127.0.0.1:{r.port}/id", headers={"Host": "a.localhost"})
        )
        async with asyncio.timeout(10):
            while not old.requests:
                await asyncio.sleep(0.01)
        r.set_routes([app("a", new)])
        old.gate.set()
        resp = await sent
        assert resp.status_code == 200 and resp.text == "new"
        assert [q["method"] for q in old.requests] == ["GET"]


async def test_no_retry_once_the_response_started(backends: Any, router: Any) -> None:
    one, two = await backends("one"), await backends("two")
    async with router([app("a", one, two)]) as r:
        c = await RawClient.open(r.port)
        await c.send(b"GET /half HTTP/1.1\r\nHost: a.localhost\r\n\r\n")
        got = await c.read_all()
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"partial")  # then cut
        assert len(one.requests) + len(two.requests) == 1
