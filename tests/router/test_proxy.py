"""Routing and proxying through a real router worker to real app instances."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from roost.wire.messages import AppRoute, Backend
from tests.router.conftest import RawClient, app, header


async def test_routes_by_host_round_robin_404_and_503(backends: Any, router: Any) -> None:
    one, two = await backends("one"), await backends("two")
    routes = [app("hello", one, two), AppRoute(app="idle", hostnames=[])]
    async with router(routes) as r, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{r.port}/id"
        got = [(await c.get(url, headers={"Host": "hello.localhost"})).text for _ in range(4)]
        assert got == ["one", "two", "one", "two"]
        nope = await c.get(url, headers={"Host": "nope.localhost"})
        assert nope.status_code == 404 and "No such app" in nope.text
        assert "nope.localhost" in nope.text
        idle = await c.get(url, headers={"Host": "idle.localhost"})  # default-domain fallback
        assert idle.status_code == 503 and "No instance is running" in idle.text
        assert idle.headers["retry-after"] == "5"


async def test_forwarded_headers_and_request_id(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("hello", one)]) as r, httpx.AsyncClient() as c:
        resp = await c.get(
            f"http://127.0.0.1:{r.port}/echo?q=1",
            headers={
                "Host": "hello.localhost:8080",
                "X-Forwarded-For": "6.6.6.6",  # forged: replaced
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "hop-by-hop, must not pass",
                "Keep-Alive": "timeout=5",
            },
        )
        info = resp.json()
        hs = {k: v for k, v in info["headers"]}
        assert hs["x-forwarded-for"] == "127.0.0.1"
        assert hs["x-forwarded-proto"] == "http"
        assert hs["x-forwarded-host"] == "hello.localhost:8080"
        assert hs["host"] == "hello.localhost:8080"
        assert len(hs["x-request-id"]) > 8
        assert "x-secret" not in hs and "keep-alive" not in hs and "connection" not in hs
        assert info["path"] == "/echo?q=1"
        # A client's own request id is kept (and logged).
        resp = await c.get(
            f"http://127.0.0.1:{r.port}/echo",
            headers={"Host": "hello.localhost", "X-Request-Id": "abc-123"},
        )
        assert dict(resp.json()["headers"])["x-request-id"] == "abc-123"


async def test_keep_alive_both_sides_and_pipelining(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("hello", one)]) as r:
        c = await RawClient.open(r.port)
        for _ in range(5):
            resp, body = await c.request("GET", "/id", "hello.localhost")
            assert resp.status_code == 200 and body == b"one"
        assert one.connections == 1  # the instance connection was pooled and reused
        # Three pipelined requests on one connection come back in order.
        await c.send(
            b"GET /echo?n=1 HTTP/1.1\r\nHost: hello.localhost\r\n\r\n"
            b"POST /echo?n=2 HTTP/1.1\r\nHost: hello.localhost\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /echo?n=3 HTTP/1.1\r\nHost: hello.localhost\r\n\r\n"
        )
        got = await c.raw_responses(3)
        paths = [json.loads(body)["path"] for _, body in got]
        assert paths == ["/echo?n=1", "/echo?n=2", "/echo?n=3"]
        await c.close()


async def test_instance_hop_by_hop_response_headers_are_dropped(backends: Any, router: Any) -> None:
    """A plain `Connection: keep-alive` (any case) and one naming other headers:
    none of them reach the client, the body arrives whole, the pool is reused."""
    one = await backends("one")
    async with router([app("hello", one)]) as r:
        c = await RawClient.open(r.port)
        for query in (
            "h-Connection=keep-alive",
            "h-CONNECTION=Keep-Alive",
            "h-Connection=keep-alive,%20X-Secret&h-X-Secret=hop&h-Keep-Alive=timeout%3D5",
            "h-X-Kept=yes",
        ):
            resp, body = await c.request("GET", f"/id?{query}", "hello.localhost")
            names = {k.lower() for k, _ in resp.headers}
            assert resp.status_code == 200 and body == b"one", query
            assert not names & {b"connection", b"x-secret", b"keep-alive"}, query
            assert (b"x-kept" in names) == ("X-Kept" in query)
        assert one.connections == 1
        await c.close()


async def test_head_and_http10(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("hello", one)]) as r:
        c = await RawClient.open(r.port)
        resp, body = await c.request("HEAD", "/big?n=5000", "hello.localhost")
        assert resp.status_code == 200 and body == b"" and header(resp, "content-length") == "5000"
        # The same connections still work after a HEAD (no stray body bytes).
        resp, body = await c.request("GET", "/id", "hello.localhost")
        assert body == b"one"
        await c.close()
        # HTTP/1.0: a chunked instance response arrives decoded, ended by close.
        c = await RawClient.open(r.port)
        await c.send(b"GET /stream?n=3&delay=0 HTTP/1.0\r\nHost: hello.localhost\r\n\r\n")
        raw = await c.read_all()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
        assert body == b"chunk-0;chunk-1;chunk-2;"
        await c.close()


async def test_http10_is_told_however_the_request_keeps_its_connection(
    backends: Any, router: Any
) -> None:
    """The router asks for the version only when keep-alive does not settle it:
    every way an HTTP/1.0 client can ask to keep its connection still gets a
    response it can read (no chunked coding), pipelined after HTTP/1.1 too."""
    one = await backends("one")
    stream = b"GET /stream?n=2&delay=0 HTTP/1.0\r\nHost: hello.localhost\r\n"
    async with router([app("hello", one)]) as r:
        for extra in (b"Connection: keep-alive\r\n", b"Proxy-Connection: keep-alive\r\n"):
            c = await RawClient.open(r.port)
            await c.send(stream + extra + b"\r\n")
            raw = await c.read_all()
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower(), extra
            assert body == b"chunk-0;chunk-1;", extra
            await c.close()
        c = await RawClient.open(r.port)
        await c.send(
            b"GET /stream?n=2&delay=0 HTTP/1.1\r\nHost: hello.localhost\r\n\r\n" + stream + b"\r\n"
        )
        raw = await c.read_all()
        first, _, second = raw.partition(b"chunk-1;\r\n0\r\n\r\n")
        assert b"transfer-encoding: chunked" in first.lower()  # 1.1: chunked as it came
        head, _, body = second.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
        assert body == b"chunk-0;chunk-1;"
        await c.close()


async def test_unix_socket_backend(backends: Any, router: Any, tmp_path: Path) -> None:
    sock = tmp_path / "web.sock"
    local = await backends("local", unix_path=sock)
    async with router([app("u", local)]) as r, httpx.AsyncClient() as c:
        resp = await c.get(f"http://127.0.0.1:{r.port}/id", headers={"Host": "u.localhost"})
        assert resp.status_code == 200 and resp.text == "local"


async def test_route_swap_keeps_in_flight_requests(backends: Any, router: Any) -> None:
    one, two = await backends("one"), await backends("two")
    async with router([app("hello", one)]) as r, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{r.port}"
        slow = asyncio.create_task(
            c.get(f"{url}/slow?delay=0.5", headers={"Host": "hello.localhost"})
        )
        await asyncio.sleep(0.2)
        r.set_routes([app("hello", two)])  # instance one leaves the table mid-request
        assert (await c.get(f"{url}/id", headers={"Host": "hello.localhost"})).text == "two"
        resp = await slow
        assert resp.status_code == 200 and resp.json()["instance"] == "one"


async def test_access_log_line_per_request(backends: Any, router: Any, tmp_path: Path) -> None:
    one = await backends("one")
    async with router([app("hello", one)], access_log=True) as r, httpx.AsyncClient() as c:
        for agent in ("ok", 'evil" agent'):
            await c.get(
                f"http://127.0.0.1:{r.port}/id",
                headers={"Host": "hello.localhost", "User-Agent": agent},
            )
        await c.get(f"http://127.0.0.1:{r.port}/", headers={"Host": "zzz.localhost"})
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert len(lines) == 3
    assert '"GET /id HTTP/1.1" 200 3' in lines[0] and "app=hello" in lines[0]
    assert "inst=one" in lines[0] and "rid=" in lines[0]
    assert '"evil\\" agent"' in lines[1]  # a client cannot break the line format
    assert '"GET / HTTP/1.1" 404' in lines[2] and "app=-" in lines[2]


async def test_unix_socket_missing_falls_back_to_tcp(
    backends: Any, router: Any, tmp_path: Path
) -> None:
    tcp = await backends("tcp")
    b = Backend(
        instance_id="i", host="127.0.0.1", port=tcp.port, unix_socket=str(tmp_path / "gone.sock")
    )
    async with router([AppRoute(app="f", hostnames=[], backends=[b])]) as r:
        async with httpx.AsyncClient() as c:
            resp = await c.get(f"http://127.0.0.1:{r.port}/id", headers={"Host": "f.localhost"})
        assert resp.text == "tcp"
