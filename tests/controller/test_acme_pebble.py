"""The ACME client and the router's HTTP-01 answers against a real Pebble.

In process: a RouterWorker on the port Pebble validates on, answers put in
its routes as the controller publishes them; the platform's whole path
(store, lease holder, route table) is tests/e2e/test_acme_pebble.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from roost.controller.acme_client import AcmeFailure, AcmeSession, new_key_pem
from roost.controller.tls import check_certificate
from roost.router.worker import RouterWorker
from roost.settings import Settings
from roost.wire.messages import AppRoute
from tests.conftest import free_port
from tests.pebble import Pebble, running_pebble

PORT = free_port()


@pytest.fixture(scope="module")
def pebble() -> Iterator[Pebble]:
    with running_pebble(PORT) as p:
        yield p


def route(host: str, answers: dict[str, str] | None = None) -> AppRoute:
    return AppRoute(app="shop", hostnames=[host], acme_challenges=answers or {})


async def order(p: Pebble, worker: RouterWorker, host: str, publish: bool = True) -> str:
    """One order for `host`, its answers published in the router's table."""
    session = await asyncio.to_thread(
        AcmeSession, p.directory, new_key_pem(), "ops@example.com", str(p.ca_bundle)
    )
    try:
        pending = await asyncio.to_thread(session.begin, host)
        assert pending.answers, "Pebble asks for a fresh proof (PEBBLE_AUTHZREUSE=0)"
        if publish:
            worker.set_routes([route(host, pending.answers)])
        chain = await asyncio.to_thread(session.finish, pending)
    finally:
        await asyncio.to_thread(session.close)
    check_certificate(chain, pending.key_pem, host)
    return chain


async def test_issued_through_the_routers_answer(pebble: Pebble, tmp_path: Path) -> None:
    async with RouterWorker(
        Settings(), host="127.0.0.1", port=PORT, routes=[route("shop.test")], state_dir=tmp_path
    ) as w:
        chain = await order(pebble, w, "shop.test")
        assert chain.count("BEGIN CERTIFICATE") >= 2  # leaf and intermediate
        # The answer is the router's, before the app (which has no instance:
        # anything else is a 503); another token goes to the app as usual.
        w.set_routes([route("shop.test", {"tok": "tok.thumb"})])
        async with httpx.AsyncClient() as c:
            base = f"http://127.0.0.1:{PORT}/.well-known/acme-challenge"
            r = await c.get(f"{base}/tok", headers={"Host": "shop.test"})
            assert (r.status_code, r.text) == (200, "tok.thumb")
            r = await c.get(f"{base}/other", headers={"Host": "shop.test"})
            assert r.status_code == 503
            r = await c.post(f"{base}/tok", headers={"Host": "shop.test"})
            assert r.status_code == 503


@pytest.mark.parametrize(
    ("host", "dns", "reason"),
    [
        ("refused.test", "127.0.0.2", "refused"),  # nothing listens there
        ("nodns.test", "servfail", "dns"),
        ("unanswered.test", "", "unauthorized"),  # the router answers, but not the token
    ],
)
async def test_failures_say_why(
    pebble: Pebble, tmp_path: Path, host: str, dns: str, reason: str
) -> None:
    if dns == "servfail":
        pebble.set_servfail(host)
    elif dns:
        pebble.set_a(host, dns)
    async with RouterWorker(
        Settings(), host="127.0.0.1", port=PORT, routes=[route(host)], state_dir=tmp_path
    ) as w:
        with pytest.raises(AcmeFailure) as failure:
            await order(pebble, w, host, publish=reason != "unauthorized")
    assert failure.value.reason == reason, failure.value.detail
    assert failure.value.detail


async def test_a_domain_that_never_answers_is_a_timeout(pebble: Pebble, tmp_path: Path) -> None:
    # Its DNS points at a listener that takes the connection and says nothing.
    silent = socket.create_server(("127.0.0.3", PORT))
    accepted: list[socket.socket] = []

    async def hold() -> None:
        loop = asyncio.get_running_loop()
        silent.setblocking(False)
        while True:
            conn, _ = await loop.sock_accept(silent)
            accepted.append(conn)

    pebble.set_a("silent.test", "127.0.0.3")
    holder = asyncio.create_task(hold())
    try:
        async with RouterWorker(
            Settings(), host="127.0.0.1", port=PORT, routes=[route("x.test")], state_dir=tmp_path
        ) as w:
            with pytest.raises(AcmeFailure) as failure:
                await order(pebble, w, "silent.test", publish=False)
    finally:
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
        for conn in accepted:
            conn.close()
        silent.close()
    assert failure.value.reason == "timeout", failure.value.detail
    assert accepted, "the CA connected, then gave up waiting"
