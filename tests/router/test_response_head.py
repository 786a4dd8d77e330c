"""The pass-through path's reading of an instance's response head (upstream.py's
one-pass scan for Connection and Keep-Alive lines), through a real router."""

from __future__ import annotations

from typing import Any

from tests.router.conftest import RawClient, app


async def test_every_connection_header_and_what_it_names_is_dropped(
    backends: Any, router: Any
) -> None:
    """Two Connection headers, the first a plain keep-alive: the second and the
    header it names go too (cutting the first line alone would let them through)."""
    one = await backends("one")
    async with router([app("hello", one)]) as r:
        c = await RawClient.open(r.port)
        for query in (
            "h-Connection=keep-alive&h-connection=X-Secret&h-X-Secret=hop",
            "h-connection=close&h-CONNECTION=keep-alive",
            "h-CoNNection=Keep-Alive&h-X-Kept=yes",
            "h-X-Connection=kept&h-Connectionx=kept&h-Keep-Alivex=kept",
        ):
            resp, body = await c.request("GET", f"/id?{query}", "hello.localhost")
            names = {k.lower() for k, _ in resp.headers}
            assert resp.status_code == 200 and body == b"one", query
            assert not names & {b"connection", b"x-secret", b"keep-alive"}, query
            if "X-Kept" in query:
                assert b"x-kept" in names
            if "X-Connection" in query:
                assert {b"x-connection", b"connectionx", b"keep-alivex"} <= names
        await c.close()
