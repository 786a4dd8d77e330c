"""Static files from a release's bundle: gzip, validators, ranges, expiry."""

from __future__ import annotations

import asyncio
import gzip
import os
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from roost.router.static import Plan, parse_range, plan, safe_segments
from roost.wire.messages import AppRoute, StaticRoute
from tests.router.conftest import RawClient, backend_of

CSS = b"body { color: #333; }\n" * 200
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "app/static/css").mkdir(parents=True)
    (root / "app/static/docs").mkdir(parents=True)
    (root / "app/static/list/sub").mkdir(parents=True)
    (root / "app/static/css/site.css").write_bytes(CSS)
    (root / "app/static/css/site.css.gz").write_bytes(gzip.compress(CSS, mtime=0))
    (root / "app/static/big.bin").write_bytes(os.urandom(1_500_000))
    (root / "app/static/docs/index.html").write_bytes(b"<h1>docs</h1>")
    (root / "app/static/list/a.txt").write_bytes(b"a")
    (root / "app/robots.txt").write_bytes(b"User-agent: *\n")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    return root


def static_app(backend: Any, **kw: Any) -> AppRoute:
    return AppRoute(
        app="s",
        hostnames=["s.localhost"],
        backends=[backend_of(backend)],
        static=[
            StaticRoute(url_prefix="/static/", path="app/static"),
            StaticRoute(url_prefix="/listed/", path="app/static/list", directory_indexes=True),
            StaticRoute(url_prefix="/robots.txt", path="app/robots.txt", is_file=True),
        ],
        static_bundle=DIGEST,
        **kw,
    )


def test_plan_validators_ranges_and_gzip() -> None:
    gz = ("/f.css.gz", 100)
    p = plan("/f.css", 1000, 5_000_000_000, {}, gz=gz, expires=None)
    assert p.status == 200 and p.length == 1000 and dict(p.headers)[b"Vary"] == b"Accept-Encoding"
    etag = dict(p.headers)[b"ETag"]
    zipped = plan(
        "/f.css", 1000, 5_000_000_000, {b"accept-encoding": b"br, gzip"}, gz=gz, expires=60
    )
    assert zipped.path == "/f.css.gz" and dict(zipped.headers)[b"Content-Encoding"] == b"gzip"
    assert dict(zipped.headers)[b"Cache-Control"] == b"max-age=60"
    assert dict(zipped.headers)[b"ETag"] != etag  # another representation, another tag
    refused = plan(
        "/f.css", 1000, 5_000_000_000, {b"accept-encoding": b"gzip;q=0"}, gz=gz, expires=None
    )
    assert refused.path == "/f.css"
    assert (
        plan("/f.css", 1000, 5_000_000_000, {b"if-none-match": etag}, gz=gz, expires=None).status
        == 304
    )
    assert (
        plan(
            "/f.css",
            1000,
            5_000_000_000,
            {b"if-none-match": b'W/"x", ' + etag},
            gz=None,
            expires=None,
        ).status
        == 304
    )
    lm = dict(p.headers)[b"Last-Modified"]
    assert (
        plan(
            "/f.css", 1000, 5_000_000_000, {b"if-modified-since": lm}, gz=None, expires=None
        ).status
        == 304
    )
    r = plan("/f.css", 1000, 5_000_000_000, {b"range": b"bytes=10-19"}, gz=gz, expires=None)
    assert (r.status, r.offset, r.length) == (206, 10, 10)
    assert dict(r.headers)[b"Content-Range"] == b"bytes 10-19/1000"
    stale = plan(
        "/f.css",
        1000,
        5_000_000_000,
        {b"range": b"bytes=10-19", b"if-range": b'"old"'},
        gz=None,
        expires=None,
    )
    assert stale.status == 200 and stale.length == 1000
    assert plan("/f.css", 1000, 1, {b"range": b"bytes=5000-"}, gz=None, expires=None).status == 416


def test_parse_range_forms() -> None:
    assert parse_range(b"bytes=0-0", 10) == (0, 0)
    assert parse_range(b"bytes=5-", 10) == (5, 9)
    assert parse_range(b"bytes=-3", 10) == (7, 9)
    assert parse_range(b"bytes=-30", 10) == (0, 9)
    assert parse_range(b"bytes=3-100", 10) == (3, 9)
    assert parse_range(b"bytes=0-1,5-6", 10) is None  # several ranges: serve it all
    assert parse_range(b"items=0-1", 10) is None
    assert parse_range(b"bytes=20-30", 10) is False


def test_safe_segments_refuse_escapes() -> None:
    assert safe_segments(b"css/site.css") == ["css", "site.css"]
    assert safe_segments(b"./a//b") == ["a", "b"]
    assert safe_segments(b"../secret.txt") is None
    assert safe_segments(b"%2e%2e/secret.txt") is None
    assert safe_segments(b"a%00b") is None
    assert safe_segments(b"a\\..\\b") is None


async def test_static_files_served_from_the_bundle(
    backends: Any, router: Any, bundle: Path
) -> None:
    one = await backends("one")

    async def ensure(digest: str) -> Path:
        assert digest == DIGEST
        return bundle

    route = static_app(one, expires={"/static/css/": 3600})
    async with router([route], ensure_bundle=ensure) as r, httpx.AsyncClient() as c:
        base = f"http://127.0.0.1:{r.port}"
        h = {"Host": "s.localhost"}
        for _ in range(100):  # fetched in the background, never on the request path
            if r.ctx.bundles:
                break
            await asyncio.sleep(0.02)
        plain = await c.get(
            f"{base}/static/css/site.css", headers={**h, "Accept-Encoding": "identity"}
        )
        assert plain.status_code == 200 and plain.content == CSS
        assert plain.headers["content-type"].startswith("text/css")
        assert plain.headers["cache-control"] == "max-age=3600" and "expires" in plain.headers
        zipped = await c.get(
            f"{base}/static/css/site.css", headers={**h, "Accept-Encoding": "gzip"}
        )
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == CSS
        assert int(zipped.headers["content-length"]) < len(CSS)
        again = await c.get(
            f"{base}/static/css/site.css",
            headers={**h, "If-None-Match": zipped.headers["etag"], "Accept-Encoding": "gzip"},
        )
        assert again.status_code == 304 and again.content == b""
        part = await c.get(f"{base}/static/css/site.css", headers={**h, "Range": "bytes=5-9"})
        assert part.status_code == 206 and part.content == CSS[5:10]
        head = await c.head(
            f"{base}/static/css/site.css", headers={**h, "Accept-Encoding": "identity"}
        )
        assert head.status_code == 200 and head.headers["content-length"] == str(len(CSS))
        big = await c.get(f"{base}/static/big.bin", headers=h)
        assert big.content == (bundle / "app/static/big.bin").read_bytes()
        tail = await c.get(f"{base}/static/big.bin", headers={**h, "Range": "bytes=-400000"})
        assert tail.status_code == 206
        assert tail.content == (bundle / "app/static/big.bin").read_bytes()[-400000:]
        assert (await c.get(f"{base}/robots.txt", headers=h)).content == b"User-agent: *\n"
        docs = await c.get(f"{base}/static/docs", headers=h)
        assert docs.status_code == 301 and docs.headers["location"] == "/static/docs/"
        assert (await c.get(f"{base}/static/docs/", headers=h)).content == b"<h1>docs</h1>"
        listing = await c.get(f"{base}/listed/", headers=h)
        assert listing.status_code == 200 and 'href="a.txt"' in listing.text
        assert 'href="sub/"' in listing.text
        assert (await c.get(f"{base}/static/list/", headers=h)).status_code == 404  # no index
        for evil in (b"/static/../../secret.txt", b"/static/%2e%2e/%2e%2e/secret.txt"):
            raw = await RawClient.open(r.port)  # sent as is: no client-side normalizing
            await raw.send(b"GET %s HTTP/1.1\r\nHost: s.localhost\r\n\r\n" % evil)
            status, body = (await raw.raw_responses(1))[0]
            assert status == 404 and b"secret" not in body
            await raw.close()
        assert (await c.get(f"{base}/static/missing.css", headers=h)).status_code == 404
        assert (await c.post(f"{base}/static/css/site.css", headers=h)).status_code == 405
        # Everything else still goes to the app, and no static request reached it.
        assert (await c.get(f"{base}/id", headers=h)).text == "one"
        assert [q["path"] for q in one.requests] == ["/id"]


async def test_static_prefix_goes_to_the_app_until_the_bundle_is_here(
    backends: Any, router: Any, bundle: Path
) -> None:
    one = await backends("one")
    release = asyncio.Event()

    async def slow_ensure(digest: str) -> Path:
        await release.wait()
        return bundle

    async with router([static_app(one)], ensure_bundle=slow_ensure) as r, httpx.AsyncClient() as c:
        h = {"Host": "s.localhost"}
        early = await c.get(f"http://127.0.0.1:{r.port}/static/css/site.css", headers=h)
        assert early.status_code == 200 and early.json()["instance"] == "one"
        release.set()
        for _ in range(100):
            if r.ctx.bundles:
                break
            await asyncio.sleep(0.02)
        late = await c.get(f"http://127.0.0.1:{r.port}/static/css/site.css", headers=h)
        assert late.content == CSS


async def test_failed_bundle_fetch_is_retried(backends: Any, router: Any, bundle: Path) -> None:
    one = await backends("one")
    calls = 0

    async def flaky(digest: str) -> Path:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("image store unreachable")
        return bundle

    async with router([static_app(one)], ensure_bundle=flaky) as r:
        for _ in range(200):
            if r.ctx.bundles:
                break
            await asyncio.sleep(0.05)
        assert r.ctx.bundles == {DIGEST: bundle} and calls == 2
    assert isinstance(plan("/x", 0, 0, {}, gz=None, expires=None), Plan)


async def test_bundle_fetched_from_a_real_image_store(
    backends: Any, router: Any, bundle: Path, tmp_path: Path
) -> None:
    """The router's fetch path end to end: ImageChunkRequest over CURVE, verify, unpack."""
    import io
    import tarfile

    from roost.images.serve import handle_image_request
    from roost.images.store import ImageStore
    from roost.router.bundles import image_cache_ensure
    from roost.wire.cluster import Endpoint
    from roost.wire.keys import generate_keypair
    from roost.wire.messages import Error, ImageChunkRequest, Msg
    from roost.wire.node import Node
    from roost.wire.rpc import RpcClient, RpcServer

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(bundle / "app", arcname="app")
    store = ImageStore(tmp_path / "store")
    digest = store.put_bytes(buf.getvalue())

    async def serve(msg: Msg) -> Msg:
        if isinstance(msg, ImageChunkRequest):
            return handle_image_request(store, msg)
        return Error(message="unexpected")

    skey, rkey = generate_keypair(), generate_keypair()
    one = await backends("one")
    async with Node(skey, [rkey.public]) as snode, Node(rkey, []) as rnode:
        server = RpcServer(snode, "tcp://127.0.0.1:*", serve)
        task = asyncio.create_task(server.serve())
        client = RpcClient(rnode, [Endpoint(server.address, skey.public_text)])
        ensure, release = image_cache_ensure(tmp_path / "cache", 1 << 30, client)
        route = msgspec.structs.replace(static_app(one), static_bundle=digest)
        try:
            async with router([route], ensure_bundle=ensure) as r, httpx.AsyncClient() as c:
                for _ in range(200):
                    if r.ctx.bundles:
                        break
                    await asyncio.sleep(0.05)
                resp = await c.get(
                    f"http://127.0.0.1:{r.port}/static/css/site.css",
                    headers={"Host": "s.localhost", "Accept-Encoding": "gzip"},
                )
                assert resp.content == CSS and resp.headers["content-encoding"] == "gzip"
                assert one.requests == []
        finally:
            await client.close()
            task.cancel()
    release(digest)
