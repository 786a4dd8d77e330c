"""Per-app features: basic auth, the suspended page, gzip, expiry, domains."""

from __future__ import annotations

import base64
import gzip
from typing import Any

import httpx

from tests.router.conftest import RawClient, app, header


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_basic_auth(backends: Any, router: Any) -> None:
    one = await backends("one")
    route = app(
        "priv", one, basic_auth={"alice": "s3cret", "bob": "pässword"}, basic_auth_realm="Staff"
    )
    async with router([route], access_log=True) as r, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{r.port}/id"
        h = {"Host": "priv.localhost"}
        denied = await c.get(url, headers=h)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"] == 'Basic realm="Staff", charset="UTF-8"'
        assert (await c.get(url, headers={**h, **basic("alice", "wrong")})).status_code == 401
        assert (await c.get(url, headers={**h, **basic("mallory", "s3cret")})).status_code == 401
        assert (
            await c.get(url, headers={**h, "Authorization": "Bearer s3cret"})
        ).status_code == 401
        ok = await c.get(url, headers={**h, **basic("alice", "s3cret")})
        assert ok.status_code == 200 and ok.text == "one"
        assert (await c.get(url, headers={**h, **basic("bob", "pässword")})).status_code == 200
        assert len(one.requests) == 2  # refused requests never reached the app
        # A refused request with a body does not leave the connection confused.
        raw = await RawClient.open(r.port)
        await raw.send(
            b"POST /echo HTTP/1.1\r\nHost: priv.localhost\r\nContent-Length: 5\r\n\r\nhello"
        )
        status, _ = (await raw.raw_responses(1))[0]
        assert status == 401
        await raw.close()


async def test_suspended_app_gets_the_maintenance_page(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("down", one, suspended=True)]) as r, httpx.AsyncClient() as c:
        resp = await c.get(f"http://127.0.0.1:{r.port}/", headers={"Host": "down.localhost"})
        assert resp.status_code == 503
        assert "suspended" in resp.text and "maintenance" in resp.text
        assert resp.headers["retry-after"] == "300"
        assert one.requests == []
        r.set_routes([app("down", one)])  # resumed: traffic flows again, no restart
        resp = await c.get(f"http://127.0.0.1:{r.port}/id", headers={"Host": "down.localhost"})
        assert resp.text == "one"


async def test_http_gzip_compresses_app_responses(backends: Any, router: Any) -> None:
    one = await backends("one")
    async with router([app("z", one, gzip=True), app("plain", one)]) as r:
        c = await RawClient.open(r.port)
        resp, body = await c.request("GET", "/text", "z.localhost", [("Accept-Encoding", "gzip")])
        assert header(resp, "content-encoding") == "gzip"
        assert header(resp, "vary") == "Accept-Encoding"
        assert header(resp, "content-length") is None
        assert gzip.decompress(body) == b"hello roost " * 2000 and len(body) < 2000
        # Not for clients that do not ask, binary types, or apps without [http] gzip.
        resp, body = await c.request("GET", "/text", "z.localhost")
        assert header(resp, "content-encoding") is None and body.startswith(b"hello roost")
        resp, _ = await c.request(
            "GET", "/big?n=5000", "z.localhost", [("Accept-Encoding", "gzip")]
        )
        assert header(resp, "content-encoding") is None
        resp, _ = await c.request("GET", "/text", "plain.localhost", [("Accept-Encoding", "gzip")])
        assert header(resp, "content-encoding") is None
        await c.close()


async def test_expires_for_prefixes(backends: Any, router: Any) -> None:
    one = await backends("one")
    route = app("e", one, expires={"/media/": 600, "/media/live/": 0})
    async with router([route]) as r, httpx.AsyncClient() as c:
        h = {"Host": "e.localhost"}
        base = f"http://127.0.0.1:{r.port}"
        resp = await c.get(f"{base}/media/logo.png", headers=h)
        assert resp.headers["cache-control"] == "max-age=600" and "expires" in resp.headers
        assert (await c.get(f"{base}/media/live/x", headers=h)).headers["cache-control"] == (
            "max-age=0"
        )
        assert "cache-control" not in (await c.get(f"{base}/other", headers=h)).headers
        # The app's own caching headers win.
        own = await c.get(f"{base}/media/x?h-Cache-Control=no-cache", headers=h)
        assert own.headers["cache-control"] == "no-cache"


async def test_custom_and_wildcard_domains(backends: Any, router: Any) -> None:
    one, two = await backends("one"), await backends("two")
    routes = [
        app("blog", one, hostnames=["blog.localhost", "www.example.org"]),
        app("shop", two, hostnames=["shop.localhost", "*.shop.example"]),
    ]
    async with router(routes) as r, httpx.AsyncClient() as c:
        url = f"http://127.0.0.1:{r.port}/id"
        assert (await c.get(url, headers={"Host": "www.example.org"})).text == "one"
        assert (await c.get(url, headers={"Host": "EU.Shop.Example:80"})).text == "two"
        assert (await c.get(url, headers={"Host": "example.org"})).status_code == 404
